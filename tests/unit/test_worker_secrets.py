"""Build and publish apart, for every builder: no worker step gets a publishing credential.

The master config is built as ``master.cfg`` builds it (``build_config``),
with every publisher on: per-package index tokens, GitHub releases and
images with registry credentials, readiness builds.  Every step factory of
every builder is walked, arguments and keyword arguments (``env``,
``command``, ``cli_args``, the argument lists the queueing steps hand to the
steps they add) and the step they make, through lists, dicts, closures of
renderers (``util.renderer``), ``Interpolate`` (``%(secret:...)s``) and
``functools.partial``.  The publishing secrets may appear only in the two
master-side steps that use them (``upload``: its package's index token;
``github_release``: the GitHub token) and in the one documented exception:
the images builder ships the registries' ``auth.json`` to its worker
(master/README.md, "Security model").
"""

from __future__ import annotations

import functools
import types
from pathlib import Path
from typing import Any

import pytest
from buildbot.plugins import util
from buildbot.process import buildstep, properties
from buildbot.steps.master import MasterShellCommand
from buildbot.steps.shell import ShellCommand
from buildbot.steps.source.base import Source
from buildbot.steps.transfer import StringDownload, _TransferBuildStep
from buildbot.steps.worker import CompositeStepMixin, WorkerBuildStep

from farm import settings
from farm.names import IMAGES
from steps import publish, publisher
from vllm_cpu_build.variants import load

# Anything that sends a command to the worker: shell commands, file transfers, checkouts, file operations.
WORKER_SIDE = (buildstep.ShellMixin, ShellCommand, _TransferBuildStep, Source, CompositeStepMixin, WorkerBuildStep)
OURS = ("steps.", "master.", "farm.", "buildbot.process.properties")
MADE_INSIDE = "a secret made inside "  # + a function's name: code that builds a Secret when it runs


def _made_inside(code: types.CodeType) -> set[str]:
    """A function that makes a Secret or an ``%(secret:...)s`` when it runs: its name and string constants."""
    texts = {c for c in code.co_consts if isinstance(c, str)}
    out = {MADE_INSIDE + code.co_qualname, *texts} if "Secret" in code.co_names or any(
        "%(secret:" in t for t in texts) else set()
    return out.union(*(_made_inside(c) for c in code.co_consts if isinstance(c, types.CodeType)))


