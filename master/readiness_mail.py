"""The mail of a readiness build that broke (``[readiness]``, notify event ``readiness_failed``).

Pure text over a data-API build dict, like ``master/notify_text.py``: the
subject names the ref, the failed step and, when the patch no longer
applies, the file (``patch_failure``, set by ``steps.toolchain.PatchSource``
from the toolchain's typed error); the body adds the text the edit expects,
the step's first error lines and the log's end.  ``master/notify.py``
delivers it.
"""

from __future__ import annotations

from typing import Any

from farm import readiness
from farm.report import flatten
from farm.states import BAD, label
from master import notify_text

Build = dict[str, Any]


def failed_step(build: Build) -> Build | None:
    return next((s for s in build.get("steps") or [] if s.get("results") in BAD), None)


def format_readiness(build: Build, build_url: str, title: str,
                     failed_log: tuple[str, str] | None = None) -> tuple[str, str]:
    """(subject, body) of the mail for a readiness build that failed."""
    props = flatten(build.get("properties"))
    target = props.get(readiness.PROPERTY) or {}
    ref = target.get("ref") or "?"
    status = label(build.get("results")).upper()
    step = failed_step(build)
    where = f" at {step['name']}" if step else ""
    patch = props.get("patch_failure") or {}
    subject = f"[{title}] readiness of {ref}: {status}{where}" + (f": {patch['file']}" if patch.get("file") else "")
    lines = [
        f"{readiness.title(props)}: {status}{where}",
        f"Build: {build_url}",
        f"Ref: {ref}    version {target.get('why') or '?'}",
        "Upload: none (a readiness build is a dry run, forced by the master)",
        "",
    ]
    if patch.get("file"):
        lines += ["The patch no longer applies to the upstream:",
                  f"  file:     {patch['file']}",
                  f"  expected: {patch.get('expected', '')}", ""]
    if step:
        lines += ["Failed step:", f"  - {step['name']}: {step.get('state_string', '')}"]
    if failed_log:
        lines += notify_text.log_lines(*failed_log)
    lines += ["", f"A release from {ref} would fail the same way: fix the patch (vllm_cpu_build/patch.py) "
                  "or the build before its tag arrives."]
    return subject, "\n".join(lines) + "\n"
