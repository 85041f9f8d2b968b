"""Build and publish apart: the worker hands its wheels over, the master verifies and publishes them.

``FetchWheels`` brings the wheels a build made from the worker into the
build's custody directory on the master (Buildbot's file transfer; 0700
directory, 0600 files).  ``PublishWheels`` then runs ``vllm-cpu-build
upload`` as a master-side process from the master's own toolchain, with
the sha256 each build recorded: received bytes that differ are refused
with both hashes, ``verify`` runs again on exactly those bytes, and the
hash is pinned from verify to twine.  The index token is rendered from its
secret into that process's environment only: no worker step ever gets it.
The plain parts (names, paths, the command) are ``farm.handover``.
"""

from __future__ import annotations

import codecs
from collections.abc import Generator
from pathlib import Path
from typing import Any

from buildbot.steps.master import MasterShellCommand
from buildbot.steps.transfer import MultipleFileUpload
from buildbot.util import runprocess
from twisted.internet import defer, reactor, threads

from farm import handover
from farm.states import CANCELLED, FAILURE, SKIPPED, SUCCESS
from steps import custody
from steps.attached import Attached
from steps.summary import BuildSummary
from vllm_cpu_build.errors import EXIT_OK, EXIT_USAGE
from vllm_cpu_build.results import ErrorResult, ResultError, UploadResult, parse_result

# Seconds the master's upload may stay silent (verify of a large wheel, twine sending it): a worker
# command's default.
IO_TIMEOUT = 1200


def _not_publishing(step: Any) -> str:
    """"DRY RUN" / "skip upload" when this build publishes nothing, else ""."""
    if step.getProperty("dry_run"):
        return "DRY RUN"
    return "skip upload" if step.getProperty("skip_upload") else ""


class _Custody(Attached):
    """The build's custody directory on the master."""

    def custody_path(self) -> Path:
        return handover.custody_dir(self.master.basedir, str(self.build.builder.name), int(self.build.number or 0))


class FetchWheels(_Custody, MultipleFileUpload):
    """The build's wheels from the worker into the master's custody directory (nothing else, no directories)."""

    name = "fetch_wheels"

    def __init__(self, package: str, **kwargs: Any) -> None:
        self.package = package
        kwargs.setdefault("haltOnFailure", True)
        super().__init__(workersrcs=[], masterdest=".", workdir=".", mode=0o600,
                         maxsize=handover.MAX_WHEEL_BYTES, **kwargs)

    def run(self) -> defer.Deferred[int]:
        mode = _not_publishing(self)
        if mode:
            self.descriptionDone = f"{mode}: nothing handed over"
            return defer.succeed(SKIPPED)
        return self._fetch()

    @defer.inlineCallbacks
    def _fetch(self) -> Generator[Any, Any, int]:
        ho, why = handover.handover(self.package, self.getProperty("wheels"), self.getProperty("built"))
        if ho is None:
            self.descriptionDone = f"nothing handed over: {why}"
            return FAILURE
        dest = self.custody_path()
        yield threads.deferToThread(handover.prepare, dest)
        self.workersrcs, self.masterdest = ho.sources, str(dest)
        result = yield super().run()
        if result != SUCCESS:
            yield threads.deferToThread(handover.discard, dest)
            self.descriptionDone = "wheels not received from the worker"
            return FAILURE if result != CANCELLED else CANCELLED
        self.descriptionDone = f"received {len(ho.sources)} wheel(s) on the master"
        return SUCCESS

    def uploadDirectory(self, source: str, masterdest: str) -> defer.Deferred[int]:
        # A wheel is a file: a worker that offers a directory gets nothing unpacked on the master.
        return defer.succeed(FAILURE)


