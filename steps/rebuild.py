"""``RebuildFailed``: a Buildbot "rebuild" of a release build rebuilds only its variant builds that failed."""

from __future__ import annotations

from buildbot.process import buildstep

from farm.decisions import newest_per_build, release_so_far, to_rebuild
from farm.report import child_of, child_row, fetch_children, format_table
from farm.states import Result
from steps.attached import Attached
from steps.collect import builds_of_release_so_far


class RebuildFailed(Attached, buildstep.BuildStep):
    """A Buildbot "rebuild" of a release build rebuilds only the variant builds of it that failed.

    Buildbot's rebuild copies the release's request (its parameters: tag or
    forced versions, postfix, dry run, variants, ...) and records the first
    build of the release in the new buildset's ``rebuilt_buildid``.  The
    release so far is that build, its earlier rebuilds and their tries;
    the newest build per variant × arch counts.  Those that failed or were
    cancelled go into ``only_builds``; the rest of the release (published,
    waiting for a worker) is left alone.  Rebuilding is a control action:
    with a users file only an admin may do it (``master/www.py``).
    """

    name = "rebuild_failed"

    async def run(self) -> int:
        mine = self.build.requests[0].bsid
        first, rebuilds = await builds_of_release_so_far(self.master, mine)
        if first is None:
            self.descriptionDone = "not a rebuild"
            return Result.SKIPPED
        kids = []
        for buildid in release_so_far(first, rebuilds, mine):
            kids += await fetch_children(self.master, buildid)
        rows = {k["buildrequestid"]: child_row(k) for k in kids}
        newest = newest_per_build(child_of(k) for k in kids)
        failed = to_rebuild(newest)
        original = await self.master.data.get(("builds", first))
        self.setProperty("rebuild_of", first, self.name)
        self.setProperty("only_builds", failed, self.name)
        where = f"release #{original['number']}" if original else f"build {first}"
        if failed:
            self.descriptionDone = (f"rebuilding {len(failed)} failed build(s) of {where}: "
                                    + ", ".join(k.replace("/", " ") for k in failed))
        else:
            self.descriptionDone = f"nothing of {where} failed; nothing to rebuild"
        await self.addCompleteLog("release so far", format_table([rows[c.buildrequestid] for c in newest.values()]))
        return Result.SUCCESS
