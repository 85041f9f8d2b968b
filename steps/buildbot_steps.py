"""Thin Buildbot steps over ``vllm-cpu-build`` (and the master-side release logic).

Worker steps run ``python -m steps.cli <sub> ... --json`` from the toolchain
the master shipped into ``<builddir>/tc`` and turn its JSON into a step
summary, build properties and links; the full human log (stderr) stays in
the step's stdio log.  The worker's environment is not logged
(``logEnviron=False``) and the index token only travels as a
``util.Secret`` renderable, which Buildbot redacts from logs.

Master-side steps (no worker command): resolve which release a build is
for, drop what the index already has, fan out to the variant builders, and
the periodic re-check.  Anything blocking (HTTP, git ls-remote) runs in a
thread.  This module is never imported on a worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from buildbot.data import resultspec
from buildbot.process import buildstep
from buildbot.process.properties import Interpolate
from buildbot.process.results import CANCELLED, EXCEPTION, FAILURE, SKIPPED, SUCCESS, WARNINGS, statusToString
from buildbot.steps.trigger import Trigger
from twisted.internet import defer, threads

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


def _short_isa(summary: str) -> str:
    """The ISA part of verify's summary ("all 7 checks passed; ISA ok: X" -> "ISA ok X")."""
    at = summary.find("ISA")
    return (summary[at:] if at > 0 else summary).replace("ISA ok: ", "ISA ok ")


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
        return [str(a) for a in self.cli_args]

    @defer.inlineCallbacks
    def run(self):
        python = self.getProperty("toolchain_python") or "python3"
        command = [python, "-m", "steps.cli", self.subcommand, *self.command_args(), "--json"]
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

    def __init__(self, build_args: list[str], **kwargs: Any) -> None:
        self.build_args = build_args
        super().__init__(**kwargs)

    def run(self):
        pythons = list(self.getProperty("pythons") or [])
        if self.getProperty("abi3") or not pythons:
            targets: list[str | None] = [None]
            self.descriptionDone = "one abi3 wheel" + (f" (cp{pythons[0].replace('.', '')}+)" if pythons else "")
        else:
            targets = list(pythons)
            self.descriptionDone = f"{len(pythons)} wheel(s): " + ", ".join(f"py{p}" for p in pythons)
        self.build.addStepsAfterCurrentStep([BuildWheel(python=p, cli_args=list(self.build_args)) for p in targets])
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

    def interpret(self, rc: int, data: dict | None) -> int:
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
        summary = _short_isa(str(data.get("summary", "")))
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


# --------------------------------------------------------------------------- master side


class ResolveRelease(buildstep.BuildStep):
    """Work out the release this build is for from ``version``/``tag`` or the change's tag ref."""

    name = "release"

    def __init__(self, tag_version: Callable[[str], str | None], **kwargs: Any) -> None:
        self.tag_version = tag_version  # tag or refs/tags/... -> version string (None: not a release)
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        tag = self.getProperty("tag") or self.getProperty("branch") or ""
        tag = str(tag).removeprefix("refs/tags/")
        version = self.getProperty("version") or (self.tag_version(tag) if tag else None)
        if not tag or not version:
            self.descriptionDone = f"not a release tag: {tag or '(none)'}"
            yield self.addCompleteLog("why", "This build has neither a version property nor a release tag.\n")
            return FAILURE
        self.setProperty("tag", tag, "release")
        self.setProperty("version", str(version), "release")
        bits = [f"vLLM {version} ({tag})"]
        if self.getProperty("postfix"):
            bits.append(f"postfix {self.getProperty('postfix')}")
        if self.getProperty("dry_run"):
            bits.append("DRY RUN")
        elif self.getProperty("skip_upload"):
            bits.append("no upload")
        self.descriptionDone = ", ".join(bits)
        return SUCCESS


