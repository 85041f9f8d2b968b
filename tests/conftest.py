"""Shared fixtures: the fixture upstream repo and the five variants built from it once."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.fixture_upstream import MIRROR
from testbed.fixture_upstream.make_repo import make_fixture_repo

# Importing buildbot.test (the step-harness tests do) turns every warning into
# an error for the rest of the session, and whether that happens before other
# test modules are collected depends on the pytest version. Buildbot 4.3's
# ssl helper warns at import time on Twisted >= 26.10, so import it first,
# while a deprecation is still only a warning.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import buildbot.util.ssl  # noqa: F401

    # autobahn (imported by buildbot.test) imports passlib when argon2 is
    # installed, and passlib imports the deprecated crypt module if present.
    with contextlib.suppress(ImportError):
        import crypt  # noqa: F401

FIXTURE_TAGS = ["v0.11.1", "v0.11.2", "v0.12.0"]


@pytest.fixture(scope="session")
def fixture_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo of the fixture vLLM tree tagged like upstream; HEAD at v0.12.0. Do not modify it."""
    return make_fixture_repo(tmp_path_factory.mktemp("upstream") / "vllm", FIXTURE_TAGS)


@dataclass
class BuiltVariant:
    package: str
    src: Path
    wheel: Path | None
    result: object  # vllm_cpu_build.results.BuildResult
    log: str
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def built_variants(fixture_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltVariant]:
    """Every variant of v0.12.0 patched and built once per session (x86_64 hosts only)."""
    from vllm_cpu_build import build, patch
    from vllm_cpu_build.hostcpu import host_arch
    from vllm_cpu_build.variants import load

    if host_arch() != "x86_64":
        pytest.skip("the five-variant build runs on x86_64 hosts")
    root = tmp_path_factory.mktemp("built")
    out: dict[str, BuiltVariant] = {}
    for variant in load().for_release("0.12.0"):
        src = root / variant.short / "src"
        shutil.copytree(fixture_repo, src, symlinks=True)
        t0 = time.monotonic()
        patch.patch_tree(src, variant, "x86_64", "0.12.0")
        t1 = time.monotonic()
        log = io.StringIO()
        res = build.build(build.BuildOptions(variant, src, root / variant.short / "dist", log=log,
                                               fetch_mirror=MIRROR))
        t2 = time.monotonic()
        out[variant.package] = BuiltVariant(variant.package, src, Path(res.wheel), res, log.getvalue(),
                                            {"patch": t1 - t0, "build": t2 - t1})
    return out


@pytest.fixture(scope="session")
def arm_root(tmp_path_factory: pytest.TempPathFactory):
    """The one emulated arm64 root of a test run (testbed/aarch64_host.py) and its toolchain interpreter.

    Shared by tests/real/test_aarch64_emulated.py and the arm64 worker of
    tests/e2e/test_publish_e2e.py; a test using it needs
    ``@pytest.mark.timeout(ARM_ROOT_TIMEOUT)`` (its first user pays for a cold cache).
    """
    from master.toolchain import build_tarball
    from testbed import aarch64_host

    why = aarch64_host.unavailable()
    if why:
        pytest.skip(f"no emulated aarch64 host: {why}")
    tmp = tmp_path_factory.mktemp("aarch64")
    with aarch64_host.EmulatedRoot(tmp) as root:
        py = root.install_toolchain(build_tarball(tmp / "toolchain"))
        yield root, py
