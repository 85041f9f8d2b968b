"""Typing for a step as it runs: attached to a build of a running master.

Buildbot types ``BuildStep.build`` and ``BuildStep.master`` as optional
because a step object exists before it is attached; by the time ``run()``
and the callbacks it schedules execute, both are set.  Mixing ``Attached``
in (first among the bases) says so once, instead of an ``assert`` at each
use.  It has no run-time effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildbot.master import BuildMaster
    from buildbot.process.build import Build
    from buildbot.process.buildstep import BuildStep as _Step
else:  # a mixin: the step class it is mixed into is the BuildStep
    _Step = object


class Attached(_Step):
    if TYPE_CHECKING:
        build: Build
        master: BuildMaster
