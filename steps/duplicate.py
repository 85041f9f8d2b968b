"""``SkipDuplicateRelease``: do nothing when an older request for the same release has not fanned out yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.process import buildstep

from farm.decisions import duplicate_of
from farm.states import Result
from steps.attached import Attached
from steps.collect import release_requests
from steps.fan_out import FanOut


class SkipDuplicateRelease(Attached, buildstep.BuildStep):
    """Do nothing when an older request for the same release has not fanned out yet.

    The poller (or change hook) and the periodic re-check can both start a
    release of one tag within a second, e.g. at a master restart.  Until the
    older one triggers its variant builds, the newer one's ``already_published``
    step cannot see them and would build every wheel a second time.  Once the
    older one has fanned out, a newer request goes on: ``already_published``
    drops what is queued, and rebuilds what failed (``farm.decisions.duplicate_of``).
    """

    name = "duplicate_check"

    def __init__(self, tag_version: Callable[[str], str | None], same_release: list[str], release_builder: str,
                 **kwargs: Any) -> None:
        self.tag_version = tag_version  # tag or refs/tags/... -> version (None: not a release)
        self.same_release = list(same_release)  # properties that must match (None/absent = the default)
        self.release_builder = release_builder
        super().__init__(**kwargs)

    async def run(self) -> int:
        version = str(self.getProperty("version"))
        older = await release_requests(self.master, self.release_builder, FanOut.name,
                                       older_than=self.build.requests[0].id)
        mine = {k: self.getProperty(k) for k in self.same_release}
        dup = duplicate_of(version, mine, older, self.same_release, self.tag_version)
        if dup is None:
            self.descriptionDone = "no older request for this release"
            return Result.SUCCESS
        self.setProperty("duplicate_of", dup, self.name)
        self.descriptionDone = f"{version}: duplicate of build request {dup}, nothing to do"
        return Result.SUCCESS