@defer.inlineCallbacks
def open_requests(master, builder: str):
    """Unfinished build requests of ``builder``, oldest first, each as (request, {property: value}).

    The release, re-check and variant fan-out all ask "is this already
    queued or running?": the answer is in the requests' buildset properties.
    """
    builder_id = yield master.data.updates.findBuilderId(builder)
    brs = yield master.data.get(("builders", builder_id, "buildrequests"),
                                filters=[resultspec.Filter("complete", "eq", [False])])
    out = []
    for br in sorted(brs or [], key=lambda r: r["buildrequestid"]):
        raw = yield master.db.buildsets.getBuildsetProperties(br["buildsetid"])
        out.append((br, {k: v[0] for k, v in raw.items()}))
    return out


class SkipDuplicateRelease(buildstep.BuildStep):
    """Do nothing when an older request for the same release has not fanned out yet.

    The poller (or change hook) and the periodic re-check can both start a
    release of one tag within a second, e.g. at a master restart.  Until the
    older one triggers its variant builds, the newer one's ``already_published``
    step cannot see them and would build every wheel a second time.  Once the
    older one has fanned out, a newer request goes on: ``already_published``
    drops what is queued, and rebuilds what failed.  The oldest request never
    waits, so nothing is skipped for good.
    """

    name = "duplicate_check"

    def __init__(self, tag_version: Callable[[str], str | None], same_release: list[str], release_builder: str,
                 **kwargs: Any) -> None:
        self.tag_version = tag_version  # tag or refs/tags/... -> version (None: not a release)
        self.same_release = list(same_release)  # properties that must match (None/absent = the default)
        self.release_builder = release_builder
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def _version_of(self, bsid: int, props: dict):
        if props.get("version"):
            return str(props["version"])
        tag = props.get("tag")
        if not tag:
            bs = yield self.master.data.get(("buildsets", bsid))
            tag = next((ss.get("branch") for ss in (bs or {}).get("sourcestamps") or [] if ss.get("branch")), "")
        return self.tag_version(str(tag or "").removeprefix("refs/tags/"))

    @defer.inlineCallbacks
    def _fanned_out(self, brid: int):
        builds = yield self.master.data.get(("buildrequests", brid, "builds"))
        for b in builds or []:
            steps = yield self.master.data.get(("builds", b["buildid"], "steps"))
            if any(st["name"] == FanOut.name and st["started_at"] for st in steps or []):
                return True
        return False

    @defer.inlineCallbacks
    def run(self):
        mine = self.build.requests[0].id
        version = self.getProperty("version")
        same = {k: self.getProperty(k) or None for k in self.same_release}
        for br, props in (yield open_requests(self.master, self.release_builder)):
            if br["buildrequestid"] >= mine:
                continue
            if {k: props.get(k) or None for k in self.same_release} != same:
                continue
            other = yield self._version_of(br["buildsetid"], props)
            if other != version:
                continue
            if (yield self._fanned_out(br["buildrequestid"])):
                continue
            self.setProperty("duplicate_of", br["buildrequestid"], self.name)
            self.descriptionDone = f"{version}: duplicate of build request {br['buildrequestid']}, nothing to do"
            return SUCCESS
        self.descriptionDone = "no older request for this release"
        return SUCCESS


class DropPublished(buildstep.BuildStep):
    """Remove from the plan what the index already has or a queued build will make; sets ``todo``."""

    name = "already_published"

    def __init__(self, check: Callable[[list[dict], str, bool], tuple[list[dict], list[str]]],
                 builder_for: Callable[[str, str], str] | None = None, **kwargs: Any) -> None:
        self.check = check  # (builds, version, include_posts) -> (todo, notes); blocking
        self.builder_for = builder_for  # (variant, arch) -> builder name, to find queued duplicates
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        plan = self.getProperty("plan") or {}
        builds = list(plan.get("builds", []))
        version = self.getProperty("version")
        postfix = self.getProperty("postfix") or ""
        final = version + postfix if postfix else version
        notes: list[str] = []
        if self.getProperty("dry_run"):
            todo = builds
            notes.append("dry run: the index is not consulted, everything planned is built")
        else:
            try:
                todo, notes = yield threads.deferToThread(self.check, builds, final, not postfix)
            except Exception as exc:  # the index is down: better no build than a duplicate
                self.descriptionDone = f"index not reachable: {exc}"[:200]
                yield self.addCompleteLog("error", f"{type(exc).__name__}: {exc}\n")
                return FAILURE
        if self.builder_for is not None:
            todo, queued = yield self._drop_queued(todo, version, postfix, bool(self.getProperty("dry_run")))
            notes += queued
        self.setProperty("todo", todo, "published")
        yield self.addCompleteLog("index", "\n".join(notes or ["nothing of this release is published yet"]) + "\n")
        skipped = len(builds) - len(todo)
        self.descriptionDone = (f"{len(todo)} to build, {skipped} already published or queued"
                                if builds else "plan has no builds")
        return SUCCESS

    @defer.inlineCallbacks
    def _drop_queued(self, todo: list[dict], version: str, postfix: str, dry_run: bool):
        """Never queue a second request for a (variant, arch, version) that is still waiting or running."""
        keep, notes = [], []
        for b in todo:
            dup = None
            for br, p in (yield open_requests(self.master, self.builder_for(b["variant"], b["arch"]))):
                if (p.get("version") == version and (p.get("postfix") or "") == postfix
                        and bool(p.get("dry_run")) == dry_run):
                    dup = br["buildrequestid"]
                    break
            if dup is None:
                keep.append(b)
            else:
                notes.append(f"{b['variant']} {b['arch']}: already queued or running (build request {dup})")
        return keep, notes


