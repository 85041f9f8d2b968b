"""``Sandbox``: the whole system on 127.0.0.1, as ``make run`` and the end-to-end tests start it.

Under its root: a fixture upstream git repository, a pypiserver package
index, the Buildbot master (SQLite, web UI) and the registry's local x86_64
workers; on request a GitHub stand-in, two OCI registries and the emulated
arm64 worker.  It is three parts put together: the REST client of its
master (``sandbox.http.Client``, which it is), the settings writer
(``sandbox.settings``, through ``farm.settings``' types) and the process
supervision (``sandbox.procs``).  ``sandbox.cli`` is ``make run``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from farm.settings import ENV_VAR, REPO_ROOT, Settings
from master import matrix
from sandbox import settings as settings_file
from sandbox.http import Client, wait_up
from sandbox.procs import Processes, free_port, until
from testbed import redis_server
from testbed.fixture_upstream import MIRROR
from workers import hostinfo, registry
from workers.launch import LocalLaunch

BIN = Path(sys.executable).parent
SANDBOX_TAGS = ["v0.11.1", "v0.11.2"]  # present before the master starts
NEW_TAG = "v0.12.0"  # pushed once the master watches the upstream


def say(msg: str) -> None:
    print(f"[sandbox {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Sandbox(Client):
    def __init__(self, root: Path, tags: list[str] | None = None, web_port: int = 8010, worker_port: int = 9989,
                 index_port: int = 8089, poll_interval: int = 2, quiet: bool = False,
                 recheck_since: str = "", recheck_interval: int = 0, recheck_attempts: int | None = None,
                 users: dict[str, str] | None = None, admins: tuple[str, ...] = (),
                 max_builds_per_request: int | None = None,
                 github: bool = False, images: bool = False, image_arches: tuple[str, ...] = ("x86_64",),
                 worker_env: dict[str, str] | None = None, reproduce: bool = False,
                 compile_cache: bool | None = None,
                 entries: list[registry.WorkerEntry] | None = None) -> None:
        self.root = root.resolve()
        self.tags = list(SANDBOX_TAGS if tags is None else tags)
        self.web_port, self.worker_port, self.index_port = free_port(web_port), free_port(worker_port), \
            free_port(index_port)
        self.quiet = quiet
        # Shared with whoever may post tags to /change_hook/github (the tests).
        super().__init__(f"http://127.0.0.1:{self.web_port}/", webhook_secret=secrets.token_urlsafe(24),
                         log=self._log)
        self.poll_interval = poll_interval
        self.recheck_since = recheck_since
        self.recheck_interval = recheck_interval
        self.recheck_attempts = recheck_attempts  # None: the settings' default
        # Web login (the [www] table): user -> password, written hashed to a 0600 file.
        self.users = dict(users or {})
        self.admins = tuple(admins)
        self.max_builds_per_request = max_builds_per_request
        # pypiserver -a . accepts any password; a random one lets tests look for leaks.
        self.index_token = secrets.token_urlsafe(16)
        # github: a local GitHub stand-in (testbed/github_server.py) gets the releases;
        # images: two local OCI registries get the images, built from a base image of
        # image_arches; worker_env: extra environment of every process started here.
        self.want_github, self.want_images, self.image_arches = github, images, tuple(image_arches)
        self.github: dict[str, str] | None = None  # {"api_url", "repository", "token"} once started
        self.images: dict[str, Any] | None = None  # {"repositories", "base_image", "tls_verify"} once started
        self.fake_github: Any = None
        self.registries: list[Any] = []
        self.worker_env = dict(worker_env or {})
        self.reproduce = reproduce  # [build] reproduce: every wheel rebuilt and compared before upload
        # compile_cache: the shared compile cache on a local redis-server ([cache]); None = when installed.
        self.want_cache = redis_server.available() if compile_cache is None else compile_cache
        self.cache: redis_server.RedisServer | None = None  # once started
        self.procs = Processes(self.env, self.root)
        self.upstream = self.root / "upstream"
        self.master_dir = self.root / "master"
        self.secrets_dir = self.root / "secrets"
        # The workers (default: workers/registry.toml), written to registry_file for the master;
        # a test may replace them before start() (an entry may need the ports chosen here).
        self.entries = list(entries) if entries is not None else registry.load(registry.DEFAULT_PATH)

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.index_port}/"

    @property
    def simple_url(self) -> str:
        return self.index_url + "simple/"

    @property
    def local_workers(self) -> list[registry.WorkerEntry]:
        """Always-on workers the sandbox starts (an entry with a launch table is started by the master)."""
        return [e for e in self.entries if e.name.startswith("local-") and e.launch is None]

    @property
    def registry_file(self) -> Path:
        return self.root / "registry.toml"

    def worker_dir(self, name: str) -> Path:
        return self.root / "workers" / name

    def latent_local(self, name: str, arch: str = "x86_64", idle_timeout: int = 10,
                     max_builds: int = 1) -> registry.WorkerEntry:
        """A registry entry the master starts on demand as a worker process here ([worker.local])."""
        from workers.launch import LocalLaunch

        command = (str(BIN / "buildbot-worker"), "start", "--nodaemon", str(self.worker_dir(name)))
        return registry.WorkerEntry(name, arch, max_builds, "sandbox", "started by the master when a build needs it",
                                    launch=LocalLaunch(command, idle_timeout=idle_timeout))

    @property
    def users_file(self) -> Path:
        return self.secrets_dir / "www-users"

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.toml"

    def _log(self, msg: str) -> None:
        if not self.quiet:
            say(msg)

    def env(self) -> dict[str, str]:
        """The environment of every process the sandbox starts."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # python3 = this venv's, with the toolchain deps
        env[ENV_VAR] = str(self.settings_file)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.worker_env)
        return env

    # ------------------------------------------------------------------ settings
    def settings(self) -> Settings:
        """What the master runs with (``sandbox.settings``); a subclass may replace tables."""
        return settings_file.settings_for(self)

    def write_settings(self) -> None:
        """The settings file and its secrets (called by ``start`` before the master starts)."""
        settings_file.write(self, self.settings())

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        t0 = time.monotonic()
        self._prepare()
        self._start_index()
        self.procs.run(str(BIN / "buildbot"), "create-master", "-q", "-r", "--db", "sqlite:///state.sqlite",
                       "--config", str(REPO_ROOT / "master" / "master.cfg"), str(self.master_dir))
        self.start_master()
        for e in self.local_workers:
            self._start_worker_process(e)
        self._wait_ready()
        self.log(f"tag poller watching {self.upstream} every {self.poll_interval}s "
                 f"({time.monotonic() - t0:.1f}s setup)")

    def _prepare(self) -> None:
        """A fresh root: the fixture upstream, the publishing stand-ins, secrets and settings."""
        from testbed.fixture_upstream.make_repo import make_fixture_repo

        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.log(f"state in {self.root}")
        make_fixture_repo(self.upstream, self.tags)
        self.log(f"fixture upstream {self.upstream} with tags {', '.join(self.tags)}")
        self._start_publishing()
        self._start_cache()
        for e in self.entries:
            registry.write_secret(self.secrets_dir, e.secret_name, secrets.token_urlsafe(16))
        self.registry_file.write_text("\n".join(registry.to_toml(e) for e in self.entries))
        self.write_settings()
        for e in self.entries:  # the master starts these: their directories (and passwords) are ready
            if isinstance(e.launch, LocalLaunch) and str(self.worker_dir(e.name)) in e.launch.command:
                self._create_worker(e)

    def _start_index(self) -> None:
        index_dir = self.root / "index"
        index_dir.mkdir()
        self.procs.spawn("index", [str(BIN / "pypi-server"), "run", "-p", str(self.index_port), "-i", "127.0.0.1",
                                   "-a", ".", "-P", ".", "--disable-fallback", str(index_dir)], "index.log")
        wait_up(self.simple_url, "index", 60, self.procs.check_alive, self.session)
        self.log(f"package index {self.index_url} (pypiserver)")
        if self.images:
            from sandbox.publish import detector_wheel

            detector_wheel(index_dir)  # the images install it (their entrypoint runs it)

    def _create_worker(self, entry: registry.WorkerEntry) -> Path:
        """The worker directory of registry ``entry`` on this host (created once, with its password)."""
        wdir = self.worker_dir(entry.name)
        if not wdir.exists():
            wdir.parent.mkdir(exist_ok=True)
            self.procs.run(str(BIN / "buildbot-worker"), "create-worker", "-q", "--umask=0o22", str(wdir),
                           f"127.0.0.1:{self.worker_port}", entry.name,
                           (self.secrets_dir / entry.secret_name).read_text())
        # Buildbot shows info/host as the worker's description: say what this host really is.
        hostinfo.write_info(wdir, entry.admin, entry.notes)
        return wdir

    def _start_worker_process(self, entry: registry.WorkerEntry) -> None:
        """Create (once) and start the worker of registry ``entry`` on this host."""
        wdir = self._create_worker(entry)
        self.procs.spawn(f"worker {entry.name}", [str(BIN / "buildbot-worker"), "start", "--nodaemon", str(wdir)],
                         f"worker-{entry.name}.log")

    def start_worker(self, name: str) -> None:
        """Create and start registry worker ``name`` on this host (e.g. ``arm64-1``, whatever its arch)."""
        entry = next(e for e in self.entries if e.name == name)
        self._start_worker_process(entry)
        until(lambda: name in self.connected_workers(), 60, f"worker {name} connects")
        self.log(f"worker {name} ({entry.arch}) connected")

    def _wait_ready(self) -> None:
        until(lambda: self.connected_workers() >= {e.name for e in self.local_workers}, 300, "workers connect")
        self.log(f"workers connected: {', '.join(sorted(self.connected_workers()))}")
        until(self._poller_has_baseline, 300, "the tag poller's first poll")

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

    @property
    def arm64_shared(self) -> tuple[Path, ...]:
        """Host directories the emulated arm64 worker sees at the same path: builds clone the upstream by
        its host path, and the FetchContent mirror is a worker path in the settings."""
        return (self.upstream, MIRROR)

    def attach_arm64(self, root: Any) -> float:
        """Provision the registry's aarch64 worker in the emulated ``root`` against this master; seconds."""
        from sandbox import arm64

        entry = next(e for e in self.entries if e.arch == "aarch64")
        secs = arm64.provision(root, entry.name, (self.secrets_dir / entry.secret_name).read_text(), self.worker_port,
                               shared=self.arm64_shared)
        until(lambda: entry.name in self.connected_workers(), 120, f"{entry.name} in the master's worker list")
        return secs

    def arm64_on_demand(self, root: Any, idle_timeout: int = 600) -> None:
        """Before ``start``: the registry's aarch64 worker becomes one the master starts in the emulated
        ``root`` when an aarch64 build is queued, and stops after ``idle_timeout`` s ([worker.local])."""
        from dataclasses import replace

        from sandbox import arm64

        how = LocalLaunch(arm64.worker_command(root), idle_timeout=idle_timeout, start_timeout=900)
        self.entries = [replace(e, launch=how) if e.arch == "aarch64" else e for e in self.entries]

    def install_arm64(self, root: Any) -> float:
        """After ``start``: provision.sh installs the aarch64 worker in ``root`` without starting it
        (the master does, on demand: ``arm64_on_demand``); seconds."""
        from sandbox import arm64

        entry = next(e for e in self.entries if e.arch == "aarch64")
        return arm64.provision(root, entry.name, (self.secrets_dir / entry.secret_name).read_text(),
                               self.worker_port, shared=self.arm64_shared, start=False)

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
            base = push_base_image(self.registries[0], list(self.image_arches), self.env(), log=self.log)
            self.images = {"repositories": [f"{r.host}/vllm-cpu" for r in self.registries], "base_image": base,
                           "tls_verify": False}
            self.log(f"OCI registries {', '.join(r.host for r in self.registries)} (docker-registry)")

    def _start_cache(self) -> None:
        """The farm's shared compile cache: redis-server on a free port with a password (a secret)."""
        if not self.want_cache:
            if not redis_server.available():
                self.log("no shared compile cache: redis-server is not installed (`make setup` installs it)")
            return
        password = secrets.token_urlsafe(18)
        self.cache = redis_server.RedisServer(self.root / "redis", free_port(0), password=password).start()
        self.log(f"compile cache {self.cache.url} (redis-server; ccache remote storage)")

    # ------------------------------------------------------------------ master
    def start_master(self, wait_workers: bool = False) -> None:
        """Start the master on the existing basedir (state.sqlite and all); ``wait_workers``: until they are back."""
        self.procs.spawn("master", [str(BIN / "buildbot"), "start", "--nodaemon", str(self.master_dir)], "master.log")
        self.wait_up(120, self.procs.check_alive)
        self.log(f"master up, web UI {self.web_url}, release matrix {matrix.page_url(self.web_url)}")
        if wait_workers:
            self._wait_ready()

    def stop_master(self, timeout: float = 60) -> None:
        """Stop the master cleanly (SIGTERM, as ``buildbot stop``); workers and index keep running."""
        if self.procs.stop("master", timeout):
            self.log("master stopped")

    def stop(self) -> None:
        self.procs.stop_all(first=("master", *[n for n in self.procs.running if n.startswith("worker")]))
        for reg in self.registries:
            reg.stop()
        self.registries = []
        if self.cache is not None:
            self.cache.stop()
            self.cache = None
        if self.images:
            from sandbox.publish import release_storage

            release_storage(self.root / "containers", self.env())
        if self.fake_github is not None:
            self.fake_github.close()
            self.fake_github = None

    # ------------------------------------------------------------------ a release
    def tag_push(self, tag: str, /, **extra: Any) -> dict[str, Any]:
        """The payload GitHub sends when ``tag`` is pushed (the fields a push event has; ``extra`` added)."""
        return {"ref": f"refs/tags/{tag}", "before": "0" * 40, "after": "1" * 40, "created": True,
                "deleted": False, "forced": False, "base_ref": None, "commits": [],
                "head_commit": {"id": "1" * 40, "message": tag, "timestamp": "2026-11-29T00:00:00Z"},
                "repository": {"name": "vllm", "full_name": "vllm-project/vllm", "clone_url": str(self.upstream)},
                "pusher": {"name": "sandbox"}, **extra}

    def push_tag(self, tag: str) -> float:
        from testbed.fixture_upstream.make_repo import add_release

        add_release(self.upstream, tag)
        return time.monotonic()

    def installable(self, rows: list[dict[str, Any]], version: str) -> list[str]:
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
