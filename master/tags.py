"""The upstream's release tags, as the master sees them (``git ls-remote``; blocking).

One place for "which tags are releases": the tag poller's filter, the force
form's expansion, the release build's version -> tag lookup and the
re-check all ask this object.  Parsing is ``vllm_cpu_build.specs``.
"""

from __future__ import annotations

import subprocess

from farm.settings import Upstream
from vllm_cpu_build import specs


class UpstreamTags:
    def __init__(self, upstream: Upstream) -> None:
        self.url = upstream.url
        self.pattern = upstream.tag_pattern
        self.prereleases = upstream.build_prereleases

    def list(self, prereleases: bool | None = None) -> dict[str, str]:
        """version -> tag of the upstream's release tags, oldest first.

        Pre-releases are listed when ``prereleases`` (default: the settings'
        ``build_prereleases``) says so.  Blocking: call from a thread.
        """
        out = subprocess.run(["git", "ls-remote", "--tags", "--refs", self.url],
                             capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"git ls-remote {self.url}: {out.stderr.strip()[:300]}")
        refs = [line.split("\t", 1)[1] for line in out.stdout.splitlines() if "\t" in line]
        return specs.release_tags(refs, self.pattern, self.prereleases if prereleases is None else prereleases)

    def forceable(self) -> dict[str, str]:
        """What a maintainer may force: every release tag, pre-releases included (they must be named)."""
        return self.list(prereleases=True)

    def tag_for(self, version: str) -> str | None:
        """The upstream tag of ``version`` (pre-releases included), None when there is none. Blocking."""
        return self.forceable().get(str(version))

    def version_of(self, tag: str) -> str | None:
        """The version a tag starts by itself (poller, hook): None for non-release tags and, unless
        ``build_prereleases``, pre-releases."""
        return specs.release_version(tag, self.pattern, self.prereleases)
