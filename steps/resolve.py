"""``ResolveRelease``: the release a ``release`` build is for, and its tag as the upstream has it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.process import buildstep
from twisted.internet import threads

from farm.decisions import Refused, wanted_release
from farm.states import Result
from steps.summary import BuildSummary


class ResolveRelease(BuildSummary, buildstep.BuildStep):
    """Work out the release this build is for, and its tag as the upstream has it.

    The version comes from a forced ``versions`` (force form), a triggered
    ``version`` (re-check) or the tag a change announced (``branch``: poller,
    signed webhook), in that order (``farm.decisions.wanted_release``);
    ``farm/inputs.py`` guarantees each came from where it should.  The tag
    checked out is always the upstream's own tag for that version
    (``git ls-remote``), never a ref a request named.
    """

    name = "release"

    def __init__(self, tag_version: Callable[[str], str | None], tag_for: Callable[[str], str | None],
                 **kwargs: Any) -> None:
        self.tag_version = tag_version  # tag or refs/tags/... -> version string (None: not a release)
        self.tag_for = tag_for  # version -> upstream tag (None: no such tag); blocking
        super().__init__(**kwargs)

    async def _fail(self, text: str, why: str) -> int:
        self.descriptionDone = text
        await self.addCompleteLog("why", why + "\n")
        return Result.FAILURE

    async def run(self) -> int:
        wanted = wanted_release(self.getProperty("versions"), self.getProperty("version"),
                                str(self.getProperty("branch") or ""), self.tag_version)
        if isinstance(wanted, Refused):
            return await self._fail(wanted.text, wanted.why)
        version = wanted.version
        try:
            tag = await threads.deferToThread(self.tag_for, version)
        except Exception as exc:
            return await self._fail(f"cannot list upstream tags: {exc}"[:200], f"{type(exc).__name__}: {exc}")
        if not tag:
            return await self._fail(f"{version} ({wanted.origin}): no such release tag upstream",
                                    f"The upstream has no release tag for {version}.")
        self.setProperty("tag", tag, "release")
        self.setProperty("version", version, "release")
        self.descriptionDone = ", ".join([f"vLLM {version} ({tag})", *self._mode()])
        return Result.SUCCESS

    def _mode(self) -> list[str]:
        """The postfix and what is not published, for this step; "DRY RUN"/"no upload" also on the build."""
        bits = [f"postfix {self.getProperty('postfix')}"] if self.getProperty("postfix") else []
        if self.getProperty("dry_run"):
            bits.append("DRY RUN")
            self.build_summary = "DRY RUN"  # on the build itself: nothing of it is published
        elif self.getProperty("skip_upload"):
            bits.append("no upload")
            self.build_summary = "no upload"
        return bits
