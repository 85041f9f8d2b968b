"""``TrustedBuild``: every builder's build class; it starts with trusted properties only.

The allowlist itself (which property may come from where) is ``farm/inputs.py``.
"""

from __future__ import annotations

from typing import Any

from buildbot.process.build import Build
from twisted.python import log

from farm.inputs import IGNORED, drop_untrusted


class TrustedBuild(Build):
    """A build that starts with trusted properties only (every builder's ``buildClass``)."""

    def startBuild(self, workerforbuilder: Any) -> Any:
        dropped = drop_untrusted(self.getProperties())
        if dropped:
            self.setProperty(IGNORED, dropped, "TrustedBuild")
            log.msg(f"vllm-cpu: build of {self.builder.name}: ignored untrusted properties: {', '.join(dropped)}")
        return super().startBuild(workerforbuilder)
