
from pathlib import Path as _Path

# The worker-side FetchContent mirror of the fixture upstream (<name>/<GIT_TAG>): its
# AVX-512 builds need isahelper v1.0 from here (`build --fetch-mirror`, [build] fetchcontent_mirror).
MIRROR = _Path(__file__).resolve().parent / "mirror"
