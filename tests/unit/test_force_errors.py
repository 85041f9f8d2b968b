"""The force forms answer with every field's error at once, each under its own field name."""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
from pathlib import Path

from buildbot.schedulers.forcesched import CollectedValidationError
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.util.scheduler import SchedulerMixin
from twisted.internet import defer
from twisted.trial import unittest

from farm import settings
from master import schedulers
from master.tags import UpstreamTags
from vllm_cpu_build import variants


def upstream_with_tags(root: Path, *tags: str) -> str:
    """A real git repository with release tags (what ``git ls-remote`` of the upstream lists)."""
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    for t in tags:
        subprocess.run([*git, "tag", t], check=True)
    return str(root)


class ForceErrors(SchedulerMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.setup_test_reactor()
        yield self.setUpScheduler()
        self.tmp = Path(tempfile.mkdtemp(prefix="force-errors-"))
        s = settings.load(None)
        s = dataclasses.replace(s, upstream=dataclasses.replace(
            s.upstream, url=upstream_with_tags(self.tmp / "up", "v0.11.1", "v0.11.2")))
        self.catalog = variants.load()
        self.sched = schedulers.make_force(s, self.catalog, UpstreamTags(s.upstream))
        yield self.attachScheduler(self.sched, objectid=11, schedulerid=21, overrideBuildsetMethods=True,
                                   createBuilderDB=True)
        yield self.sched.configureService()

    @defer.inlineCallbacks
    def errors(self, **kwargs) -> defer.Deferred:
        try:
            yield self.sched.force("someone", builderNames=None, builderid=None, **kwargs)
        except CollectedValidationError as exc:
            return dict(exc.errors)
        return {}

    @defer.inlineCallbacks
    def test_two_bad_text_fields_are_both_reported(self):
        got = yield self.errors(versions="0.99.0", python_versions="2.7", reason="x")
        assert set(got) == {"versions", "python_versions"}, got
        assert "0.99.0" in got["versions"] and "2.7" in got["python_versions"]

    @defer.inlineCallbacks
    def test_a_type_error_and_a_bad_value_are_both_reported(self):
        got = yield self.errors(versions="nonsense", postfix="-x", dry_run="yes", variants=["vllm-cpu"])
        assert set(got) == {"versions", "postfix", "dry_run"}, got

    @defer.inlineCallbacks
    def test_a_missing_version_and_a_bad_list(self):
        got = yield self.errors(versions="", arches=["sparc"])
        assert set(got) == {"versions", "arches"}, got

    @defer.inlineCallbacks
    def test_a_good_request_is_queued(self):
        got = yield self.errors(versions="0.11.2", variants=["vllm-cpu"], arches=["x86_64"])
        assert got == {}
        assert len(self.addBuildsetCalls) == 1


def test_the_ui_page_gets_the_error_style_once() -> None:
    from master import uistyle

    page = b"<html><head><title>Buildbot</title></head><body></body></html>"
    styled = uistyle.with_style(page)
    assert styled.count(b"<style id=\"vllm-cpu-style\">") == 1 and styled.index(b"<style") < styled.index(b"</head>")
    assert b".bb-force-build-modal-field-error" in styled and b"has-error" in styled
    assert uistyle.with_style(styled) == styled
    uistyle.install()
    uistyle.install()
    assert uistyle.installed()
