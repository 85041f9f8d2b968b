"""Buildbot steps that run ``vllm-cpu-build`` on a worker.

Each step runs ``python -m vllm_cpu_build <sub> ... --json`` from the
toolchain the master shipped into ``<builddir>/tc`` and turns its JSON into
a step summary, build properties and links; the full human log (stderr)
stays in the step's stdio log.  The worker's environment is not logged
(``logEnviron=False``) and the index token only travels as a
``util.Secret`` renderable, which Buildbot redacts from logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from buildbot.process import buildstep
from buildbot.process.properties import Interpolate
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from twisted.internet import defer

from master.report import short_isa

TOOLCHAIN_DIR = "tc"  # relative to the builder directory on the worker
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


def toolchain_env() -> dict[str, Any]:
    """Environment for every toolchain command: the shipped copy first on sys.path."""
    return {
        "PYTHONPATH": Interpolate(f"%(prop:builddir)s/{TOOLCHAIN_DIR}"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def parse_json_output(stdout: str) -> dict | None:
    """The JSON document a ``--json`` subcommand printed (None if there is none)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        # Tolerate stray lines before the document: take the last {...} block.
        start = text.rfind("\n{")
        try:
            data = json.loads(text[start + 1:] if start >= 0 else text[text.index("{"):])
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def _tag(wheel: object) -> str:
    """Short step-name part for a wheel: its Python/ABI tags (``cp38-abi3``) or its file name."""
    name = str(wheel).rsplit("/", 1)[-1]
    parts = name[:-4].split("-") if name.endswith(".whl") else []
    return "-".join(parts[-3:-1]) if len(parts) >= 5 else name



