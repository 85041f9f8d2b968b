"""``[build] reproduce``: the setting, the master's wiring, and the master's check of a rebuilt wheel.

The rebuild itself on two real workers is tests/e2e/test_reproduce_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from buildbot.plugins import schedulers as bb_schedulers

from farm import rebuild, settings
from farm.names import builder_name, reproduce_builder, reproduce_trigger
from master import reproduce
from master.config import build_config
from steps.reproduce import RebuildWheel, ReproduceWheels
from steps.toolchain import BuildWheel
from tests.wheelkit import compile_shared, make_wheel
from vllm_cpu_build.files import sha256_of
from workers import registry

REPO = Path(__file__).resolve().parents[2]


def _reproducing() -> settings.Settings:
    return settings.replace(settings.Settings(), build=settings.Build(reproduce=True))


def _steps(factory: Any) -> list[Any]:
    return [s.buildStep() for s in factory.steps]


def test_reproduce_is_off_by_default_and_only_a_boolean(tmp_path: Path) -> None:
    assert settings.Settings().build.reproduce is False
    assert settings.load(REPO / "master" / "settings.example.toml").build.reproduce is False
    f = tmp_path / "s.toml"
    f.write_text("[build]\nreproduce = true\n")
    assert settings.load(f).build.reproduce is True
    assert "reproduce = true" in settings.to_toml(settings.load(f))
    for bad in ('"yes"', "1", '"true"'):
        f.write_text(f"[build]\nreproduce = {bad}\n")
        with pytest.raises(settings.SettingsError, match=r"build\.reproduce: must be true or false"):
            settings.load(f)


def test_without_reproduce_nothing_changes(tmp_path: Path) -> None:
    c = build_config(settings.Settings(), tmp_path)
    names = [b.name for b in c["builders"]]
    assert not [n for n in names if n.startswith("reproduce-")]
    assert all(not b.locks for b in c["builders"])
    entries = {e.name: e for e in registry.load(registry.DEFAULT_PATH)}
    assert {w.name: w.max_builds for w in c["workers"] if w.name in entries} == \
        {n: e.max_builds for n, e in entries.items()}
    variant = next(b for b in c["builders"] if b.name == builder_name("vllm-cpu", "x86_64"))
    assert "reproduce" not in [s.name for s in _steps(variant.factory)]


def test_reproduce_rebuilds_after_the_checks_and_before_upload(tmp_path: Path) -> None:
    c = build_config(_reproducing(), tmp_path)
    builders = {b.name: b for b in c["builders"]}
    entries = registry.load(registry.DEFAULT_PATH)
    by_arch = {a: [e.name for e in entries if e.arch == a] for a in ("x86_64", "aarch64")}
    for arch in ("x86_64", "aarch64"):
        rb = builders[reproduce_builder(arch)]
        assert rb.workernames == by_arch[arch] and rb.nextWorker is reproduce.next_worker and not rb.locks
        assert [s.name for s in _steps(rb.factory)] == [
            "title", "checkout_tag", "ship_toolchain", "patch", "wheels_to_build",
            "fetch_rebuilt", "compare"]
    trig = {s.name: s for s in c["schedulers"] if isinstance(s, bb_schedulers.Triggerable)}
    assert trig[reproduce_trigger("x86_64")].builderNames == [reproduce_builder("x86_64")]
    # Every variant build holds one of its worker's max_builds slots; the worker has one more for rebuilds.
    slots = {e.name: e.max_builds for e in entries}
    on_workers = [b for b in builders.values() if set(b.workernames) & set(slots)]
    assert len(on_workers) > len(by_arch) + 5  # variant builders, readiness, and the reproduce ones
    for v in on_workers:
        if v.name.startswith("reproduce-"):
            continue
        [lock] = v.locks
        assert (lock.lockid.name, lock.mode, lock.lockid.maxCountForWorker) == (reproduce.SLOTS, "counting", slots)
    assert {w.name: w.max_builds for w in c["workers"] if w.name in slots} == {n: m + 1 for n, m in slots.items()}
    steps = _steps(builders[builder_name("vllm-cpu", "x86_64")].factory)
    names = [s.name for s in steps]
    assert names[names.index("fetch_wheels"):][:3] == ["fetch_wheels", "reproduce", "upload"]
    trigger = steps[names.index("reproduce")]
    assert isinstance(trigger, ReproduceWheels) and trigger.schedulerNames == [reproduce_trigger("x86_64")]
    assert trigger.waitForFinish and trigger.haltOnFailure


def test_a_rebuild_has_ccache_off_and_queues_no_checks() -> None:
    again = RebuildWheel(python=None, cli_args=[])
    assert again.env["CCACHE_RECACHE"] == "1" and again.checks("out/x.whl") == []
    first = BuildWheel(python=None, cli_args=[])
    assert "CCACHE_RECACHE" not in first.env
    assert [s.name for s in first.checks("out/vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl")] == [
        "verify_cp38-abi3", "smoke_cp38-abi3"]


class _Wfb:
    """A worker-for-builder as Buildbot's distributor hands it to ``nextWorker``: its worker and state."""

    def __init__(self, name: str, busy: int) -> None:
        self.worker = self
        self.workername = name
        self.workerforbuilders = {i: self for i in range(busy)}

    def isBusy(self) -> bool:  # noqa: N802 - Buildbot's name
        return True