class PublishWheels(BuildSummary, _Custody, MasterShellCommand):
    """``upload`` on the master, from its own toolchain, of exactly the wheels the build handed over."""

    name = "upload"

    def __init__(self, variant: str, repository_url: str, simple_url: str, username: str = "__token__",
                 token: Any = None, **kwargs: Any) -> None:
        self.variant, self.repository_url, self.simple_url = variant, repository_url, simple_url
        env: dict[str, Any] = {"TWINE_USERNAME": username, "PYTHONUNBUFFERED": "1"}
        if token is not None:
            env["TWINE_PASSWORD"] = token  # a util.Secret: rendered in this step only, redacted in logs
        kwargs.setdefault("logEnviron", False)
        kwargs.setdefault("haltOnFailure", True)
        super().__init__(command=[], env=env, **kwargs)

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        mode = _not_publishing(self)
        if mode:
            self.descriptionDone = f"{mode}: nothing uploaded"
            self.build_summary = f"{mode}, not uploaded"  # the build page says so, not only this step
            return SKIPPED
        built = dict(self.getProperty("built") or {})
        dest = self.custody_path()
        try:
            rc, out = yield self._publish(dest, built)
        finally:
            yield threads.deferToThread(handover.discard, dest)
        if self.stopped:
            self.descriptionDone = "upload interrupted"
            return CANCELLED
        outcome: int = yield self._interpret(rc, out)
        return outcome

    @defer.inlineCallbacks
    def _publish(self, dest: Path, built: dict[str, str]) -> Generator[Any, Any, tuple[int, str]]:
        """Run the master's ``upload``; (exit code, its stdout).  Its stderr is the step's log, secrets redacted."""
        argv = handover.publish_command(self.variant, self.repository_url, self.simple_url, built,
                                        [dest / name for name in sorted(built)])
        log = yield self.addLog("stdio")
        yield log.addHeader(" ".join(argv) + "\n\n** RUNNING ON BUILDMASTER, its own toolchain "
                                             f"{handover.MASTER_TOOLCHAIN} **\n")
        clean = self.build.properties.cleanupTextFromSecrets
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = bytearray()
        self.process = runprocess.create_process(
            reactor, argv, workdir=str(dest), env=self.env, collect_stdout=out.extend,
            collect_stderr=lambda data: self._deferwaiter.add(log.addStderr(clean(decoder.decode(data)))),
            io_timeout=IO_TIMEOUT, runtime_timeout=self.runtime_timeout)
        yield self.process.start()
        yield self._deferwaiter.wait()
        if out:
            yield self.addCompleteLog("result.json", clean(out.decode("utf-8", "replace")))
        rc = self.process.result_rc if self.process.result_signal is None else -1
        return rc, out.decode("utf-8", "replace")

    @defer.inlineCallbacks
    def _interpret(self, rc: int, out: str) -> Generator[Any, Any, int]:
        try:
            res = parse_result(out)
        except ResultError as exc:
            res, why = None, f"malformed result document: {exc}"
        else:
            why = res.error if isinstance(res, ErrorResult) else ""
        if rc != EXIT_OK or not isinstance(res, UploadResult):
            kind = "bad input" if rc == EXIT_USAGE else "failed"
            self.descriptionDone = f"upload {kind} (exit {rc})" + (f": {why}" if why else ": see stdio")
            return FAILURE
        for u in res.uploaded:
            yield self.addURL(u.file, u.url)
        for s in res.skipped:
            if s.url:
                yield self.addURL(f"{s.file} (already there)", s.url)
        self.setProperty("uploaded", [u.url for u in res.uploaded], "upload")
        # Chain of custody: exactly these bytes were verified and are what the index holds under the name.
        held = {u.file: u.sha256 for u in res.uploaded if u.sha256}
        held.update({s.file: s.sha256 for s in res.skipped if s.sha256})
        self.setProperty("custody", held, "upload")
        yield defer.ensureDeferred(custody.record(self.master, held, f"{self.build.builder.name} #{self.build.number}"))
        self.descriptionDone = summary(res)
        return SUCCESS


def summary(res: UploadResult) -> str:
    """``published 2 wheels (verified on master)``, plus what was not uploaded and why."""
    parts = []
    if res.uploaded:
        n = len(res.uploaded)
        parts.append(f"published {n} wheel{'s' if n != 1 else ''} (verified on master): "
                     + ", ".join(u.file for u in res.uploaded))
    if res.skipped:
        parts.append("not uploaded: " + ", ".join(f"{s.file} ({s.reason})" for s in res.skipped))
    return "; ".join(parts) or "nothing uploaded"


__all__ = ["FetchWheels", "PublishWheels", "summary"]
