"""The build step hands the shared compile cache to the build: password from the secret, never shown.

Under Buildbot's own step harness (fake reactor, expected remote commands,
its secrets manager): the environment the worker gets, the summary, the
log's redaction, and a missing secret that costs the remote, not the build.
"""

from __future__ import annotations

import json

from buildbot.process.results import SUCCESS
from buildbot.test.steps import ExpectShell
from twisted.internet import defer

from farm.compile_cache import Cache
from steps import toolchain
from tests.unit.test_steps import ENV, PY, WHEEL, StepCase, cli
from vllm_cpu_build.results import BuildResult, CompileCache

PASSWORD = "Sx7-kd_93Qz"
SECRET = "ccache-redis"
REMOTE = "redis://10.0.0.5:6379|connect-timeout=500"
NAME = WHEEL.split("/")[-1]


def doc(cache: CompileCache | None) -> str:
    return json.dumps(BuildResult(WHEEL, True, "abi3", 12.4, {}, ["cp38-abi3-manylinux_2_28_x86_64"], [], PY,
                                  "g++", sha256="ab" * 32, compile_cache=cache).to_json())


class CacheStepCase(StepCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.setup_test_reactor()
        yield self.setup_test_build_step(with_secrets={SECRET: PASSWORD, "bad-secret": "pass word/with@"})
        self.added: list = []

    def expect_build(self, env: dict[str, str], stdout: str, stderr: str = "") -> None:
        self.expect_commands(ExpectShell(workdir=".", command=cli("build", "--variant", "vllm-cpu"), env=env,
                                         log_environ=False).stdout(stdout).stderr(stderr).exit(0))

    @defer.inlineCallbacks
    def test_each_queued_build_gets_the_cache(self):
        self.setup(toolchain.QueueWheelBuilds(build_args=["--variant", "vllm-cpu"],
                                                     cache=Cache(REMOTE, SECRET)), abi3=True)
        self.expect_outcome(SUCCESS, "queued one abi3 wheel")
        yield self.run_step()
        (queued,) = self.added
        self.assertEqual(queued.cache, Cache(REMOTE, SECRET))

    @defer.inlineCallbacks
    def test_build_step_environment_summary_and_redaction(self):
        step = self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu"], cache=Cache(REMOTE, SECRET)))
        url = f"redis://{PASSWORD}@10.0.0.5:6379|connect-timeout=500"
        cache = CompileCache(40, 40, 0, "redis://***@10.0.0.5:6379|connect-timeout=500", 40)
        # Whatever on the worker echoes the variable, the stdio log shows the secret's name instead.
        self.expect_build({**ENV, "CCACHE_REMOTE_STORAGE": url}, doc(cache), stderr=f"echo {url}\n")
        self.expect_outcome(SUCCESS, f"built {NAME} in 12s; ccache 40/40 hits (40 remote)")
        yield self.run_step()
        stdio = step.logs["stdio"]
        text = "".join(stdio.stderr) + "".join(stdio.header)
        self.assertNotIn(PASSWORD, text)
        self.assertIn(f"echo redis://<{SECRET}>@10.0.0.5:6379", text)

    @defer.inlineCallbacks
    def test_a_failed_remote_is_on_the_summary_of_a_successful_build(self):
        self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu"], cache=Cache(REMOTE, SECRET)))
        cache = CompileCache(40, 0, 40, "redis://***@10.0.0.5:6379", 0, 0, 40)
        self.expect_build({**ENV, "CCACHE_REMOTE_STORAGE": f"redis://{PASSWORD}@10.0.0.5:6379|connect-timeout=500"},
                          doc(cache))
        self.expect_outcome(SUCCESS, f"built {NAME} in 12s; ccache 0/40 hits; remote cache FAILED (40 error(s), "
                                     "0 timeout(s)): compiled without it, slower")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_missing_secret_builds_without_the_remote_and_warns(self):
        step = self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu"],
                                               cache=Cache(REMOTE, "no-such-secret")))
        self.expect_build(ENV, doc(CompileCache(40, 0, 40)))  # no CCACHE_REMOTE_STORAGE at all
        warning = ("remote compile cache off: secret 'no-such-secret' not found; building with the local cache "
                   "only")
        self.expect_outcome(SUCCESS, f"built {NAME} in 12s; ccache 0/40 hits; {warning}")
        yield self.run_step()
        self.assertIn(f"WARNING: {warning}\n", "".join(step.logs["stdio"].header))

    @defer.inlineCallbacks
    def test_a_password_a_url_cannot_carry_is_refused_without_showing_it(self):
        self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu"], cache=Cache(REMOTE, "bad-secret")))
        self.expect_build(ENV, doc(None))
        self.expect_outcome(SUCCESS, f"built {NAME} in 12s; remote compile cache off: secret 'bad-secret' unusable: "
                                     "the password must be letters, digits and -._~ only (ccache reads the URL as "
                                     "it is); building with the local cache only")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_remote_without_password(self):
        self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu"], cache=Cache("redis://10.0.0.5")))
        self.expect_build({**ENV, "CCACHE_REMOTE_STORAGE": "redis://10.0.0.5:6379"}, doc(None))
        self.expect_outcome(SUCCESS, f"built {NAME} in 12s")
        yield self.run_step()