class FanOut(Trigger):
    """Trigger one variant×arch build per ``todo`` entry, wait, and report the whole release."""

    name = "fan_out"

    def __init__(self, scheduler_for: Callable[[str, str], str], common_props: list[str], **kwargs: Any) -> None:
        self.scheduler_for = scheduler_for  # (variant, arch) -> Triggerable name
        self.common_props = common_props  # properties copied from the release build
        kwargs.setdefault("waitForFinish", True)
        kwargs.setdefault("alwaysUseLatest", True)
        super().__init__(**kwargs)

    def getResultSummary(self):
        # Trigger's own summary only names the schedulers; ours says what happened.
        if self.descriptionDone:
            return buildstep.BuildStep.getResultSummary(self)
        return super().getResultSummary()

    def getSchedulersAndProperties(self):
        out = []
        common = {p: self.getProperty(p) for p in self.common_props if self.getProperty(p) is not None}
        for b in self.getProperty("todo") or []:
            props = {**common, "variant": b["variant"], "arch": b["arch"], "pythons": list(b.get("pythons", [])),
                     "abi3": bool(b.get("abi3"))}
            out.append({"sched_name": self.scheduler_for(b["variant"], b["arch"]), "props_to_set": props,
                        "unimportant": False})
        return out

    @defer.inlineCallbacks
    def run(self):
        if not self.getProperty("todo"):
            self.descriptionDone = "nothing to build"
            return SKIPPED
        result = yield super().run()
        rows = yield self._report()
        yield self.addCompleteLog("release", format_table(rows))
        done = sum(1 for r in rows if r["result"] in ("success", "warnings"))
        self.descriptionDone = f"{self.getProperty('version')}: {done}/{len(rows)} variant build(s) ok"
        return result

    @defer.inlineCallbacks
    def _report(self):
        rows = []
        for brid in self.brids:
            builds = yield self.master.db.builds.getBuilds(buildrequestid=brid)
            for b in builds:
                props = yield self.master.db.builds.getBuildProperties(b.id)
                rows.append(row_from_properties({k: v[0] for k, v in props.items()}, statusToString(b.results)))
        return rows


def row_from_properties(props: dict, result: str) -> dict:
    """One line of the release table from a variant build's properties."""
    wheels = [w.rsplit("/", 1)[-1] for w in props.get("wheels") or []]
    verify = props.get("verify") or {}
    smoke = props.get("smoke") or {}
    isa = "; ".join(_short_isa(v.get("summary", "")) for v in verify.values()) or "-"
    uploaded = props.get("uploaded")
    if props.get("dry_run"):
        up = "dry run"
    elif props.get("skip_upload"):
        up = "skipped"
    else:
        up = "yes" if uploaded else "no"
    return {
        "variant": props.get("variant", "?"), "arch": props.get("arch", "?"),
        "wheel": ", ".join(wheels) or "-", "isa": isa,
        "verify": ("ok" if verify and all(v.get("ok") for v in verify.values()) else "FAILED") if verify else "-",
        "smoke": ", ".join(sorted({v.get("status", "?") for v in smoke.values()})) or "-",
        "uploaded": up, "result": result,
    }