class _Request:
    def __init__(self, worker: str | None) -> None:
        from buildbot.process.properties import Properties

        self.properties = Properties()
        if worker:
            self.properties.setProperty("reproduce_of", {"builder": "b", "number": 1, "worker": worker}, "Trigger")


def test_the_rebuild_goes_to_another_worker_when_one_is_connected() -> None:
    a, b, c = _Wfb("a", 1), _Wfb("b", 1), _Wfb("c", 0)
    assert reproduce.next_worker(None, [a, b, c], _Request("a")) is c  # another, the idle one first
    assert reproduce.next_worker(None, [a, b], _Request("a")) is b  # another, though busy
    assert reproduce.next_worker(None, [a], _Request("a")) is a  # the only one: the same worker
    assert reproduce.next_worker(None, [], _Request("a")) is None


def _wheel(d: Path, so: bytes) -> Path:
    return make_wheel(d, "vllm-cpu", "0.12.0", {"vllm/__init__.py": b"", "vllm/_C.abi3.so": so})


def test_the_master_compares_the_received_bytes_with_the_recorded_sha256(tmp_path: Path) -> None:
    so = compile_shared("int f(void) { return 1; }\n", tmp_path / "a" / "m.so").read_bytes()
    first = _wheel(tmp_path / "first", so)
    same = _wheel(tmp_path / "same", so)
    assert sha256_of(first) == sha256_of(same)
    [ok] = rebuild.check({first.name: sha256_of(first)}, same.parent, first.parent)
    assert ok.identical and ok.line() == f"{first.name}: same bytes (sha256 {sha256_of(first)})"
    [gone] = rebuild.check({first.name: sha256_of(first)}, tmp_path / "nothing", first.parent)
    assert not gone.identical and "made no wheel" in gone.line()
    other = _wheel(tmp_path / "other", so.replace(b"GCC", b"gcc"))
    [dry] = rebuild.check({first.name: sha256_of(first)}, other.parent, None)
    assert not dry.identical and dry.b == sha256_of(other) and "sha256 only" in dry.note
    # Round trip through the build property the variant build reads.
    assert rebuild.Outcome.from_json(dry.to_json()) == dry
    # The first wheel on the master too: the master's own compare names the member and the ELF section.
    noisy = compile_shared("__attribute__((used)) static const unsigned long long noise = 0x1234567ULL;\n"
                           "int f(void) { return 1; }\n", tmp_path / "b" / "m.so").read_bytes()
    other = _wheel(tmp_path / "noisy", noisy)
    log: list[str] = []
    [bad] = rebuild.check({first.name: sha256_of(first)}, other.parent, first.parent, log=log.append)
    assert not bad.identical and (bad.a, bad.b) == (sha256_of(first), sha256_of(other))
    [so_diff] = [d for d in bad.differences if d.member == "vllm/_C.abi3.so"]
    assert so_diff.kind == "content" and ".rodata" in so_diff.sections, bad
    assert "differs: " in bad.line() and "vllm/_C.abi3.so (" in bad.line() and ".rodata" in bad.line()
    assert "compare" in log[0] and '"kind": "compare"' in log[1]  # the command and its report, for the log
