"""Readiness builds: the target and version choice, the settings, the schedulers and builders, the matrix's
"next" rows and the mail, without a master (``tests/e2e/test_notify_e2e.py`` runs them on a real one)."""

from __future__ import annotations

import datetime
import re
import tempfile
import time
from pathlib import Path

import pytest
from buildbot.plugins import schedulers
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS

from farm import readiness, settings
from farm.states import CellState
from master import matrix, matrix_next, readiness_mail
from master import readiness as master_readiness
from master.tags import UpstreamTags
from steps import publisher, toolchain
from vllm_cpu_build import specs

REPO = Path(__file__).resolve().parents[2]
WEB = "http://bb.test/"
PATTERN = re.compile(settings.DEFAULT_TAG_REGEX)


def releases(*tags: str) -> dict[str, str]:
    """version -> tag as the master lists them (pre-releases included), through the one tag parser."""
    return specs.release_tags([f"refs/tags/{t}" for t in tags], PATTERN, prereleases=True)


@pytest.mark.parametrize(("version", "dev"), [("0.11.2", "0.11.3.dev0"), ("0.12", "0.12.1.dev0"),
                                              ("v0.10.1.1", "0.10.2.dev0")])
def test_the_branch_version_is_the_next_dev_after_a_release(version: str, dev: str) -> None:
    assert specs.next_dev_version(version) == dev


def test_targets_come_from_the_release_tags() -> None:
    tags = releases("v0.11.0rc1", "v0.11.2", "v0.11.1", "v0.12.0rc1", "v0.12.0rc2", "not-a-tag")
    branch = readiness.resolve(readiness.BRANCH, tags, "main")
    assert branch == readiness.Target("branch", "main", "0.11.3.dev0", "0.11.3.dev0: the next version after the "
                                      "newest release tag v0.11.2, with .dev0 (a branch has no version)")
    pre = readiness.resolve(readiness.PRERELEASE, tags, "main")
    assert isinstance(pre, readiness.Target) and (pre.ref, pre.version) == ("v0.12.0rc2", "0.12.0rc2")
    # A pre-release older than the newest release is history, not what comes next.
    old = readiness.resolve(readiness.PRERELEASE, releases("v0.11.0rc1", "v0.11.2"), "main")
    assert old == readiness.Nothing("prerelease", "no pre-release tag newer than the newest release v0.11.2")
    assert isinstance(readiness.resolve(readiness.BRANCH, releases("v0.12.0rc1"), "main"), readiness.Nothing)
    with pytest.raises(ValueError, match="unknown readiness target 'nightly'"):
        readiness.resolve("nightly", tags, "main")


def test_settings_default_on_and_bad_values_name_their_key() -> None:
    s = settings.parse({}, REPO)
    assert s.readiness.enabled and s.readiness.nightly and (s.readiness.hour, s.readiness.minute) == (3, 0)
    assert "readiness_failed" in s.notify.mail_events
    example = settings.load(REPO / "master" / "settings.example.toml")
    assert example.readiness.branch == "main" and "readiness_failed" in example.notify.mail_events
    for raw, key in [({"hour": 24}, "readiness.hour"), ({"minute": 60}, "readiness.minute"),
                     ({"branch": "a..b"}, "readiness.branch"), ({"branch": "-x"}, "readiness.branch"),
                     ({"hour": "3"}, "readiness.hour"), ({"when": 1}, "unknown key")]:
        with pytest.raises(settings.SettingsError, match=re.escape(key)):
            settings.parse({"readiness": raw}, REPO)


def _settings(**kw) -> settings.Settings:
    return settings.replace(settings.Settings(), readiness=settings.replace(settings.Settings().readiness, **kw))


def test_nightly_scheduler_and_button_start_both_targets() -> None:
    names = ["readiness-branch", "readiness-prerelease"]
    force, nightly = master_readiness.make_schedulers(_settings(hour=4, minute=30))
    assert force.name == "readiness-now" and force.builderNames == names
    assert isinstance(nightly, schedulers.Nightly) and nightly.builderNames == names
    # Buildbot's own Nightly computes the next start: 04:30 local time.
    nightly.reconfigService(**nightly._config_kwargs)  # what the master does when it starts the scheduler
    start = time.mktime(datetime.datetime(2026, 1, 1, 12, 0).timetuple())
    got = []
    nightly.getNextBuildTime(start).addCallback(got.append)
    assert datetime.datetime.fromtimestamp(got[0]) == datetime.datetime(2026, 1, 2, 4, 30)
    assert [s.name for s in master_readiness.make_schedulers(_settings(nightly=False))] == ["readiness-now"]
    assert master_readiness.make_schedulers(_settings(enabled=False)) == []
    assert master_readiness.builder_names(_settings(prerelease=False)) == ["readiness-branch"]


