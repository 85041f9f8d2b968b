"""The package index client: what a project's simple page lists, and downloads.

Shared by ``upload`` (never upload a file twice), the master (what is
already published) and the test helpers that fetch real sdists.  The simple
API (PEP 503 HTML and PEP 691 JSON, so PyPI and pypiserver both work) is read
with ``pypi-simple``; every request goes through one ``requests`` session
that retries transient failures (connection errors, 429/5xx) with backoff,
so a busy index or a restarting pypiserver is not a failed release.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version
from pypi_simple import NoSuchProjectError, PyPISimple
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from vllm_cpu_build.files import sha256_of as sha256_of  # the index names files by it

TIMEOUT = 60  # seconds per request: a cold index on a busy machine is slow, not down
RETRIES = 5  # 0.5 s, 1 s, 2 s, 4 s, 8 s


class IndexUnusable(RuntimeError):
    """The index does not answer, or answers something unusable (after retries)."""


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None = None
    size: int | None = None
    yanked: bool = False


def session(retries: int = RETRIES) -> requests.Session:
    """A requests session retrying idempotent requests on connection errors and 429/5xx."""
    s = requests.Session()
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET", "HEAD"}),
                  raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def list_index_files(simple_url: str, project: str, timeout: float = TIMEOUT,
                     http: requests.Session | None = None) -> list[IndexFile]:
    """Files the index lists for ``project``; [] when the project does not exist yet.

    Raises ``requests.RequestException`` when the index cannot be read after retries.
    """
    own = http is None
    http = http or session()
    try:
        page = PyPISimple(endpoint=simple_url.rstrip("/") + "/", session=http).get_project_page(
            canonicalize_name(project), timeout=timeout)
    except NoSuchProjectError:
        return []
    finally:
        if own:
            http.close()
    return [IndexFile(p.filename, p.url, p.digests.get("sha256"), p.size, p.is_yanked) for p in page.packages]


def wheel_covers(filename: str, version: str, arch: str, python: str | None = None,
                 include_posts: bool = True) -> bool:
    """Whether the wheel ``filename`` already provides (version, arch, python).

    ``include_posts``: a ``.postN`` of the version counts (a re-release of the
    same upstream code).  ``python`` None = any; an abi3 wheel for cp3X
    covers every later CPython.
    """
    try:
        _, wv, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    want = Version(version)
    same = wv == want or (
        include_posts and wv.is_postrelease and wv.release == want.release
        and wv.pre == want.pre and wv.dev is None and want.post is None
    )
    if not same:
        return False
    want_py = int(python.split(".")[1]) if python else None
    for t in tags:
        if not (t.platform == arch or t.platform.endswith("_" + arch)):
            continue
        if want_py is None:
            return True
        if not t.interpreter.startswith("cp3"):
            continue
        minor = int(t.interpreter[3:]) if t.interpreter[3:].isdigit() else -1
        if (t.abi == "abi3" and minor <= want_py) or minor == want_py:
            return True
    return False


def download(file: IndexFile, dest: Path, http: requests.Session | None = None,
             timeout: float = TIMEOUT) -> Path:
    """Download ``file`` to ``dest`` atomically, checked against the index's sha256 (required)."""
    if not file.sha256:
        raise IndexUnusable(f"{file.filename}: the index gives no sha256; refusing an unchecked download")
    dest.parent.mkdir(parents=True, exist_ok=True)
    own = http is None
    http = http or session()
    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, http.get(file.url, stream=True, timeout=timeout) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                out.write(chunk)
        got = sha256_of(Path(part))
        if got != file.sha256:
            raise IndexUnusable(f"{file.filename}: sha256 {got} != index {file.sha256}")
        os.replace(part, dest)
    finally:
        if own:
            http.close()
        if os.path.exists(part):
            os.unlink(part)
    return dest
