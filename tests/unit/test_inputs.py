"""The trust boundary (farm/inputs.py): every property the build reads is listed, none from a change.

The property names are read from the source of the steps, factories and
the release report (tests/inputs_scan.py), so a new read shows up here
without anyone listing it.  Then a real in-process Buildbot master runs a
build from a change that carries every one of those names as a property:
the build sees none of them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from buildbot.config import BuilderConfig
from buildbot.plugins import schedulers, steps
from buildbot.process.properties import Properties
from buildbot.test.util.integration import RunMasterBase
from twisted.internet import defer

from farm import inputs
from master.factories import Factory
from steps.trusted import TrustedBuild
from tests.inputs_scan import READS


def test_the_scan_sees_the_properties_that_decide_what_runs() -> None:
    # If the scan broke, every later assertion would hold vacuously.
    assert {"worker_python", "toolchain_python", "tag", "branch", "version", "versions", "variants", "arches",
            "python_versions", "pythons", "postfix", "dry_run", "skip_upload", "duplicate_of", "plan", "todo",
            "wheels", "builddir", "variant", "arch", "abi3"} <= set(READS), sorted(READS)


def test_every_property_read_is_listed_and_none_comes_from_a_change() -> None:
    missing = {name: where for name, where in READS.items() if name not in inputs.INPUTS}
    assert not missing, f"add these to farm/inputs.py INPUTS (with their trusted origins): {missing}"
    from_change = [name for name, i in inputs.INPUTS.items() if inputs.CHANGE in i.origins]
    assert from_change == []


def test_untrusted_origins_are_dropped_and_trusted_ones_kept() -> None:
    props = Properties()
    for name in READS:
        props.setProperty(name, "/tmp/evil", inputs.CHANGE)
    props.setProperty("virtual_builder_name", "spoofed", inputs.CHANGE)
    dropped = inputs.drop_untrusted(props)
    assert props.asList() == []
    assert sorted(dropped) == sorted(f"{n} ({inputs.CHANGE})" for n in [*READS, "virtual_builder_name"])
    # Each name keeps a value from an origin listed for it, and loses it from any other.
    for name, entry in inputs.INPUTS.items():
        for origin in [*entry.origins, "Unknown", "TEST", inputs.CHANGE]:
            p = Properties()
            p.setProperty(name, "x", origin)
            inputs.drop_untrusted(p)
            assert (name in p) == (origin in entry.origins), (name, origin)


def test_every_builder_starts_trusted_builds(tmp_path: Path) -> None:
    from farm import settings
    from master.config import build_config

    c = build_config(settings.Settings(), tmp_path)
    assert c["builders"] and all(b.factory.buildClass is TrustedBuild for b in c["builders"])


class ChangePropertiesNeverReachABuild(RunMasterBase):
    """A real (in-process) Buildbot master: a change carrying every property name the steps read."""

    def mktemp(self) -> str:
        # trial's own mktemp writes under the current directory (the repository).
        d = tempfile.mkdtemp(prefix="vllm-cpu-inputs-")
        self.addCleanup(shutil.rmtree, d, True)
        return str(Path(d) / "master")

    @defer.inlineCallbacks
    def test_change_properties_are_dropped_before_the_first_step(self):
        f = Factory()
        f.addStep(steps.SetPropertyFromCommand(command="echo ran", property="probe_ran"))
        yield self.setup_master({
            "builders": [BuilderConfig(name="probe", workernames=["local1"], factory=f)],
            "schedulers": [schedulers.AnyBranchScheduler(name="tags", builderNames=["probe"], treeStableTimer=None)],
        })
        evil = {name: "/tmp/evil" for name in READS}
        build = yield self.doForceBuild(wantProperties=True, useChange={
            "branch": "v0.12.0", "category": "tag", "repository": "upstream", "project": "vllm", "author": "x",
            "comments": "poisoned", "files": [], "properties": evil})
        props = build["properties"]
        assert props["probe_ran"][0] == "ran"
        from_change = sorted(n for n, (_, origin) in props.items() if origin == inputs.CHANGE)
        assert from_change == []
        assert sorted(props[inputs.IGNORED][0]) == sorted(f"{n} ({inputs.CHANGE})" for n in READS)
        # What Buildbot itself sets from the change's source stamp is still there, from its own origin.
        assert tuple(props["branch"]) == ("v0.12.0", inputs.BUILD)
        assert props["builddir"][1] == inputs.WORKER and props["builddir"][0] != "/tmp/evil"