def test_the_factory_has_no_upload_and_runs_on_x86_64_workers() -> None:
    tags = UpstreamTags(settings.Settings().upstream)
    tarball = Path(tempfile.gettempdir()) / "tc.tar.gz"
    [branch, pre] = master_readiness.make_builders(settings.Settings(), {"x86_64": ["w1"], "aarch64": ["a1"]},
                                                   tarball, tags)
    assert (branch.name, pre.name) == ("readiness-branch", "readiness-prerelease")
    assert branch.workernames == ["w1"] and "never an upload" in branch.description
    classes = [s.step_class for s in branch.factory.steps]
    assert classes[0].__name__ == "ResolveReadiness"
    assert toolchain.PatchSource in classes and toolchain.QueueWheelBuilds in classes
    assert not {publisher.FetchWheels, publisher.PublishWheels} & set(classes)
    assert not [c for c in classes if "upload" in c.__name__.lower() or "publish" in c.__name__.lower()]


def _props(**kw) -> dict:
    return {k: [v, "test"] for k, v in kw.items()}


def _build(number: int, results: int | None, steps=(), **props) -> dict:
    return {"buildid": 100 + number, "builderid": 42, "number": number, "complete": results is not None,
            "results": results, "state_string": "x", "props": props, "properties": _props(**props),
            "steps": list(steps), "builder": "readiness-branch"}


MAIN = {"target": "branch", "ref": "main", "version": "0.11.3.dev0", "why": "0.11.3.dev0: the next version after "
        "the newest release tag v0.11.2, with .dev0 (a branch has no version)"}
PATCH = {"file": "cmake/cpu_extension.cmake", "expected": "exactly one  execute_process(COMMAND cat /proc/cpuinfo",
         "error": "cmake/cpu_extension.cmake: expected exactly one  execute_process(COMMAND cat /proc/cpuinfo"}
FAILED_PATCH = {"stepid": 5, "number": 6, "name": "patch", "results": FAILURE,
                "state_string": f"patch failed (exit 1): {PATCH['error']}"}


def test_next_rows_show_the_failed_file_and_a_green_ready_build() -> None:
    columns = (("vllm-cpu", "x86_64"), ("vllm-cpu", "aarch64"))
    failed = _build(3, FAILURE, [FAILED_PATCH], readiness=MAIN, patch_failure=PATCH, dry_run=True)
    ok = _build(4, SUCCESS, readiness={**MAIN, "ref": "v0.12.0rc1", "version": "0.12.0rc1"}, dry_run=True)
    skipped = _build(5, WARNINGS, readiness=MAIN, dry_run=True,
                     smoke={"w.whl": {"status": "skipped", "reason": "no AVX2"}})
    [bad, good, warn] = matrix_next.next_rows([failed, ok, skipped], columns, WEB)
    cell = bad.cells["vllm-cpu/x86_64"]
    assert bad.version == "next: main" and cell.state == CellState.FAILED
    assert cell.text == "#3 failure at patch: the patch no longer applies to cmake/cpu_extension.cmake"
    assert cell.error == FAILED_PATCH["state_string"] and cell.url.endswith("#/builders/42/builds/3/steps/6/logs/stdio")
    assert bad.release is not None and bad.release.text == f"readiness #3 (failure), as {MAIN['why']}"
    assert bad.cells["vllm-cpu/aarch64"].state == CellState.NOT_APPLICABLE
    assert good.version == "next: v0.12.0rc1" and good.cells["vllm-cpu/x86_64"].state == CellState.READY
    assert "0.12.0rc1 built, verified and smoke-tested; nothing uploaded" in good.cells["vllm-cpu/x86_64"].text
    assert warn.cells["vllm-cpu/x86_64"].state == CellState.READY and "no AVX2" in warn.cells["vllm-cpu/x86_64"].caveat
    running = matrix_next.cell(_build(6, None, [{"name": "build", "started_at": 1, "complete": False,
                                                 "state_string": "build running: 45%"}], readiness=MAIN), WEB)
    assert running.state == CellState.BUILDING and running.text == "#6 build: build running: 45%"
    nothing = matrix_next.next_rows([_build(7, SUCCESS)], columns, WEB)[0]
    assert nothing.version == "next: readiness-branch" and nothing.cells["vllm-cpu/x86_64"].state == CellState.NOT_BUILT
    m = matrix.Matrix(columns, (), 0, "http://index.test/simple/", next_rows=(bad, good))
    doc = matrix.to_json(m)
    assert [r["version"] for r in doc["next"]] == ["next: main", "next: v0.12.0rc1"] and "ready" in doc["states"]
    page = matrix.to_html(m, "m.json")
    assert '<tr class="next" data-version="next: main">' in page and 'data-state="ready"' in page


def test_the_mail_names_the_file_the_anchor_and_the_version() -> None:
    failed = _build(3, FAILURE, [FAILED_PATCH], readiness=MAIN, patch_failure=PATCH, dry_run=True)
    log = "patch vllm-cpu ...\nvllm-cpu-build patch: FAILED: " + PATCH["error"] + "\n"
    url = WEB + "#/builders/42/builds/3"
    subject, body = readiness_mail.format_readiness(failed, url, "farm", ("patch/stdio", log))
    assert subject == "[farm] readiness of main: FAILURE at patch: cmake/cpu_extension.cmake"
    assert body.startswith("readiness of main: vllm-cpu 0.11.3.dev0 x86_64: FAILURE at patch\n")
    assert f"  file:     {PATCH['file']}\n  expected: {PATCH['expected']}\n" in body
    assert f"version {MAIN['why']}" in body and "Upload: none" in body and url in body
    assert "Last lines of patch/stdio:" in body
