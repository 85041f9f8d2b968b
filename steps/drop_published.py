"""``DropPublished``: remove from the plan what the index already has or a queued build will make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.process import buildstep
from twisted.internet import threads

from farm.custody import FOREIGN_PROPERTY, Foreign, Ledger, describe
from farm.decisions import choose, queued_duplicate
from farm.published import Build, of_version
from farm.states import Result
from steps import custody
from steps.attached import Attached
from steps.collect import open_requests

# (builds, version, include_posts, custody ledger, foreign files seen (appended to))
#   -> (what still has to be built, notes on what is published); blocking
IndexCheck = Callable[[list[Build], str, bool, Ledger, list[Foreign]], tuple[list[Build], list[str]]]


class DropPublished(Attached, buildstep.BuildStep):
    """Remove from the plan what the index already has or a queued build will make; sets ``todo``.

    ``only_builds`` (a rebuild: the failed builds) keeps only those
    variant × arch builds; ``skip_builds`` (the re-check: builds that failed
    too often) drops those (``farm.decisions.choose``).  A dry run builds
    everything chosen, whatever the index has.  Only this farm's files on
    the index count (``farm.custody``): foreign files of the version are
    built over, listed in the ``foreign`` property and log, and the step
    ends WARNINGS so the release (and its mail) says so.
    """

    name = "already_published"

    def __init__(self, check: IndexCheck, builder_for: Callable[[str, str], str] | None = None,
                 **kwargs: Any) -> None:
        self.check = check
        self.builder_for = builder_for  # (variant, arch) -> builder name, to find queued duplicates
        super().__init__(**kwargs)

    def _chosen(self, builds: list[Build]) -> tuple[list[Build], list[str]]:
        only = self.getProperty("only_builds") if self.hasProperty("only_builds") else None
        return choose(builds, only, set(self.getProperty("skip_builds") or []))

    async def run(self) -> int:
        builds = list((self.getProperty("plan") or {}).get("builds", []))
        version = str(self.getProperty("version"))
        postfix = str(self.getProperty("postfix") or "")
        dry_run = bool(self.getProperty("dry_run"))
        chosen, notes = self._chosen(builds)
        todo = chosen
        foreign: list[Foreign] = []
        if dry_run:
            notes.append("dry run: the index is not consulted, everything chosen is built")
        elif todo:
            try:
                todo, found = await threads.deferToThread(self.check, todo, version + postfix, not postfix,
                                                          custody.blocking(self.master), foreign)
            except Exception as exc:  # the index is down: better no build than a duplicate
                self.descriptionDone = f"index not reachable: {exc}"[:200]
                await self.addCompleteLog("error", f"{type(exc).__name__}: {exc}\n")
                return Result.FAILURE
            notes += found
        if self.builder_for is not None:
            todo, queued = await self._drop_queued(self.builder_for, todo, version, postfix, dry_run)
            notes += queued
        self.setProperty("todo", todo, "published")
        await self.addCompleteLog("index", "\n".join(notes or ["nothing of this release is published yet"]) + "\n")
        text = f"{len(todo)} to build, {len(chosen) - len(todo)} already published or queued"
        if len(chosen) < len(builds):
            text += f", {len(builds) - len(chosen)} not chosen"
        foreign = [f for f in foreign if of_version(f.file, version)]
        if foreign:
            self.setProperty(FOREIGN_PROPERTY, [f.to_json() for f in foreign], self.name)
            await self.addCompleteLog("foreign", "".join(describe(f) + "\n" for f in foreign))
            text += f", {len(foreign)} FOREIGN file(s) on the index"
        self.descriptionDone = text if builds else "plan has no builds"
        return Result.WARNINGS if foreign else Result.SUCCESS

    async def _drop_queued(self, builder_for: Callable[[str, str], str], todo: list[Build], version: str,
                           postfix: str, dry_run: bool) -> tuple[list[Build], list[str]]:
        """Never queue a second request for a (variant, arch, version) that is still waiting or running."""
        keep, notes = [], []
        for b in todo:
            requests = await open_requests(self.master, builder_for(b["variant"], b["arch"]))
            dup = queued_duplicate(requests, version, postfix, dry_run)
            if dup is None:
                keep.append(b)
            else:
                notes.append(f"{b['variant']} {b['arch']}: already queued or running (build request {dup})")
        return keep, notes
