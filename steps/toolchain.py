"""Buildbot steps that run ``vllm-cpu-build`` on a worker.

Each step runs ``python -m vllm_cpu_build <sub> ... --json`` from the
toolchain the master shipped into ``<builddir>/tc``, reads back its typed
result (``vllm_cpu_build.results``) and turns it into a step summary,
build properties and links; the full human log (stderr) stays in the step's
stdio log.  The worker's environment is not logged (``logEnviron=False``).  No step
here ever gets a publishing credential: a build worker runs upstream's
code, so publishing happens on the master (``steps/publisher.py``).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

from buildbot import interfaces
from buildbot.process import buildstep, logobserver
from buildbot.process.properties import Interpolate, Property
from twisted.internet import defer

from farm.compile_cache import Cache
from farm.logscan import FirstError, progress
from farm.report import floor_text
from farm.states import CANCELLED, FAILURE, SUCCESS, WARNINGS
from steps import compile_cache
from steps.attached import Attached
from steps.summary import BuildSummary
from vllm_cpu_build import abi3
from vllm_cpu_build.errors import EXIT_OK, EXIT_USAGE
from vllm_cpu_build.results import (
    BuildResult,
    ErrorResult,
    PatchResult,
    PlanResult,
    Result,
    ResultError,
    SmokeResult,
    VerifyResult,
    parse_result,
)

if TYPE_CHECKING:
    from buildbot.master import BuildMaster
    from buildbot.process.build import Build

TOOLCHAIN_DIR = "tc"  # relative to the builder directory on the worker


def toolchain_env() -> dict[str, Any]:
    """Environment for every toolchain command: the shipped copy first on sys.path."""
    return {
        "PYTHONPATH": Interpolate(f"%(prop:builddir)s/{TOOLCHAIN_DIR}"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _wheel_name(wheel: object) -> str:
    return str(wheel).rsplit("/", 1)[-1]


def _tag(wheel: object) -> str:
    """Short step-name part for a wheel: its Python/ABI tags (``cp38-abi3``) or its file name."""
    name = _wheel_name(wheel)
    parts = name[:-4].split("-") if name.endswith(".whl") else []
    return "-".join(parts[-3:-1]) if len(parts) >= 5 else name


class LogWatch(logobserver.LogLineObserver):
    """Reads the step's stdio as it streams: the first error line, and compile progress.

    Progress (CMake/make ``[ 45%]``, ninja ``[12/80]``) goes into the running
    step's summary, so an hour-long compile says how far it is.
    """

    def __init__(self, step: ToolchainStep) -> None:
        super().__init__()
        self.step = step
        self.errors = FirstError()
        self.progress: str | None = None

    def _line(self, line: str) -> None:
        self.errors.feed(line)
        p = progress(line)
        if p and p != self.progress:
            self.progress = p
            self.step.show_progress(p)

    def outLineReceived(self, line: str) -> None:
        self._line(line)

    def errLineReceived(self, line: str) -> None:
        self._line(line)


class ToolchainStep(buildstep.ShellMixin, buildstep.BuildStep):
    """Run one ``vllm-cpu-build`` subcommand and interpret its typed result."""

    if TYPE_CHECKING:  # as steps.attached.Attached says; ShellMixin declares build too
        build: Build
        master: BuildMaster

    subcommand = ""
    result_type: type[Result] = Result
    renderables = ["cli_args"]

    def __init__(self, cli_args: list[Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("logEnviron", False)
        kwargs.setdefault("workdir", ".")
        kwargs.setdefault("env", toolchain_env())
        kwargs.setdefault("haltOnFailure", True)
        kwargs = self.setupShellMixin(kwargs, prohibitArgs=["command"])
        self.cli_args = cli_args or []
        super().__init__(**kwargs)
        self.watch = LogWatch(self)
        # LogWatch provides ILogObserver through zope @implementer, which mypy cannot see
        self.addLogObserver("stdio", cast("interfaces.ILogObserver", self.watch))

    def show_progress(self, where: str) -> None:
        self.description = f"{self.subcommand} running: {where}"
        self.updateSummary()

    def command_args(self) -> list[str]:
        out: list[str] = []
        for a in self.cli_args:  # a renderer may stand for several arguments (or none)
            out.extend(str(x) for x in a) if isinstance(a, list | tuple) else out.append(str(a))
        return out

    def command_env(self) -> defer.Deferred[dict[str, str]]:
        """Variables this step adds to its environment (rendered when it runs)."""
        return defer.succeed({})

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        python = self.getProperty("toolchain_python") or "python3"
        command = [python, "-m", "vllm_cpu_build", self.subcommand, *self.command_args(), "--json"]
        extra = yield self.command_env()
        overrides: dict[str, Any] = {"env": {**self.env, **extra}} if extra else {}
        cmd = yield self.makeRemoteShellCommand(command=command, collectStdout=True, **overrides)
        yield self.runCommand(cmd)
        if self.stopped:  # stopped (a cancelled release, a master shutdown): not a failure of the tool
            self.descriptionDone = f"{self.subcommand} interrupted"
            return CANCELLED
        try:
            result = parse_result(cmd.stdout or "")
        except ResultError as exc:  # a document of a known kind that is not that kind: never "no result"
            yield self.addCompleteLog("result.json", cmd.stdout or "")
            self.descriptionDone = f"{self.subcommand} failed (exit {cmd.rc}): malformed result document: {exc}"
            return FAILURE
        if result is not None:
            yield self.addCompleteLog("result.json", json.dumps(result.to_json(), indent=2))
        if isinstance(result, self.result_type) and not isinstance(result, ErrorResult):
            outcome: int = yield defer.maybeDeferred(self.interpret, cmd.rc, result)
            return outcome
        self.descriptionDone = self.failure_text(cmd.rc, result)
        return FAILURE

    def interpret(self, rc: int, result: Any) -> int | defer.Deferred[int]:
        """The step's result from the tool's exit code and its typed result (may return a Deferred)."""
        if rc == EXIT_OK:
            self.descriptionDone = f"{self.subcommand} ok"
            return SUCCESS
        self.descriptionDone = self.failure_text(rc, result)
        return FAILURE

    def _relative(self, line: str) -> str:
        """Compiler paths relative to the checkout: ``csrc/cpu/x.c:3:2: error: ...``."""
        builddir = str(self.getProperty("builddir") or "")
        if not builddir:
            return line
        return line.replace(f"{builddir}/src/", "").replace(f"{builddir}/", "")

    def failure_text(self, rc: int, result: Result | None) -> str:
        """``build failed (exit 1): <first compiler/CMake/pip error line>`` (else the tool's own error)."""
        own = result.error if isinstance(result, ErrorResult) else ""
        why = own if rc == EXIT_USAGE and own else (self._relative(self.watch.errors.line) or own)
        kind = "bad input" if rc == EXIT_USAGE else "failed"
        if not why and result is None:
            why = "no result document; see stdio"
        return f"{self.subcommand} {kind} (exit {rc})" + (f": {why}" if why else "")


class QueueWheelBuilds(Attached, buildstep.BuildStep):
    """Add the build steps of the ``pythons``/``abi3``/``abi3_floor`` properties (``plan``'s build).

    One build per wheel (``abi3.wheel_targets``): a Python below ``abi3_floor`` gets its own,
    the rest share one stable-ABI wheel built with the oldest of them. A wheel for every Python
    (``abi3``) of the 3.8 stable ABI builds with the worker's own interpreter, which any CPython
    this project runs on satisfies.
    """

    name = "wheels_to_build"
    wheel_step: type[BuildWheel] | None = None  # None: BuildWheel; a rebuild queues its own (steps/reproduce.py)

    def __init__(self, build_args: list[Any], smoke_args: list[Any] | None = None, cache: Cache | None = None,
                 **kwargs: Any) -> None:
        self.build_args = build_args
        self.smoke_args = list(smoke_args or [])
        self.cache = cache
        super().__init__(**kwargs)

    def run(self) -> defer.Deferred[int]:
        pythons = list(self.getProperty("pythons") or [])
        floor = self.getProperty("abi3_floor") or (abi3.MINIMUM if self.getProperty("abi3") else None)
        targets: list[tuple[str | None, str]]
        if not pythons or (self.getProperty("abi3") and floor == abi3.MINIMUM):
            targets = [(None, "one abi3 wheel" + (f" for Python {pythons[0]}+" if pythons else ""))]
        else:
            targets = [(t.python, f"{abi3.python_tag(floor)}-abi3 (py{t.python}+)" if t.abi3 and floor
                        else f"py{t.python}") for t in abi3.wheel_targets(pythons, floor)]
        if len(targets) == 1 and targets[0][0] is None:
            self.descriptionDone = f"queued {targets[0][1]}"
        else:
            self.descriptionDone = f"queued {len(targets)} wheel(s): " + ", ".join(text for _, text in targets)
        step = self.wheel_step or BuildWheel
        self.build.addStepsAfterCurrentStep([step(python=p, cli_args=list(self.build_args),
                                                  smoke_args=self.smoke_args, cache=self.cache)
                                             for p, _ in targets])
        return defer.succeed(SUCCESS)


class PlanRelease(ToolchainStep):
    """``plan``: which variant × arch × Python builds a version gets; sets ``plan``."""

    name = "plan"
    subcommand = "plan"
    result_type = PlanResult

    def interpret(self, rc: int, plan: PlanResult) -> int:
        if rc != EXIT_OK:
            self.descriptionDone = self.failure_text(rc, plan)
            return FAILURE
        self.setProperty("plan", plan.to_json(), "plan")
        text = f"{plan.version}: {len(plan.builds)} build(s)"
        if plan.skipped:
            text += f", {len(plan.skipped)} variant(s) not for this release"
        self.descriptionDone = text
        return SUCCESS


class PatchSource(ToolchainStep):
    """``patch``: rename, pin the ISA switches, set the version; sets ``final_version``."""

    name = "patch"
    subcommand = "patch"
    result_type = PatchResult

    def interpret(self, rc: int, res: PatchResult) -> int:
        if rc != EXIT_OK:
            self.descriptionDone = self.failure_text(rc, res)
            return FAILURE
        self.setProperty("final_version", res.full_version, "patch")
        self.setProperty("pinned_flags", res.pinned_flags, "patch")
        flags = " ".join(res.pinned_flags) or "no ISA switches"
        self.descriptionDone = f"{res.variant} {res.full_version}: {len(res.changes)} change(s); {flags}"
        return SUCCESS

    def failure_text(self, rc: int, result: Result | None) -> str:
        """An upstream anchor gone: ``patch failed (exit 1): <file>: expected <text>``; the file and the text
        also go into ``patch_failure`` (the matrix and the mails name the edit that no longer applies)."""
        if isinstance(result, ErrorResult) and result.detail.get("file"):
            failure = {"file": str(result.detail["file"]), "expected": str(result.detail.get("expected", "")),
                       "error": result.error}
            self.setProperty("patch_failure", failure, "patch")
            return f"patch failed (exit {rc}): {result.error}"
        return super().failure_text(rc, result)


class BuildWheel(BuildSummary, ToolchainStep):
    """``build`` once (abi3) or for one Python; queues verify + smoke for the wheel it made."""

    subcommand = "build"
    result_type = BuildResult
    renderables = ["python"]

    def __init__(self, python: Any = None, smoke_args: list[Any] | None = None, cache: Cache | None = None,
                 **kwargs: Any) -> None:
        self.python = python
        self.smoke_args = list(smoke_args or [])  # the worker-side settings smoke needs (torch index)
        self.cache = cache  # [cache]: the farm's shared compile cache
        self.cache_warning = ""
        kwargs.setdefault("name", f"build_py{python.replace('.', '')}" if isinstance(python, str) else "build")
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        args = super().command_args()
        return args + (["--python", self.python] if self.python else [])

    @defer.inlineCallbacks
    def command_env(self) -> Generator[Any, Any, dict[str, str]]:
        remote: compile_cache.RemoteEnv = yield compile_cache.remote_env(self.cache, self.build, self.master)
        if remote.warning:  # a slower build, not a failed one: say so in the log and the summary
            self.cache_warning = remote.warning
            stdio = yield self.addLog("stdio")
            yield stdio.addHeader(f"WARNING: {remote.warning}\n")
        return remote.env

    def _cache_text(self, res: BuildResult) -> str:
        parts = [res.compile_cache.summary()] if res.compile_cache else []
        return "; ".join([*parts, *([self.cache_warning] if self.cache_warning else [])])

    @defer.inlineCallbacks
    def interpret(self, rc: int, res: BuildResult) -> Generator[Any, Any, int]:
        if rc != EXIT_OK or not res.wheel:
            self.descriptionDone = self.failure_text(rc, res)
            return FAILURE
        wheels = [*(self.getProperty("wheels") or []), res.wheel]
        self.setProperty("wheels", wheels, "build")
        name = _wheel_name(res.wheel)
        # The sha256 the build recorded: the master publishes these bytes or nothing (steps/publisher.py).
        self.setProperty("built", {**(self.getProperty("built") or {}), name: res.sha256}, "build")
        self.descriptionDone = f"built {name} in {res.seconds:.0f}s"
        if res.record:
            # Every decision the build made, on the build page: torch, compiler, root, tag, sizes.
            yield self.addCompleteLog("provenance.json", json.dumps(res.record.to_json(), indent=2, sort_keys=True))
            # The property is the short form (the whole record is the log): big build properties bloat
            # every REST answer that lists builds.
            records = dict(self.getProperty("provenance") or {})
            records[name] = res.record.digest().to_json()  # with its SOURCE_DATE_EPOCH: what a rebuild must set
            if res.record.source_date_epoch is not None:
                self.build_summary = f"[SOURCE_DATE_EPOCH={res.record.source_date_epoch}]"
            self.setProperty("provenance", records, "build")
            line = res.record.summary()
            if line:
                self.descriptionDone += f" ({line})"
        if self._cache_text(res):
            self.descriptionDone += f"; {self._cache_text(res)}"
        self.build.addStepsAfterCurrentStep(self.checks(res.wheel))
        return SUCCESS

    def checks(self, wheel: str) -> list[buildstep.BuildStep]:
        """The steps that check the wheel this step made: verify and smoke."""
        return [VerifyWheel(wheel=wheel), SmokeTest(wheel=wheel, cli_args=list(self.smoke_args))]


class VerifyWheel(ToolchainStep):
    """``verify``: integrity + ISA contract; the summary is what a maintainer needs to see."""

    subcommand = "verify"
    result_type = VerifyResult
    renderables = ["wheel", "variant", "arch"]

    def __init__(self, wheel: Any, variant: Any = None, arch: Any = None, **kwargs: Any) -> None:
        self.wheel = wheel
        self.variant = variant if variant is not None else Property("variant")
        self.arch = arch if arch is not None else Property("arch")
        kwargs.setdefault("name", f"verify_{_tag(wheel)}"[:50])
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        return ["--variant", self.variant, "--arch", self.arch, self.wheel]

    def interpret(self, rc: int, res: VerifyResult) -> int:
        name = _wheel_name(self.wheel)
        failed = [c.name + (f" ({c.detail})" if c.detail else "") for c in res.checks if not c.ok]
        ok = rc == EXIT_OK and res.ok and not failed
        results = dict(self.getProperty("verify") or {})
        results[name] = {"ok": ok, "summary": res.summary, "isa": res.isa_summary, "failed": failed}
        self.setProperty("verify", results, "verify")
        if ok:
            self.descriptionDone = f"{name}: ISA ok {res.isa_summary}"
            return SUCCESS
        self.descriptionDone = f"{name}: NOT publishable: " + ("; ".join(failed) or res.summary or f"exit {rc}")
        return FAILURE


class SmokeTest(BuildSummary, ToolchainStep):
    """``smoke``: install + import in a fresh venv; exit 3 (CPU lacks the ISA) is a visible warning."""

    subcommand = "smoke"
    result_type = SmokeResult
    renderables = ["wheel", "variant"]

    def __init__(self, wheel: Any, variant: Any = None, **kwargs: Any) -> None:
        self.wheel = wheel
        self.variant = variant if variant is not None else Property("variant")
        kwargs.setdefault("name", f"smoke_{_tag(wheel)}"[:50])
        # A skipped smoke test makes the build WARNINGS (Buildbot's default drops a step's warnings).
        kwargs.setdefault("warnOnWarnings", True)
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        return ["--variant", self.variant, self.wheel, *super().command_args()]

    def interpret(self, rc: int, res: SmokeResult) -> int:
        name = _wheel_name(self.wheel)
        status = res.status if rc == res.exit_code else "failed"
        reason = res.reason or ("" if status != "failed" else f"exit {rc}")
        results = dict(self.getProperty("smoke") or {})
        results[name] = {"status": status, "reason": reason}
        floor = ""
        if res.floor is not None:  # the probe on the package's oldest CPU: report, notes and matrix show it
            results[name].update(floor=str(res.floor.status), floor_cpu=res.floor.cpu, floor_reason=res.floor.reason)
            floor = f"; floor {res.floor.cpu}: {res.floor.status}"
        self.setProperty("smoke", results, "smoke")
        if status == "skipped":
            self.descriptionDone = f"{name}: smoke skipped: {reason or 'this CPU lacks the ISA'}"
            return WARNINGS
        if status == "passed":
            if floor:  # on the build's summary too (a failure or a skip says so there instead, as Buildbot does)
                self.build_summary = "[floor " + floor_text(results[name]) + "]"
            self.descriptionDone = f"{name}: smoke passed" + (f", {res.vllm_version} imported" if res.vllm_version
                                                              else "") + floor
            return SUCCESS
        self.descriptionDone = f"{name}: smoke FAILED: {reason}"
        return FAILURE