def secrets_in(value: Any, seen: set[int] | None = None) -> set[str]:
    """Every secret name ``value`` can render, however it is wrapped."""
    seen = set() if seen is None else seen
    if id(value) in seen or value is None or isinstance(value, str | bytes | int | float | bool | Path):
        return set()
    seen.add(id(value))
    walk = functools.partial(secrets_in, seen=seen)
    if isinstance(value, properties.Secret):
        return {value.secret_name}
    if isinstance(value, properties.Interpolate):
        named = {k.split(":", 1)[1] for k in value.interpolations if k.startswith("secret:")}
        return named | walk(value.args) | walk(value.kwargs)
    if isinstance(value, dict):
        return set().union(*(walk(k) | walk(v) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return set().union(*(walk(v) for v in value))
    if isinstance(value, functools.partial):
        return walk(value.func) | walk(value.args) | walk(value.keywords)
    if isinstance(value, types.MethodType):
        return walk(value.__func__)
    if isinstance(value, types.FunctionType):
        cells = [c.cell_contents for c in value.__closure__ or () if c.cell_contents is not value]
        return _made_inside(value.__code__) | walk(cells) | walk(value.__defaults__) | walk(value.__kwdefaults__)
    if type(value).__module__.startswith(OURS) and hasattr(value, "__dict__"):
        return walk(vars(value))  # renderers (util.renderer's fn), Transform, our own helpers
    return set()


def publishing_settings() -> settings.Settings:
    """Every publisher on, each credential under a secret name of its own."""
    return settings.Settings(
        index=settings.Index(token_secret="index-token-{short}"),
        github=settings.GitHub(enabled=True, repository="example/vllm-cpu", token_secret="github-token"),
        images=settings.Images(enabled=True, repositories=("ghcr.io/example/vllm-cpu",), auth_secret="registry-auth"),
    )


def publishing_secrets(s: settings.Settings) -> set[str]:
    return {s.index.token_for(v.short) for v in load().variants} | {s.github.token_secret, s.images.auth_secret}


def step_secrets(sf: Any) -> set[str]:
    """Secrets in a step factory's arguments and in the step it makes (its defaults: env, command...)."""
    return secrets_in([sf.args, sf.kwargs]) | secrets_in(vars(sf.buildStep()))


@pytest.fixture(scope="module")
def builders(tmp_path_factory: pytest.TempPathFactory) -> tuple[settings.Settings, list]:
    from master.config import build_config

    s = publishing_settings()
    return s, build_config(s, tmp_path_factory.mktemp("master"))["builders"]


def test_no_worker_step_of_any_builder_gets_a_token(builders: tuple[settings.Settings, list]) -> None:
    s, configs = builders
    publishing = publishing_secrets(s)
    short = {v.package: v.short for v in load().variants}
    seen_on_master: dict[str, set[str]] = {}
    on_workers = []  # (builder, step, secrets): a worker step with a publishing secret
    variant_builders = 0
    for b in configs:
        classes = [sf.step_class for sf in b.factory.steps]
        for sf in b.factory.steps:
            every = step_secrets(sf)
            assert not [x for x in every if x.startswith(MADE_INSIDE)], (b.name, sf.step_class, every)
            found = every & publishing
            name = sf.kwargs.get("name") or getattr(sf.step_class, "name", "")
            if issubclass(sf.step_class, WORKER_SIDE):
                if found:
                    on_workers.append((b.name, name, found))
                continue
            seen_on_master.setdefault(sf.step_class.__name__, set()).update(found)
            if sf.step_class is publisher.PublishWheels:  # the master's own process: its package's token only
                assert issubclass(sf.step_class, MasterShellCommand)
                assert found == {s.index.token_for(short[sf.kwargs["variant"]])}, (b.name, found)
            elif sf.step_class is publish.GitHubRelease:  # the master's own HTTPS client
                assert found == {s.github.token_secret}, (b.name, found)
            else:
                assert not found, (b.name, sf.step_class, found)
        if publisher.PublishWheels in classes:
            variant_builders += 1
            # The wheels reach the master before the master publishes them; nothing runs on the worker after.
            assert classes.index(publisher.FetchWheels) == classes.index(publisher.PublishWheels) - 1, classes
    assert variant_builders == sum(len(v.arches) for v in load().variants)
    # Every token is used somewhere (the walk sees them), and only on the master.
    assert seen_on_master["PublishWheels"] == publishing - {s.github.token_secret, s.images.auth_secret}
    assert seen_on_master["GitHubRelease"] == {s.github.token_secret}
    assert {n for n in (b.name for b in configs) if n.startswith("readiness-")}, "readiness builders are walked"
    # The single documented exception: the images builder's worker gets the registries' auth.json.
    assert on_workers == [(IMAGES, "registry_credentials", {s.images.auth_secret})], on_workers


def test_the_one_exception_is_a_private_file_for_one_build(builders: tuple[settings.Settings, list]) -> None:
    """The images worker gets auth.json as a 0600 file (never on a command line), removed at the end
    whatever happened, and the images builder itself never checks out or builds upstream's code."""
    _, configs = builders
    [images] = [b for b in configs if b.name == IMAGES]
    steps = {sf.kwargs.get("name"): sf for sf in images.factory.steps}
    creds = steps["registry_credentials"]
    assert creds.step_class is StringDownload and creds.kwargs["mode"] == 0o600
    forget = steps["forget_credentials"]
    assert forget.kwargs["alwaysRun"] and forget.kwargs["command"] == ["rm", "-f", creds.kwargs["workerdest"]]
    assert [sf.kwargs.get("name") for sf in images.factory.steps][-1] == "forget_credentials"
    assert not [sf for sf in images.factory.steps if issubclass(sf.step_class, Source)]
    assert "upstream" not in repr([sf.kwargs for sf in images.factory.steps])


def test_without_registry_credentials_no_worker_step_has_any_token(tmp_path: Path) -> None:
    from dataclasses import replace

    from master.config import build_config

    s = publishing_settings()
    s = replace(s, images=replace(s.images, auth_secret=""))
    for b in build_config(s, tmp_path)["builders"]:
        for sf in b.factory.steps:
            if issubclass(sf.step_class, WORKER_SIDE):
                assert not step_secrets(sf) & publishing_secrets(s), (b.name, sf.step_class)


def test_the_walk_finds_secrets_however_they_are_wrapped() -> None:
    """The walk is what the tests above rely on: a token hidden in any renderable is found."""

    @util.renderer
    def hidden(props):  # type: ignore[no-untyped-def]
        return ["--token", properties.Secret("in-a-closure")]

    def args(*parts: Any) -> Any:
        @util.renderer
        def render(props):  # type: ignore[no-untyped-def]
            return list(parts)
        return render

    step = ShellCommand(command=["twine", args("--password", util.Interpolate("%(secret:interpolated)s"))],
                        env={"TWINE_PASSWORD": properties.Secret("in-env"), "X": hidden},
                        workdir=util.Transform(str, properties.Secret("transformed")))
    found = secrets_in(vars(step))
    assert {"in-a-closure", MADE_INSIDE + hidden.fn.__qualname__, "interpolated", "in-env", "transformed"} <= found
    assert not [x for x in found if x.startswith(MADE_INSIDE + args.__qualname__)]  # only passes them on
    assert secrets_in(functools.partial(print, properties.Secret("partial"))) == {"partial"}
    assert secrets_in(util.Interpolate("%(prop:version)s", x=util.Interpolate("%(secret:nested)s"))) == {"nested"}
    assert secrets_in([util.Property("token"), "index-token", util.Interpolate("%(prop:secret)s")]) == set()
