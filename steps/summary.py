"""The one way a step puts text on its build's summary (home, builder, waterfall and build pages).

Buildbot prefixes a build's summary (``state_string``) with every step's
``"build"`` summary.  A step sets ``build_summary`` (the title of the build,
"DRY RUN", the release's verdict, ...) and mixes in ``BuildSummary``: the
line then shows whatever the step's result.

``OwnTriggerSummary`` is for our ``Trigger`` subclasses: Trigger's own
summary only names the schedulers it triggered; once the step has said what
happened (``descriptionDone``), that is the summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buildbot.process import buildstep

if TYPE_CHECKING:
    from buildbot.process.buildstep import BuildStep as _Step
else:  # a mixin: the step class it is mixed into provides getResultSummary
    _Step = object


class BuildSummary(_Step):
    """Mixin (first among the bases): ``build_summary``, when set, is the step's line in the build's summary."""

    build_summary: str | None = None

    def getResultSummary(self) -> dict[str, str]:
        summary = dict(super().getResultSummary())
        if self.build_summary:
            summary["build"] = self.build_summary
        return summary


class OwnTriggerSummary(_Step):
    """Mixin for a ``Trigger`` subclass: the summary is the step's own text once it has one."""

    def getResultSummary(self) -> dict[str, str]:
        if self.descriptionDone:
            return dict(buildstep.BuildStep.getResultSummary(self))
        return dict(super().getResultSummary())
