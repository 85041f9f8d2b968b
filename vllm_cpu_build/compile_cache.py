"""The compile cache: ccache on every build, local and, when the worker is given one, remote.

ccache is the compiler launcher whenever the build host (or root) has it.
Its local directory is the worker's own (``CCACHE_DIR`` or ccache's
default); a farm shares compiles through ccache's remote storage, a Redis
server the master host runs: the build step puts ``CCACHE_REMOTE_STORAGE``
(``redis://PASSWORD@HOST:PORT``, the password from a Buildbot secret) into
the build's environment.  Local and remote both: ``CCACHE_REMOTE_ONLY`` is
dropped from the worker's environment (``build._DROP_ENV``), so a hit in the
worker's own directory costs no network round trip.

A remote that is down, unreachable or full makes ccache count an error and
compile anyway: the build only gets slower.  Each build reads its own
counters from a stats log of its own (``CCACHE_STATSLOG``: one line per
counter increment, what ``ccache --show-log-stats`` sums; the worker's other
builds write elsewhere; ``--print-stats`` would give the cache directory's
totals since it was zeroed, every earlier build included), and its result
(``results.CompileCache``) says what the cache gave and whether the remote
failed.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vllm_cpu_build.buildroot import Runner
from vllm_cpu_build.results import CompileCache

REMOTE_ENV = "CCACHE_REMOTE_STORAGE"
# What a password may hold to sit in the URL as it is (ccache does not percent-decode it).
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
# redis://[PASSWORD@]HOST[:PORT][/DB], then ccache's |attribute=value options.
_REDIS = re.compile(r"redis://(?:(?P<auth>[^@/|]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d+))?"
                    r"(?P<db>/\d+)?(?P<attrs>(?:\|[a-z-]+=[^|\s]*)*)")


@dataclass(frozen=True)
class RemoteStorage:
    """One ccache remote storage entry: a Redis URL and its ``|attribute=value`` options."""

    host: str
    port: int
    db: str = ""  # "/N" or ""
    attributes: str = ""  # "|connect-timeout=500..." as written
    password: str = ""

    @classmethod
    def parse(cls, text: str) -> RemoteStorage:
        m = _REDIS.fullmatch(text.strip())
        if not m:
            raise ValueError("not a ccache Redis remote storage: redis://HOST[:PORT][/DB][|attribute=value...]")
        auth = m["auth"] or ""
        if ":" in auth:  # ccache 4.7 skips AUTH for ":password" and would log the URL whole
            raise ValueError("a user name in the URL is not supported: redis://PASSWORD@HOST:PORT")
        return cls(m["host"], int(m["port"] or 6379), m["db"] or "", m["attrs"] or "", auth)

    def url(self, password: str = "") -> str:
        """The ``CCACHE_REMOTE_STORAGE`` value, with ``password`` (letters, digits, ``-._~`` only) when given."""
        if password and not _URL_SAFE.fullmatch(password):
            raise ValueError("the password must be letters, digits and -._~ only (ccache reads the URL as it is)")
        auth = f"{password}@" if password else ""
        return f"redis://{auth}{self.host}:{self.port}{self.db}{self.attributes}"

    def redacted(self) -> str:
        """What a log may show: the URL with its password replaced."""
        auth = "***@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}{self.db}{self.attributes}"


def describe_remote(value: str | None) -> str:
    """The worker's remote storage for the log: redacted, or why it is not one this build can read."""
    if not value:
        return ""
    try:
        return RemoteStorage.parse(value).redacted()
    except ValueError:
        return "(a remote storage not of the form redis://..., not shown)"


@dataclass(frozen=True)
class Setup:
    """ccache wired into a build: its stats log and the remote (redacted) it was given."""

    stats_log: Path
    remote: str


def configure(var_env: dict[str, str], src: Path, runner: Runner, scratch: Path, log: TextIO) -> Setup | None:
    """ccache as the compiler launcher in ``var_env`` when the runner has it; ``None`` without ccache."""
    if runner.run(["sh", "-c", "command -v ccache"]).returncode != 0:
        print("  compile cache: none (no ccache on this host)", file=log)
        return None
    var_env["CMAKE_C_COMPILER_LAUNCHER"] = var_env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    # Paths under the tree hashed relative, the build dir not at all: a rebuild of the same
    # release in another checkout directory (another worker's) hits the cache (debug info is stripped).
    var_env.setdefault("CCACHE_BASEDIR", str(src))
    var_env.setdefault("CCACHE_NOHASHDIR", "1")
    # In the scratch directory the runner sees; ccache creates it at the first compile.
    stats_log = scratch / f".ccache-stats-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
    var_env["CCACHE_STATSLOG"] = str(stats_log)
    remote = describe_remote(os.environ.get(REMOTE_ENV))
    print(f"  compile cache: ccache, local{' + remote ' + remote if remote else ' only'}", file=log)
    return Setup(stats_log, remote)


def parse_print_stats(text: str) -> dict[str, int]:
    """``ccache --print-stats`` (``counter<TAB>value`` lines) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition("\t")
        if value.strip().isdigit():
            out[name.strip()] = int(value)
    return out


def from_counters(c: dict[str, int], remote: str) -> CompileCache:
    hits = c.get("direct_cache_hit", 0) + c.get("preprocessed_cache_hit", 0)
    return CompileCache(hits + c.get("cache_miss", 0), hits, c.get("cache_miss", 0), remote,
                        c.get("remote_storage_hit", 0), c.get("remote_storage_miss", 0),
                        c.get("remote_storage_error", 0), c.get("remote_storage_timeout", 0))


def parse_stats_log(text: str) -> dict[str, int]:
    """ccache's stats log: ``# <source>`` per compile, then one counter name per line and increment."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            out[name] = out.get(name, 0) + 1
    return out


def collect(setup: Setup | None, log: TextIO) -> CompileCache | None:
    """This build's counters from its stats log (then removed); ``None`` without ccache or counters."""
    if setup is None:
        return None
    try:
        counters = parse_stats_log(setup.stats_log.read_text(errors="replace"))
    except FileNotFoundError:
        counters = {}  # ccache writes it at its first compile (an old ccache never: it lacks stats_log)
    finally:
        setup.stats_log.unlink(missing_ok=True)
    if not counters:
        print("  compile cache: no counters (no compile ran, or a ccache older than 4.4)", file=log)
        return None
    cache = from_counters(counters, setup.remote)
    print(f"  compile cache: {cache.summary()}", file=log)
    if cache.remote_failed:
        print(f"  WARNING: the remote compile cache {setup.remote} failed ({cache.remote_errors} error(s), "
              f"{cache.remote_timeouts} timeout(s)): compiled without it", file=log)
    return cache
