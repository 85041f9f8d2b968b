"""``make run``: the whole system on 127.0.0.1, releasing the newest fixture tag.

Starts, under ``.sandbox/``: a fixture upstream git repository, a pypiserver
package index, the Buildbot master (SQLite, web UI) and two local x86_64
workers.  Then it pushes the newest fixture release tag and lets the real
tag path (GitPoller) release it, printing progress and a final table read
from the REST API.  ``--once`` exits (0 when every x86_64 wheel is published
and installable from the local index); otherwise it serves until Ctrl-C.

``Sandbox`` is also what the end-to-end tests drive.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from farm import report
from farm.names import IMAGES
from farm.report import format_table
from farm.settings import ENV_VAR, REPO_ROOT
from master import matrix
from sandbox import http
from vllm_cpu_build.variants import load as load_variants
from workers import registry

BIN = Path(sys.executable).parent
# The fixture upstream's FetchContent mirror (testbed/fixture_upstream/__init__.py MIRROR): its AVX-512
# builds need it, as a production worker needs a oneDNN mirror to build offline.
FIXTURE_MIRROR = REPO_ROOT / "testbed" / "fixture_upstream" / "mirror"
SANDBOX_TAGS = ["v0.11.1", "v0.11.2"]  # present before the master starts
NEW_TAG = "v0.12.0"  # pushed once the master watches the upstream
RELEASE = "release"
WEBHOOK_SECRET = "upstream-webhook"  # secret name of the tag webhook's shared secret


def _port(preferred: int) -> int:
    """``preferred`` if free on 127.0.0.1, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def _say(msg: str) -> None:
    print(f"[sandbox {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Sandbox:
    def __init__(self, root: Path, tags: list[str] | None = None, web_port: int = 8010, worker_port: int = 9989,
                 index_port: int = 8089, poll_interval: int = 2, quiet: bool = False,
                 recheck_since: str = "", recheck_interval: int = 0, recheck_attempts: int | None = None,
                 users: dict[str, str] | None = None, admins: tuple[str, ...] = (),
                 max_builds_per_request: int | None = None,
                 github: bool = False, images: bool = False, image_arches: tuple[str, ...] = ("x86_64",),
                 worker_env: dict[str, str] | None = None) -> None:
        self.root = root.resolve()
        self.tags = list(SANDBOX_TAGS if tags is None else tags)
        self.web_port, self.worker_port, self.index_port = _port(web_port), _port(worker_port), _port(index_port)
        self.poll_interval = poll_interval
        self.quiet = quiet
        self.recheck_since = recheck_since
        self.recheck_interval = recheck_interval
        self.recheck_attempts = recheck_attempts  # None: the settings' default
        # Web login (the [www] table): user -> password, written hashed to a 0600 file.
        self.users = dict(users or {})
        self.admins = tuple(admins)
        self.max_builds_per_request = max_builds_per_request
        # Shared with whoever may post tags to /change_hook/github (the tests).
        self.webhook_secret = secrets.token_urlsafe(24)
        # github: a local GitHub stand-in (testbed/github_server.py) gets the releases;
        # images: two local OCI registries get the images, built from a base image of
        # image_arches; worker_env: extra environment of every process started here.
        self.want_github, self.want_images, self.image_arches = github, images, tuple(image_arches)
        self.github: dict | None = None  # {"api_url", "repository", "token"} once started
        self.images: dict | None = None  # {"repositories", "base_image", "tls_verify"} once started
        self.fake_github = None
        self.registries: list = []
        self.worker_env = dict(worker_env or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.upstream = self.root / "upstream"
        self.master_dir = self.root / "master"
        self.secrets_dir = self.root / "secrets"
        self.entries = registry.load(registry.DEFAULT_PATH)
        self.local_workers = [e for e in self.entries if e.name.startswith("local-")]
        self.session = requests.Session()
        # Uncompressed answers: under load, Buildbot 4.3 on Twisted 26.10 sometimes sends a gzip answer
        # on a kept-alive connection without its gzip header, which no client can decode.
        self.session.headers["Accept-Encoding"] = "identity"

    # ------------------------------------------------------------------ setup
    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.index_port}/"

    @property
    def simple_url(self) -> str:
        return self.index_url + "simple/"

    def log(self, msg: str) -> None:
        if not self.quiet:
            _say(msg)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # python3 = this venv's, with the toolchain deps
        env[ENV_VAR] = str(self.root / "settings.toml")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.worker_env)
        return env

    def _run(self, *cmd: str, cwd: Path | None = None) -> None:
        out = subprocess.run(list(cmd), cwd=cwd, env=self._env(), capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout}{out.stderr}")

    def _spawn(self, name: str, cmd: list[str], log: Path) -> None:
        fh = log.open("ab")
        self.procs[name] = subprocess.Popen(cmd, env=self._env(), stdout=fh, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def write_settings(self) -> None:
        if self.users:  # argon2 hashes, a secret like the others: mode 0600 in secrets_dir
            from master import users

            users.write(self.users_file, {u: users.hash_password(pw) for u, pw in self.users.items()})
        registry.write_secret(self.secrets_dir, WEBHOOK_SECRET, self.webhook_secret)
        attempts = "" if self.recheck_attempts is None else f"recheck_attempts = {self.recheck_attempts}\n"
        (self.root / "settings.toml").write_text(f"""\
# Written by the sandbox (sandbox/core.py): everything on 127.0.0.1.
[upstream]
url = "{self.upstream}"
webhook_secret = "{WEBHOOK_SECRET}"
poll_interval = {self.poll_interval}
recheck_interval = {self.recheck_interval}
recheck_since = "{self.recheck_since}"
{attempts}[build]
fetchcontent_mirror = "{FIXTURE_MIRROR}"
[index]
upload_url = "{self.index_url}"
simple_url = "{self.simple_url}"
username = "sandbox"
token_secret = "index-token"
[master]
title = "vllm-cpu sandbox"
web_url = "{self.web_url}"
web_port = {self.web_port}
worker_port = {self.worker_port}
db_url = "sqlite:///state.sqlite"
secrets_dir = "{self.secrets_dir}"
workers_registry = "{registry.DEFAULT_PATH}"
{self._www_settings()}{self._publish_settings()}""")

    def _publish_settings(self) -> str:
        out = ""
        if self.github:
            gh = self.github
            out += (f'[github]\nenabled = true\napi_url = "{gh["api_url"]}"\n'
                    f'repository = "{gh["repository"]}"\ntoken_secret = "github-token"\n')
        if self.images:
            im = self.images
            out += (f"[images]\nenabled = true\nrepositories = {json.dumps(list(im['repositories']))}\n"
                    f'base_image = "{im["base_image"]}"\ntorch_index_url = "{self.simple_url}"\n'
                    f"tls_verify = {'true' if im.get('tls_verify', True) else 'false'}\n")
        return out

    @property
    def users_file(self) -> Path:
        return self.secrets_dir / "www-users"

    def _www_settings(self) -> str:
        lines = []
        if self.users:
            lines += [f'users_file = "{self.users_file}"', f"admins = {json.dumps(list(self.admins))}"]
        if self.max_builds_per_request is not None:
            lines.append(f"max_builds_per_request = {self.max_builds_per_request}")
        return "[www]\n" + "\n".join(lines) + "\n" if lines else ""

    def start(self) -> None:
        from testbed.fixture_upstream.make_repo import make_fixture_repo

        t0 = time.monotonic()
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.log(f"state in {self.root}")
        make_fixture_repo(self.upstream, self.tags)
        self.log(f"fixture upstream {self.upstream} with tags {', '.join(self.tags)}")
        self._start_publishing()
        for e in self.entries:
            registry.write_secret(self.secrets_dir, e.secret_name, secrets.token_urlsafe(16))
        # pypiserver -a . accepts any password; a random one lets tests look for leaks.
        self.index_token = secrets.token_urlsafe(16)
        registry.write_secret(self.secrets_dir, "index-token", self.index_token)
        if self.github:
            registry.write_secret(self.secrets_dir, "github-token", self.github["token"])
        self.write_settings()

        index_dir = self.root / "index"
        index_dir.mkdir()
        self._spawn("index", [str(BIN / "pypi-server"), "run", "-p", str(self.index_port), "-i", "127.0.0.1",
                              "-a", ".", "-P", ".", "--disable-fallback", str(index_dir)], self.root / "index.log")
        self._wait_http(self.simple_url, "index")
        self.log(f"package index {self.index_url} (pypiserver)")
        if self.images:
            from sandbox.publish import detector_wheel

            detector_wheel(index_dir)  # the images install it (their entrypoint runs it)

        self._run(str(BIN / "buildbot"), "create-master", "-q", "-r", "--db", "sqlite:///state.sqlite",
                  "--config", str(REPO_ROOT / "master" / "master.cfg"), str(self.master_dir))
        self.start_master()
        for e in self.local_workers:
            wdir = self.root / "workers" / e.name
            wdir.parent.mkdir(exist_ok=True)
            self._run(str(BIN / "buildbot-worker"), "create-worker", "-q", "--umask=0o22", str(wdir),
                      f"127.0.0.1:{self.worker_port}", e.name, (self.secrets_dir / e.secret_name).read_text())
            (wdir / "info" / "admin").write_text(e.admin + "\n")
            self._spawn(f"worker {e.name}", [str(BIN / "buildbot-worker"), "start", "--nodaemon", str(wdir)],
                        self.root / f"worker-{e.name}.log")
        self._wait_ready()
        self.log(f"tag poller watching {self.upstream} every {self.poll_interval}s "
                 f"({time.monotonic() - t0:.1f}s setup)")

    def start_worker(self, name: str) -> None:
        """Create and start registry worker ``name`` on this host (e.g. ``arm64-1``, whatever its arch)."""
        entry = next(e for e in self.entries if e.name == name)
        wdir = self.root / "workers" / name
        if not wdir.exists():
            wdir.parent.mkdir(exist_ok=True)
            self._run(str(BIN / "buildbot-worker"), "create-worker", "-q", "--umask=0o22", str(wdir),
                      f"127.0.0.1:{self.worker_port}", name, (self.secrets_dir / entry.secret_name).read_text())
            (wdir / "info" / "admin").write_text(entry.admin + "\n")
        self._spawn(f"worker {name}", [str(BIN / "buildbot-worker"), "start", "--nodaemon", str(wdir)],
                    self.root / f"worker-{name}.log")
        self._until(lambda: name in self.connected_workers(), 60, f"worker {name} connects")
        self.log(f"worker {name} ({entry.arch}) connected")

    def _wait_ready(self) -> None:
        self._until(lambda: self.connected_workers() >= {e.name for e in self.local_workers}, 300, "workers connect")
        self.log(f"workers connected: {', '.join(sorted(self.connected_workers()))}")
        self._until(self._poller_has_baseline, 300, "the tag poller's first poll")

    @property
    def arm64_shared(self) -> tuple[Path, ...]:
        """Host directories the emulated arm64 worker sees at the same path: builds clone the upstream by
        its host path, and the FetchContent mirror is a worker path in the settings."""
        return (self.upstream, FIXTURE_MIRROR)

    def attach_arm64(self, root) -> float:
        """Provision the registry's aarch64 worker in the emulated ``root`` against this master; seconds."""
        from sandbox import arm64

        entry = next(e for e in self.entries if e.arch == "aarch64")
        secs = arm64.provision(root, entry.name, (self.secrets_dir / entry.secret_name).read_text(), self.worker_port,
                               shared=self.arm64_shared)
        self._until(lambda: entry.name in self.connected_workers(), 120, f"{entry.name} in the master's worker list")
        return secs

    def _start_publishing(self) -> None:
        """The local GitHub stand-in and the OCI registries with a base image, when asked for."""
        if self.want_github:
            from testbed.github_server import FakeGitHub

            self.fake_github = FakeGitHub(secrets.token_urlsafe(24))
            self.github = {"api_url": self.fake_github.api_url, "repository": self.fake_github.full_name,
                           "token": self.fake_github.token}
            self.log(f"GitHub stand-in {self.fake_github.api_url} (repository {self.fake_github.full_name})")
        if self.want_images:
            from sandbox.publish import OciRegistry, push_base_image, storage_conf

            conf = storage_conf(self.root / "containers-storage.conf", self.root / "containers")
            self.worker_env["CONTAINERS_STORAGE_CONF"] = str(conf)
            self.registries = [OciRegistry(self.root / f"registry-{i}") for i in (1, 2)]
            base = push_base_image(self.registries[0], list(self.image_arches), self._env(), log=self.log)
            self.images = {"repositories": [f"{r.host}/vllm-cpu" for r in self.registries], "base_image": base,
                           "tls_verify": False}
            self.log(f"OCI registries {', '.join(r.host for r in self.registries)} (docker-registry)")

    def start_master(self, wait_workers: bool = False) -> None:
        """Start the master on the existing basedir (state.sqlite and all); ``wait_workers``: until they are back."""
        self._spawn("master", [str(BIN / "buildbot"), "start", "--nodaemon", str(self.master_dir)],
                    self.root / "master.log")
        self._wait_http(self.web_url + "api/v2/builders", "master", timeout=120)
        self.log(f"master up, web UI {self.web_url}, release matrix {matrix.page_url(self.web_url)}")
        if wait_workers:
            self._wait_ready()

    def stop_master(self, timeout: float = 60) -> None:
        """Stop the master cleanly (SIGTERM, as ``buildbot stop``); workers and index keep running."""
        p = self.procs.pop("master", None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError(f"master did not stop within {timeout:.0f}s") from None
        self.log("master stopped")

    def _wait_http(self, url: str, what: str, timeout: float = 60) -> None:
        def up() -> bool:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}; see logs in {self.root}")
            try:
                return self.session.get(url, timeout=10).status_code < 500
            except requests.RequestException:
                return False

        self._until(up, timeout, f"{what} at {url}")

    @staticmethod
    def _until(cond, timeout: float, what: str, step: float = 0.3) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(step)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _poller_has_baseline(self) -> bool:
        """The GitPoller stored the tags it saw (so a tag pushed now is a change)."""
        db = self.master_dir / "state.sqlite"
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                rows = con.execute("SELECT s.value_json FROM object_state s JOIN objects o ON o.id = s.objectid "
                                   "WHERE o.class_name LIKE '%GitPoller%' AND s.name = 'lastRev'").fetchall()
        except sqlite3.Error:
            return False
        return any(json.loads(r[0]) for r in rows)

    def stop(self) -> None:
        for name in ["master", *[n for n in self.procs if n.startswith("worker")], "index"]:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        for reg in self.registries:
            reg.stop()
        self.registries = []
        if self.images:
            from sandbox.publish import release_storage

            release_storage(self.root / "containers", self._env())
        if self.fake_github is not None:
            self.fake_github.close()
            self.fake_github = None

    # --------------------------------------------------------------- the REST API
    def api(self, path: str, **params) -> list[dict]:
        data = http.get_json(self.session, self.web_url + "api/v2/" + path, params=params)
        key = [k for k in data if k != "meta"][0]
        return data[key]

    def force(self, scheduler: str = "force-release", builder: str | int | None = RELEASE,
              session: requests.Session | None = None, **params) -> requests.Response:
        """JSON-RPC ``force``; ``session``: e.g. one logged in (default: anonymous)."""
        if isinstance(builder, str):
            builder = self.builder_id(builder)
        if builder is not None:
            params["builderid"] = builder
        body = {"jsonrpc": "2.0", "method": "force", "id": 1, "params": params}
        url = self.web_url + f"api/v2/forceschedulers/{scheduler}"
        return (session or self.session).post(url, json=body, timeout=http.TIMEOUT)  # sent once: not idempotent

    def webhook(self, payload: dict | bytes, event: str = "push", secret: str | None = "",
                headers: dict[str, str] | None = None) -> requests.Response:
        """POST ``payload`` to ``/change_hook/github`` as GitHub does, signed with ``secret``
        ("" = the sandbox's own secret, None = unsigned)."""
        from master.webhook import signature

        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h = {"Content-Type": "application/json", "X-GitHub-Event": event}
        if secret is not None:
            h["X-Hub-Signature-256"] = signature((secret or self.webhook_secret).encode(), body)
        h.update(headers or {})
        return self.session.post(self.web_url + "change_hook/github", data=body, headers=h, timeout=60)

    def tag_push(self, tag: str, /, **extra) -> dict:
        """The payload GitHub sends when ``tag`` is pushed (the fields a push event has; ``extra`` added)."""
        return {"ref": f"refs/tags/{tag}", "before": "0" * 40, "after": "1" * 40, "created": True,
                "deleted": False, "forced": False, "base_ref": None, "commits": [],
                "head_commit": {"id": "1" * 40, "message": tag, "timestamp": "2026-11-29T00:00:00Z"},
                "repository": {"name": "vllm", "full_name": "vllm-project/vllm", "clone_url": str(self.upstream)},
                "pusher": {"name": "sandbox"}, **extra}

    def builder_id(self, name: str) -> int:
        return {b["name"]: b["builderid"] for b in self.api("builders")}[name]

    def builders(self) -> dict[int, str]:
        return {b["builderid"]: b["name"] for b in self.api("builders")}

    def connected_workers(self) -> set[str]:
        try:
            return {w["name"] for w in self.api("workers") if w["connected_to"]}
        except requests.RequestException:
            return set()

    def release_builds(self) -> list[dict]:
        return self.api(f"builders/{self.builder_id(RELEASE)}/builds", property="*", order="buildid")

    def _data(self, request: report.Request):
        """One data-API request of ``report.children`` over REST (same resource paths)."""
        path, filters = request
        data = http.get_json(self.session, self.web_url + "api/v2/" + "/".join(map(str, path)), params=filters)
        if path[-1] == "properties":  # {"properties": [{name: [value, source]}]}
            return (data["properties"] or [{}])[0]
        items = data[[k for k in data if k != "meta"][0]]
        single = len(path) % 2 == 0 and isinstance(path[-1], int)
        return (items[0] if items else None) if single else items

    def children(self, release_buildid: int) -> tuple[list[dict], list[dict]]:
        """(builds, pending build requests) a release build triggered (``farm.report.children``)."""
        gen = report.children(release_buildid)
        try:
            request = next(gen)
            while True:
                request = gen.send(self._data(request))
        except StopIteration as done:
            found = done.value
        builds = [c for c in found if "buildid" in c]
        pending = [{**c, "properties": report.flatten(c["properties"])} for c in found if "buildid" not in c]
        return builds, pending

    def matrix(self) -> dict:
        """The release matrix as JSON (``master/matrix.py``), from its documented URL."""
        return http.get_json(self.session, matrix.json_url(self.web_url))

    def buildset_properties(self, bsid: int) -> dict:
        return report.flatten(self._data((("buildsets", bsid, "properties"), {})))

    def buildrequests_total(self) -> int:
        return len(self.api("buildrequests"))

    def table(self, release_buildid: int) -> list[dict]:
        """The release's rows (``farm.report.child_row``: the same table the release build logs)."""
        builds, pending = self.children(release_buildid)
        rows = [report.child_row(c) for c in builds + pending]
        return sorted(rows, key=lambda r: (r["variant"], r["arch"]))

    # ------------------------------------------------------------- a release
    def push_tag(self, tag: str) -> float:
        from testbed.fixture_upstream.make_repo import add_release

        add_release(self.upstream, tag)
        return time.monotonic()

    def wait_release(self, version: str, after: int = 0, timeout: float = 900, progress: bool = False) -> dict:
        """Wait for the result of a release build of ``version`` (buildid > after).

        A release ends once its builds have finished or wait for a worker of
        an arch nobody serves (the sandbox has no aarch64 worker).
        Returns {"release": build, "rows": table, "seconds": ...}.
        """
        t0 = time.monotonic()
        seen: dict[int, str] = {}
        names = self.builders()
        release = None
        while time.monotonic() - t0 < timeout:
            if release is None:
                for b in self.release_builds():
                    props = report.flatten(b.get("properties"))
                    if b["buildid"] > after and props.get("version") == version:
                        release = b
                        if progress:
                            self.log(f"release #{b['number']} for {version} started")
            if release is not None:
                rel = self.api(f"builds/{release['buildid']}", property="*")[0]
                builds, pending = self.children(release["buildid"])
                for b in builds:
                    state = f"{b['state_string']}" + (" (done)" if b["complete"] else "")
                    if progress and seen.get(b["buildid"]) != state:
                        self.log(f"  {names[b['builderid']]} #{b['number']}: {b['state_string']}")
                    seen[b["buildid"]] = state
                if rel["complete"]:
                    return {"release": rel, "rows": self.table(release["buildid"]),
                            "seconds": time.monotonic() - t0}
            time.sleep(1)
        raise TimeoutError(f"release of {version} not done after {timeout}s")

    def wait_images(self, version: str, after: int = 0, timeout: float = 900) -> dict:
        """The first finished ``images`` build (buildid > after) for upstream ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for b in self.api(f"builders/{self.builder_id(IMAGES)}/builds", property="*", order="buildid"):
                    props = report.flatten(b.get("properties"))
                    if b["buildid"] > after and props.get("version") == version and b["complete"]:
                        return b
            except requests.RequestException:
                pass  # a busy master: ask again
            time.sleep(1)
        raise TimeoutError(f"no finished images build of {version} after {timeout:.0f}s")

    def wait_idle(self, builder: str, timeout: float = 900) -> None:
        """Until ``builder`` has no build running and no request waiting (quietly gives up after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                bid = self.builder_id(builder)
                busy = [b for b in self.api(f"builders/{bid}/builds") if not b["complete"]]
                busy += [r for r in self.api(f"builders/{bid}/buildrequests") if not r["complete"]]
            except (requests.RequestException, KeyError):
                return  # no master, or no such builder: nothing runs
            if not busy:
                return
            time.sleep(2)

    def newest_build(self, builder: str) -> int:
        return max([b["buildid"] for b in self.api(f"builders/{self.builder_id(builder)}/builds")] or [0])

    def _steps(self, buildid: int) -> list[dict]:
        return self.api(f"builds/{buildid}/steps")

    def build_logs(self, buildid: int) -> dict[str, str]:
        """Every log of a build: "step/log" -> text."""
        out = {}
        for st in self._steps(buildid):
            for lg in self.api(f"steps/{st['stepid']}/logs"):
                r = http.get(self.session, self.web_url + f"api/v2/logs/{lg['logid']}/raw")
                r.raise_for_status()
                out[f"{st['name']}/{lg['name']}"] = r.text
        return out

    def installable(self, rows: list[dict], version: str) -> list[str]:
        """Install each published x86_64 package with pip from the local index; returns problems."""
        problems = []
        for r in rows:
            if r["arch"] != "x86_64":
                continue
            target = self.root / "install-check" / r["variant"]
            out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-cache-dir",
                                  "--target", str(target), "--index-url", self.simple_url,
                                  f"{r['variant']}=={version}"], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                problems.append(f"{r['variant']}: pip install failed: {out.stderr.strip()[-300:]}")
        return problems



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n\n")[0])
    p.add_argument("--once", action="store_true", help="release once, print the table and exit")
    p.add_argument("--dir", type=Path, default=REPO_ROOT / ".sandbox", help="state directory (wiped at start)")
    p.add_argument("--arm64", action="store_true",
                   help="also provision the emulated arm64 worker (Debian arm64 under qemu-user, as root; its "
                        "build takes minutes) so the release builds both arches")
    p.add_argument("--images", action="store_true",
                   help="two local OCI registries: the release's runtime images are built (buildah) and pushed")
    p.add_argument("--github", action="store_true", help="a local GitHub stand-in receives the release")
    args = p.parse_args(argv)
    arches = ("x86_64", "aarch64") if args.arm64 else ("x86_64",)
    sb = Sandbox(args.dir, github=args.github, images=args.images, image_arches=arches)
    code = 1
    arm_root = None

    def _stop_on_signal(signum: int, _frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM/SIGHUP (a service manager, a closed terminal) and a SIGINT that
    # a background shell marked ignored must still stop the children below.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    try:
        if args.arm64:
            arm_root = _arm64_root(sb)
        sb.start()
        if arm_root is not None:
            secs = sb.attach_arm64(arm_root)
            sb.log(f"emulated arm64 worker provisioned by workers/provision.sh and connected ({secs:.0f}s)")
        version = NEW_TAG[1:]
        before = max([b["buildid"] for b in sb.release_builds()] or [0])
        images_before = sb.newest_build(IMAGES) if sb.images else 0
        t_push = sb.push_tag(NEW_TAG)
        sb.log(f"pushed tag {NEW_TAG} to the fixture upstream; waiting for the poller")
        # The release ends when its builds have finished or wait for a worker nobody serves
        # (no arm64 worker unless ARM64=1); its publishing steps run before that.
        done = sb.wait_release(version, after=before, progress=True, timeout=5400 if args.arm64 else 900)
        elapsed = time.monotonic() - t_push
        rows = done["rows"]
        print()
        print(format_table(rows), end="")
        print()
        sb.log(f"tag push -> release result: {elapsed:.1f}s: {done['release']['state_string']}")
        x86 = [r for r in rows if r["arch"] == "x86_64"]
        expected = [(v.package, a) for v in load_variants().for_release(version) for a in v.arches if a in arches]
        ok = sorted((r["variant"], r["arch"]) for r in rows if r["uploaded"] == "yes") == sorted(expected)
        problems = sb.installable(x86, version) if ok else [f"not every {'/'.join(arches)} wheel was uploaded"]
        if sb.github:
            problems += _show_github(sb, NEW_TAG)
        if sb.images:
            problems += _show_images(sb, version, images_before)
        for prob in problems:
            sb.log(f"PROBLEM: {prob}")
        if not problems:
            sb.log(f"every {'/'.join(arches)} wheel of {version} is published and installable from {sb.simple_url}")
        code = 0 if not problems else 1
        sb.log(f"web UI: {sb.web_url}")
        sb.log(f"release matrix: {matrix.page_url(sb.web_url)} (JSON: {matrix.json_url(sb.web_url)})")
        if not args.once:
            sb.log("serving; Ctrl-C to stop")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        sb.log("stopping")
        code = 0 if code == 0 else code
    except Exception as exc:
        _say(f"FAILED: {exc}")
        for log in ("master/twistd.log", "master.log"):
            path = sb.root / log
            if path.exists():
                print("".join(path.read_text(errors="replace").splitlines(True)[-40:]), file=sys.stderr)
                break
        code = 1
    finally:
        if arm_root is not None:
            from sandbox import arm64

            arm64.stop(arm_root, shared=sb.arm64_shared)
        sb.stop()
        if arm_root is not None:
            arm_root.close()
    return code


def _arm64_root(sb: Sandbox):
    """A fresh emulated arm64 root (testbed/aarch64_host.py) with the toolchain's venv cached in it."""
    from master.toolchain import build_tarball
    from testbed import aarch64_host

    why = aarch64_host.unavailable()
    if why:
        raise RuntimeError(f"--arm64: no emulated arm64 host here: {why}")
    sb.log("preparing the emulated arm64 root (the first time: mmdebstrap, many minutes)")
    root = aarch64_host.EmulatedRoot(log=sb.log)
    root.__enter__()
    try:
        # The venv the master's toolchain wants, restored from (or saved to) the cache:
        # the first aarch64 build then does not pip-install under qemu.
        with tempfile.TemporaryDirectory() as tmp:
            root.install_toolchain(build_tarball(Path(tmp)))
    except BaseException:
        root.close()
        raise
    return root


def _show_github(sb: Sandbox, tag: str) -> list[str]:
    rel = sb.fake_github.release(tag) if sb.fake_github else None
    if rel is None:
        return [f"no GitHub release {tag} at the stand-in {sb.github['api_url']}"]
    sb.log(f"GitHub release {tag}: {len(rel['body'])} characters of notes, assets: "
           + ", ".join(a["name"] for a in rel["assets"]))
    return []


def _show_images(sb: Sandbox, version: str, after: int) -> list[str]:
    build = sb.wait_images(version, after=after, timeout=1800)
    props = report.flatten(build.get("properties"))
    if build["results"] not in (0, 1):
        return [f"images build #{build['number']} ended {report.result_name(build)}"]
    for reg in sb.registries:
        for tag in reg.tags("vllm-cpu"):
            sb.log(f"image {reg.host}/vllm-cpu:{tag}  [{', '.join(reg.platforms('vllm-cpu', tag))}]")
    pushed = [ref for refs in (props.get("images") or {}).values() for ref in refs]
    return [] if pushed else ["the images build pushed nothing"]


if __name__ == "__main__":
    sys.exit(main())