def format_table(rows: list[dict], columns: tuple[str, ...] = ("variant", "arch", "wheel", "isa", "verify",
                                                                "smoke", "uploaded", "result")) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


class Recheck(Trigger):
    """Periodic re-check: start a release for every release tag nothing was published for.

    A version whose release already failed ``max_attempts`` times is left to
    a maintainer (force a release): retrying a broken upstream tag every
    interval would only burn worker time and mail the same failure again.
    """

    name = "recheck"

    def __init__(self, find_missing: Callable[[], list[tuple[str, str]]], release_builder: str,
                 max_attempts: int = 3, **kwargs: Any) -> None:
        self.find_missing = find_missing  # blocking: [(version, tag)] with nothing in the index
        self.release_builder = release_builder
        self.max_attempts = max_attempts
        kwargs.setdefault("waitForFinish", False)
        kwargs.setdefault("alwaysUseLatest", True)
        super().__init__(**kwargs)
        self._todo: list[tuple[str, str]] = []

    def getResultSummary(self):
        # Trigger's own summary only names the schedulers; ours says what happened.
        if self.descriptionDone:
            return buildstep.BuildStep.getResultSummary(self)
        return super().getResultSummary()

    @defer.inlineCallbacks
    def _failures(self, builder_id: int, versions: set[str]):
        """Failed (not cancelled, not dry-run) release builds per version among ``versions``."""
        builds = yield self.master.data.get(("builders", builder_id, "builds"),
                                            filters=[resultspec.Filter("complete", "eq", [True])])
        counts: dict[str, int] = {}
        for b in builds or []:
            if b["results"] not in (FAILURE, EXCEPTION):
                continue
            props = yield self.master.data.get(("builds", b["buildid"], "properties"))
            props = props or {}
            version = props.get("version", (None,))[0]
            if version in versions and not props.get("dry_run", (False,))[0]:
                counts[version] = counts.get(version, 0) + 1
        return counts

    @defer.inlineCallbacks
    def run(self):
        try:
            missing = yield threads.deferToThread(self.find_missing)
        except Exception as exc:
            self.descriptionDone = f"re-check failed: {exc}"[:200]
            return FAILURE
        busy: set[str] = set()
        failed: dict[str, int] = {}
        if missing:
            # Versions with a release request not finished yet: never start one twice.
            busy = {p["version"] for _, p in (yield open_requests(self.master, self.release_builder))
                    if "version" in p}
            builder_id = yield self.master.data.updates.findBuilderId(self.release_builder)
            failed = yield self._failures(builder_id, {v for v, _ in missing})
        given_up = [v for v, _ in missing if v not in busy and failed.get(v, 0) >= self.max_attempts]
        self._todo = [(v, t) for v, t in missing if v not in busy and v not in given_up]
        log = []
        for v, t in missing:
            if v in busy:
                why = "a release is already queued"
            elif v in given_up:
                why = f"its release failed {failed[v]} times; left to a maintainer (force a release to retry)"
            else:
                why = "starting" + (f" (attempt {failed[v] + 1} of {self.max_attempts})" if failed.get(v) else "")
            log.append(f"{v} ({t}): nothing published; {why}")
        yield self.addCompleteLog("recheck", "\n".join(log or ["every release tag has published wheels"]) + "\n")
        given_up_note = f"; failed too often: {', '.join(given_up)}" if given_up else ""
        if not self._todo:
            self.descriptionDone = ("all releases published or in progress" if not given_up
                                    else "nothing started" + given_up_note)
            return WARNINGS if given_up else SUCCESS
        result = yield super().run()
        self.descriptionDone = "started " + ", ".join(v for v, _ in self._todo) + given_up_note
        if result not in (SUCCESS, CANCELLED):
            return result
        return WARNINGS if given_up else SUCCESS

    def getSchedulersAndProperties(self):
        return [{"sched_name": self.schedulerNames[0], "props_to_set": {"version": v, "tag": t, "recheck": True},
                 "unimportant": False} for v, t in self._todo]