class ToolchainStep(buildstep.ShellMixin, buildstep.BuildStep):
    """Run one ``vllm-cpu-build`` subcommand; subclasses interpret its JSON."""

    subcommand = ""
    renderables = ["cli_args"]

    def __init__(self, cli_args: list | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("logEnviron", False)
        kwargs.setdefault("workdir", ".")
        kwargs.setdefault("env", toolchain_env())
        kwargs.setdefault("haltOnFailure", True)
        kwargs = self.setupShellMixin(kwargs, prohibitArgs=["command"])
        self.cli_args = cli_args or []
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        out: list[str] = []
        for a in self.cli_args:  # a renderer may stand for several arguments (or none)
            out.extend(str(x) for x in a) if isinstance(a, list | tuple) else out.append(str(a))
        return out

    @defer.inlineCallbacks
    def run(self):
        python = self.getProperty("toolchain_python") or "python3"
        command = [python, "-m", "vllm_cpu_build", self.subcommand, *self.command_args(), "--json"]
        cmd = yield self.makeRemoteShellCommand(command=command, collectStdout=True)
        yield self.runCommand(cmd)
        data = parse_json_output(cmd.stdout or "")
        if data is not None:
            yield self.addCompleteLog("result.json", json.dumps(data, indent=2))
        result = yield defer.maybeDeferred(self.interpret, cmd.rc, data)
        return result

    def interpret(self, rc: int, data: dict | None) -> int:
        if rc == EXIT_OK and data is not None:
            self.descriptionDone = f"{self.subcommand} ok"
            return SUCCESS
        self.descriptionDone = self.failure_text(rc, data)
        return FAILURE

    def failure_text(self, rc: int, data: dict | None) -> str:
        why = (data or {}).get("error") or (data or {}).get("summary") or (data or {}).get("reason")
        kind = "bad input" if rc == EXIT_USAGE else "failed"
        return f"{self.subcommand} {kind} (exit {rc})" + (f": {why}" if why else "; see stdio")


class UnpackToolchain(buildstep.ShellMixin, buildstep.BuildStep):
    """Unpack the shipped toolchain into ``tc/`` and pick its interpreter (``toolchain_python``)."""

    name = "unpack_toolchain"
    # $0 is the worker's python: bootstrap.py prints the interpreter to use
    # (itself, or a cached venv when a module is missing).
    SCRIPT = ('rm -rf tc out && mkdir tc out && tar -xzf toolchain.tar.gz -C tc && exec "$0" tc/bootstrap.py')

    def __init__(self, tarball_name: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("logEnviron", False)
        kwargs.setdefault("workdir", ".")
        kwargs.setdefault("haltOnFailure", True)
        kwargs = self.setupShellMixin(kwargs, prohibitArgs=["command"])
        self.tarball_name = tarball_name
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        python = self.getProperty("worker_python") or "python3"
        cmd = yield self.makeRemoteShellCommand(command=["sh", "-c", self.SCRIPT, python], collectStdout=True)
        yield self.runCommand(cmd)
        lines = (cmd.stdout or "").strip().splitlines()
        if cmd.rc != 0 or not lines:
            self.descriptionDone = f"toolchain unpack/bootstrap failed (exit {cmd.rc})"
            return FAILURE
        self.setProperty("toolchain_python", lines[-1].strip(), "toolchain")
        self.descriptionDone = f"{self.tarball_name or 'toolchain'} with {lines[-1].strip()}"
        return SUCCESS


class QueueWheelBuilds(buildstep.BuildStep):
    """Add one build step (abi3) or one per Python from the ``abi3``/``pythons`` properties."""

    name = "wheels_to_build"

    def __init__(self, build_args: list, smoke_args: list | None = None, **kwargs: Any) -> None:
        self.build_args = build_args
        self.smoke_args = list(smoke_args or [])
        super().__init__(**kwargs)

    def run(self):
        pythons = list(self.getProperty("pythons") or [])
        if self.getProperty("abi3") or not pythons:
            targets: list[str | None] = [None]
            self.descriptionDone = "one abi3 wheel" + (f" (cp{pythons[0].replace('.', '')}+)" if pythons else "")
        else:
            targets = list(pythons)
            self.descriptionDone = f"{len(pythons)} wheel(s): " + ", ".join(f"py{p}" for p in pythons)
        smoke_args = self.smoke_args
        self.build.addStepsAfterCurrentStep([
            BuildWheel(python=p, cli_args=list(self.build_args),
                       smoke_step=lambda wheel, **kw: SmokeTest(wheel=wheel, cli_args=list(smoke_args), **kw))
            for p in targets])
        return defer.succeed(SUCCESS)


class PlanRelease(ToolchainStep):
    """``plan``: which variant × arch × Python builds a version gets; sets ``plan``."""

    name = "plan"
    subcommand = "plan"

    def interpret(self, rc: int, data: dict | None) -> int:
        if rc != EXIT_OK or data is None or "builds" not in data:
            self.descriptionDone = self.failure_text(rc, data)
            return FAILURE
        self.setProperty("plan", data, "plan")
        builds = data["builds"]
        parts = [f"{b['variant']} {b['arch']} " + ("abi3" if b.get("abi3") else "py" + ",".join(b["pythons"]))
                 for b in builds]
        text = f"{data.get('version', '?')}: {len(builds)} build(s)"
        if data.get("skipped"):
            text += f", {len(data['skipped'])} variant(s) not for this release"
        self.descriptionDone = text
        self.plan_lines = parts
        return SUCCESS


class PatchSource(ToolchainStep):
    """``patch``: rename, pin the ISA switches, set the version; sets ``final_version``."""

    name = "patch"
    subcommand = "patch"

    def interpret(self, rc: int, data: dict | None) -> int:
        if rc != EXIT_OK or data is None:
            self.descriptionDone = self.failure_text(rc, data)
            return FAILURE
        self.setProperty("final_version", data.get("version"), "patch")
        self.setProperty("pinned_flags", data.get("pinned_flags", []), "patch")
        flags = " ".join(data.get("pinned_flags", [])) or "no ISA switches"
        self.descriptionDone = (f"{data.get('variant')} {data.get('version')}: "
                                f"{len(data.get('changes', []))} change(s); {flags}")
        return SUCCESS


class BuildWheel(ToolchainStep):
    """``build`` once (abi3) or for one Python; queues verify + smoke for the wheel it made."""

    subcommand = "build"
    renderables = ["python"]

    def __init__(self, python: Any = None, verify_step: Callable | None = None,
                 smoke_step: Callable | None = None, **kwargs: Any) -> None:
        self.python = python
        self.verify_step = verify_step or (lambda wheel, **kw: VerifyWheel(wheel=wheel, **kw))
        self.smoke_step = smoke_step or (lambda wheel, **kw: SmokeTest(wheel=wheel, **kw))
        kwargs.setdefault("name", f"build_py{python.replace('.', '')}" if isinstance(python, str) else "build")
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        args = super().command_args()
        return args + (["--python", self.python] if self.python else [])

    @defer.inlineCallbacks
    def interpret(self, rc: int, data: dict | None):
        if rc != EXIT_OK or data is None or not data.get("wheel"):
            self.descriptionDone = self.failure_text(rc, data)
            return FAILURE
        wheel = data["wheel"]
        name = wheel.rsplit("/", 1)[-1]
        wheels = list(self.getProperty("wheels") or [])
        wheels.append(wheel)
        self.setProperty("wheels", wheels, "build")
        secs = data.get("seconds")
        self.descriptionDone = f"built {name}" + (f" in {secs:.0f}s" if isinstance(secs, int | float) else "")
        record = data.get("record")
        if isinstance(record, dict) and record:
            # Every decision the build made, on the build page: torch, compiler, root, tag, sizes.
            from vllm_cpu_build.provenance import summary

            yield self.addCompleteLog("provenance.json", json.dumps(record, indent=2, sort_keys=True))
            # The property is the short form (the whole record is the log): big build properties bloat
            # every REST answer that lists builds.
            records = dict(self.getProperty("provenance") or {})
            records[name] = {"torch": (record.get("torch") or {}).get("built_against"),
                             "torch_matches": (record.get("torch") or {}).get("matches"),
                             "platform": (record.get("platform") or {}).get("tag"),
                             "compiler": (record.get("build") or {}).get("compiler")}
            self.setProperty("provenance", records, "build")
            line = summary(record)
            if line:
                self.descriptionDone += f" ({line})"
        self.build.addStepsAfterCurrentStep([self.verify_step(wheel), self.smoke_step(wheel)])
        return SUCCESS


class VerifyWheel(ToolchainStep):
    """``verify``: integrity + ISA contract; the summary is what a maintainer needs to see."""

    subcommand = "verify"
    renderables = ["wheel", "variant", "arch"]

    def __init__(self, wheel: Any, variant: Any = None, arch: Any = None, **kwargs: Any) -> None:
        from buildbot.process.properties import Property

        self.wheel = wheel
        self.variant = variant if variant is not None else Property("variant")
        self.arch = arch if arch is not None else Property("arch")
        kwargs.setdefault("name", f"verify_{_tag(wheel)}"[:50])
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        return ["--variant", self.variant, "--arch", self.arch, self.wheel]

    def interpret(self, rc: int, data: dict | None) -> int:
        name = str(self.wheel).rsplit("/", 1)[-1]
        if data is None:
            self.descriptionDone = f"{name}: " + self.failure_text(rc, data)
            return FAILURE
        summary = short_isa(str(data.get("summary", "")))
        failed = [c["name"] + (f" ({c.get('detail')})" if c.get("detail") else "")
                  for c in data.get("checks", []) if not c.get("ok")]
        results = dict(self.getProperty("verify") or {})
        ok = rc == EXIT_OK and data.get("ok") is True and not failed
        results[name] = {"ok": ok, "summary": data.get("summary", ""), "failed": failed}
        self.setProperty("verify", results, "verify")
        if ok:
            self.descriptionDone = f"{name}: {summary}"
            return SUCCESS
        self.descriptionDone = f"{name}: NOT publishable: " + ("; ".join(failed) or summary or f"exit {rc}")
        return FAILURE


class SmokeTest(ToolchainStep):
    """``smoke``: install + import in a fresh venv; exit 3 (CPU lacks the ISA) is a visible warning."""

    subcommand = "smoke"
    renderables = ["wheel", "variant"]

    def __init__(self, wheel: Any, variant: Any = None, **kwargs: Any) -> None:
        from buildbot.process.properties import Property

        self.wheel = wheel
        self.variant = variant if variant is not None else Property("variant")
        kwargs.setdefault("name", f"smoke_{_tag(wheel)}"[:50])
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        return ["--variant", self.variant, self.wheel, *super().command_args()]

    def interpret(self, rc: int, data: dict | None) -> int:
        name = str(self.wheel).rsplit("/", 1)[-1]
        status = (data or {}).get("status")
        reason = (data or {}).get("reason") or ""
        results = dict(self.getProperty("smoke") or {})
        if rc == EXIT_SKIPPED or status == "skipped":
            results[name] = {"status": "skipped", "reason": reason}
            self.setProperty("smoke", results, "smoke")
            self.descriptionDone = f"{name}: smoke skipped: {reason or 'this CPU lacks the ISA'}"
            return WARNINGS
        if rc == EXIT_OK and status == "passed":
            results[name] = {"status": "passed", "reason": reason}
            self.setProperty("smoke", results, "smoke")
            self.descriptionDone = f"{name}: smoke passed" + (f" ({reason})" if reason else "")
            return SUCCESS
        results[name] = {"status": "failed", "reason": reason or f"exit {rc}"}
        self.setProperty("smoke", results, "smoke")
        self.descriptionDone = f"{name}: smoke FAILED: {reason or f'exit {rc}'}"
        return FAILURE


class UploadWheels(ToolchainStep):
    """``upload`` the wheels of this build; links each uploaded file on the build page."""

    name = "upload"
    subcommand = "upload"
    renderables = ["wheels", "variant", "repository_url", "simple_url", "dry_run"]

    def __init__(self, wheels: Any, variant: Any, repository_url: Any, simple_url: Any,
                 dry_run: Any = False, username: Any = "__token__", token: Any = None, **kwargs: Any) -> None:
        self.wheels, self.variant = wheels, variant
        self.repository_url, self.simple_url, self.dry_run = repository_url, simple_url, dry_run
        env = dict(kwargs.pop("env", None) or toolchain_env())
        env["TWINE_USERNAME"] = username
        if token is not None:
            env["TWINE_PASSWORD"] = token  # a util.Secret: rendered at run time, redacted in logs
        kwargs["env"] = env
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        args = ["--variant", self.variant, "--repository-url", self.repository_url,
                "--simple-url", self.simple_url]
        if self.dry_run:
            args.append("--dry-run")
        return args + [str(w) for w in (self.wheels or [])]

    @defer.inlineCallbacks
    def run(self):
        if not self.wheels:
            self.descriptionDone = "nothing to upload"
            return FAILURE
        result = yield super().run()
        return result

    @defer.inlineCallbacks
    def interpret(self, rc: int, data: dict | None):
        if rc != EXIT_OK or data is None:
            self.descriptionDone = self.failure_text(rc, data)
            return FAILURE
        uploaded = data.get("uploaded", [])
        for u in uploaded:
            yield self.addURL(u["file"], u["url"])
        for s in data.get("skipped", []):
            if s.get("url"):
                yield self.addURL(f"{s['file']} (already there)", s["url"])
        self.setProperty("uploaded", [u["url"] for u in uploaded], "upload")
        parts = []
        if uploaded:
            parts.append("uploaded " + ", ".join(u["file"] for u in uploaded))
        if data.get("skipped"):
            parts.append("not uploaded: " + ", ".join(f"{s['file']} ({s['reason']})" for s in data["skipped"]))
        self.descriptionDone = "; ".join(parts) or "nothing uploaded"
        return SUCCESS
