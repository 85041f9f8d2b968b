"""``make bench``: measurements side by side, with ratios (not part of ``make test``).

1. Orchestration overhead: the sandbox (real master, two x86_64 workers,
   pypiserver) from a pushed tag to the last x86_64 upload, against the same
   toolchain commands run by hand (clone, patch, build, verify, smoke,
   upload --dry-run) for every x86_64 variant of the fixture upstream, one
   after the other, and packed onto two workers as the sandbox has; with
   the time per step kind on both sides, the release's tag poll and
   fan-out, and the order the builds started in.  One dry-run release of
   an older tag runs first, untimed: a farm has build history, which the
   longest-first packing (``farm/packing.py``) reads.
2. Compile of the real vLLM 0.11.2 ``vllm-cpu``: cold ccache (a fresh
   CCACHE_DIR) against warm on the same worker (the same directory again)
   and warm on a fresh worker (an empty directory) through the farm's shared
   cache (ccache remote storage on a real redis-server), and how many
   translation units the compiler really ran and the remote served.
3. Compiles per release against the Pythons they serve, for every release
   line, from ``plan`` on the real sdists: one compile per wheel; Pythons from
   the tree's stable-ABI floor on share one ``cpXY-abi3`` wheel (``cp38-abi3``
   up to 0.18, ``cp311-abi3`` from 0.27, whose helper modules need 3.11),
   older Pythons get one wheel each (0.27/0.31: 3.10).
4. The worker's toolchain environment: a fresh venv with the toolchain
   tarball's ``requirements.txt`` (pyproject.toml's ``[worker]`` extra, what
   ``vllm_cpu_build/bootstrap.py`` installs on a build host) against one with
   the master's side (``[master]``): install time and size (pip's cache as
   it is; run it twice for a warm one).
5. Flood (issue 18): a sandbox master with a users file and the production
   matrix interval; REST latency seen by a bystander (``tests/flood.py``'s
   probe, 5 requests/s) for 10 s without load, then for 30 s while 24
   anonymous clients on 127.0.0.1 (8 REST readers, 8 release matrix readers,
   8 wrong-password logins) ask as fast as they are answered; against the
   0.5 s median target (~1.5 min).

    make bench            # all five (~10 min on 2 idle cores once the build env is cached)
    python -m tests.bench --only orchestration|ccache|plan|worker-env|flood
    python -m tests.bench --only ccache --ccache-source fixture   # the shared cache in seconds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from testbed.fixture_upstream import MIRROR  # noqa: E402
from tests import sdist  # noqa: E402
from vllm_cpu_build import build, patch, plan  # noqa: E402
from vllm_cpu_build.variants import Variant, load  # noqa: E402

if TYPE_CHECKING:
    from sandbox import Sandbox


def _tool(*args: str) -> tuple[int, dict, float]:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "vllm_cpu_build", *args, "--json"], capture_output=True, text=True,
                       cwd=REPO, check=False)
    try:
        doc = json.loads(r.stdout) if r.stdout.strip() else {}
    except json.JSONDecodeError:
        doc = {}
    return r.returncode, doc, time.monotonic() - t


def _pack(durations: list[float], workers: int) -> float:
    """Wall time of ``durations`` greedily packed onto ``workers`` (longest first)."""
    loads = [0.0] * workers
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


# Step name (prefix) -> kind, for the breakdown; the by-hand side times the same kinds.
STEP_KINDS = [("worker_preparation", "worker_preparation"), ("checkout", "checkout"),
              ("ship_toolchain", "ship_toolchain"), ("patch", "patch"),
              ("build", "build"), ("verify", "verify"), ("smoke", "smoke"), ("fetch_wheels", "upload"),
              ("upload", "upload")]
KIND_ORDER = ["build", "verify", "smoke", "upload", "ship_toolchain", "patch", "worker_preparation", "checkout",
              "other"]


def _kind(step: str) -> str:
    return next((k for prefix, k in STEP_KINDS if step.startswith(prefix)), "other")


def _by_hand(sb: Sandbox, variants: list[Variant], upstream: str, work: Path) -> list[dict[str, float]]:
    """Each x86_64 variant's toolchain commands, timed per step kind (one dict per variant)."""
    from sandbox.core import NEW_TAG

    out = []
    for v in variants:
        d = work / "hand" / v.short
        times: dict[str, float] = {}
        t = time.monotonic()
        subprocess.run(["git", "-c", "advice.detachedHead=false", "clone", "-q", "--branch", NEW_TAG,
                        "--depth", "1", f"file://{upstream}", str(d / "src")], check=True)
        times["checkout"] = time.monotonic() - t
        steps = [("patch", ["--variant", v.package, "--src", str(d / "src"), "--arch", "x86_64"]),
                 ("build", ["--variant", v.package, "--src", str(d / "src"), "--out", str(d / "out"),
                            "--fetch-mirror", str(MIRROR)])]
        for name, args in steps:
            rc, doc, times[name] = _tool(name, *args)
            if rc != 0:
                raise RuntimeError(f"by hand: {name} {v.package} exit {rc}")
        wheel = doc["wheel"]
        times["verify"] = _tool("verify", "--variant", v.package, "--arch", "x86_64", wheel)[2]
        times["smoke"] = _tool("smoke", "--variant", v.package, wheel)[2]
        times["upload"] = _tool("upload", "--variant", v.package, "--repository-url", sb.index_url, "--simple-url",
                                sb.simple_url, "--dry-run", wheel)[2]
        out.append(times)
    return out


def _sandbox_steps(sb: Sandbox, release_buildid: int) -> tuple[dict[str, float], list[tuple[str, float, float]]]:
    """Seconds per step kind over the release's x86_64 builds (Buildbot keeps whole seconds), and each
    build's (builder, start, duration) in start order."""
    kinds: dict[str, float] = {}
    starts = []
    names = sb.builders()
    builds, _ = sb.children(release_buildid)
    for b in builds:
        if not names[b["builderid"]].endswith("x86_64"):
            continue
        starts.append((names[b["builderid"]], b["started_at"], b["complete_at"] - b["started_at"]))
        for st in sb.api(f"builds/{b['buildid']}/steps"):
            if st["started_at"] is not None and st["complete_at"] is not None:
                k = _kind(st["name"])
                kinds[k] = kinds.get(k, 0.0) + st["complete_at"] - st["started_at"]
    return kinds, sorted(starts, key=lambda s: (s[1], s[0]))


def orchestration(work: Path) -> list[str]:
    from sandbox import Sandbox
    from sandbox.core import NEW_TAG, SANDBOX_TAGS

    version = NEW_TAG[1:]
    sb = Sandbox(work / "sb", web_port=0, worker_port=0, index_port=0, poll_interval=1, quiet=True)
    try:
        sb.start()
        # A farm has history: one earlier release (a dry run, not timed) gives every builder a duration.
        warm = SANDBOX_TAGS[-1][1:]
        if sb.force(versions=warm, arches=["x86_64"], dry_run=True, reason="bench warm-up").status_code != 200:
            raise RuntimeError("bench: cannot force the warm-up release")
        sb.wait_release(warm, timeout=1800)
        before = max([b["buildid"] for b in sb.release_builds()] or [0])
        t_push, wall_push = sb.push_tag(NEW_TAG), time.time()
        done = sb.wait_release(version, after=before, timeout=1800)
        buildbot = time.monotonic() - t_push
        rows = [r for r in done["rows"] if r["arch"] == "x86_64"]
        uploaded = sum(1 for r in rows if r["uploaded"] == "yes")
        rel = done["release"]
        rel_steps = {st["name"]: st for st in sb.api(f"builds/{rel['buildid']}/steps")}
        fan = rel_steps.get("fan_out", {})
        fan_out = (fan.get("complete_at") or 0) - (fan.get("started_at") or 0)
        poll = max(0.0, rel["started_at"] - wall_push)
        kinds, starts = _sandbox_steps(sb, rel["buildid"])
        variants = [v for v in load().for_release(version) if "x86_64" in v.arches]
        hand = _by_hand(sb, variants, str(sb.upstream), work)
    finally:
        sb.stop()
    return _orchestration_lines(buildbot, uploaded, poll, fan_out, kinds, starts, hand)


def _orchestration_lines(buildbot: float, uploaded: int, poll: float, fan_out: float, kinds: dict[str, float],
                         starts: list[tuple[str, float, float]], hand: list[dict[str, float]]) -> list[str]:
    per_variant = [sum(t.values()) for t in hand]
    seq, two = sum(per_variant), _pack(per_variant, 2)
    hand_kinds = {k: sum(t.get(k, 0.0) for t in hand) for k in KIND_ORDER}
    t0 = starts[0][1] if starts else 0
    lines = [
        "orchestration: tag push -> last x86_64 upload (fixture upstream, 5 variants, after one warm-up release)",
        f"  buildbot sandbox (2 x86_64 workers)     {buildbot:8.1f} s   ({uploaded} wheels uploaded)",
        f"  same commands by hand, sequential       {seq:8.1f} s",
        f"  same commands by hand, packed on 2      {two:8.1f} s   (longest first)",
        f"  ratio sandbox / by hand on 2 workers    {buildbot / two:8.2f} x  (overhead {buildbot - two:+.1f} s)",
        f"  ratio sandbox / by hand sequential      {buildbot / seq:8.2f} x",
        f"  release: tag poll {poll:.0f} s, fan_out {fan_out:.0f} s; builds in start order "
        "(start offset / duration, whole seconds):",
        "    " + ", ".join(f"{n.split('-x86_64')[0]} +{s - t0:.0f}/{d:.0f}" for n, s, d in starts),
        f"  per step kind, summed over the builds   {'sandbox':>8} {'by hand':>8} {'extra':>7}",
    ]
    for k in KIND_ORDER:
        if k in kinds or hand_kinds.get(k):
            sbx, h = kinds.get(k, 0.0), hand_kinds.get(k, 0.0)
            lines.append(f"    {k:36} {sbx:8.1f} {h:8.1f} {sbx - h:+7.1f}")
    total_sb, total_h = sum(kinds.values()), sum(hand_kinds.values())
    lines.append(f"    {'total':36} {total_sb:8.1f} {total_h:8.1f} {total_sb - total_h:+7.1f}")
    return lines


def _fixture_tree(work: Path, dest: Path) -> tuple[Path, dict]:
    """The fixture upstream's v0.12.0 patched for vllm-cpu (seconds to compile: ``--ccache-source fixture``)."""
    from testbed.fixture_upstream.make_repo import make_fixture_repo

    repo = work / "fixture-repo"
    if not repo.exists():
        make_fixture_repo(repo, ["v0.12.0"])
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True)
    patch.patch_tree(dest, load().get("vllm-cpu"), "x86_64", "0.12.0")
    return dest, {"fetch_mirror": MIRROR}


def _real_tree(work: Path, dest: Path) -> tuple[Path, dict]:
    """The real vLLM 0.11.2 sdist patched for vllm-cpu (its torch pin swapped: the build env is cached)."""
    archive = sdist.fetch("0.11.2", quiet=True)
    src = sdist.extract("0.11.2", dest)
    patch.patch_tree(src, load().get("vllm-cpu"), "x86_64", "0.11.2")
    return src, {"torch": "torch==2.13.0", "allow_torch_mismatch": True, "torch_index": "", "sdist": archive}


def ccache(work: Path, source: str = "real") -> list[str]:
    """vllm-cpu: cold, warm on the same worker, warm on a fresh worker through the shared cache.

    A worker is a ccache directory; both use the farm's remote storage (a real
    redis-server on 127.0.0.1, as the sandbox runs it), each build a source
    directory of its own.  The counters are each build's own (its stats log).
    """
    import secrets

    from sandbox.procs import free_port
    from testbed.redis_server import RedisServer, available

    variant = load().get("vllm-cpu")
    tree, what = (_real_tree, "real vLLM 0.11.2") if source == "real" else (_fixture_tree, "fixture upstream 0.12.0")
    server = RedisServer(work / "redis", free_port(0), password=secrets.token_urlsafe(18),
                         maxmemory="4gb").start() if available() else None
    old = {k: os.environ.get(k) for k in ("CCACHE_DIR", "CCACHE_REMOTE_STORAGE")}
    if server:
        os.environ["CCACHE_REMOTE_STORAGE"] = server.storage
    lines = [f"ccache: {what} vllm-cpu (x86_64), same build env; worker = a ccache directory, "
             + ("both on a shared redis-server (127.0.0.1)" if server else "NO redis-server: local cache only")]
    runs = [("cold", "a"), ("warm, same worker", "a")] + ([("warm, fresh worker", "b")] if server else [])
    times: dict[str, float] = {}
    try:
        for i, (run, worker) in enumerate(runs):
            os.environ["CCACHE_DIR"] = str(work / f"ccache-{worker}")
            src, options = tree(work, work / f"src-{i}")  # another directory each time
            res = build.build(build.BuildOptions(variant, src, work / f"dist-{i}", log=io.StringIO(), **options))
            cc = res.compile_cache
            times[run] = res.seconds
            counts = (f"compiler runs (misses) {cc.misses:4d}, hits {cc.hits:4d} (remote {cc.remote_hits:4d}), "
                      f"remote errors {cc.remote_errors}") if cc else "no ccache counters"
            lines.append(f"  {run:19} build {res.seconds:8.1f} s   {counts}")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server:
            memory = dict(ln.split(":", 1) for ln in server.command("INFO", "memory").splitlines() if ":" in ln)
            lines.append(f"  shared cache after the runs: {server.keys()} entries, "
                         f"{memory.get('used_memory_human', '?').strip()} in Redis")
            server.stop()
    for run in runs[1:]:
        lines.append(f"  ratio cold / {run[0]:19} {times['cold'] / times[run[0]]:8.2f} x")
    return lines


def per_release() -> list[str]:
    """What ``plan`` does per release: compiles (one per wheel) against the Pythons they serve."""
    catalog = load()
    lines = ["compiles per release vs Pythons served (plan on the real sdists, every release line)",
             f"  {'release':8} {'line':5} {'pythons':>9} {'abi3 floor':>10} {'variant x arch':>14} "
             f"{'compiles':>8} {'per arch':>8} {'Pythons served':>14} {'served / compile':>16}  "
             "wheels of vllm-cpu x86_64"]
    versions = ["0.10.0", "0.11.2", "0.13.0", "0.16.0", "0.17.0", "0.18.0", "0.27.0", "0.28.0", "0.31.0", "0.33.0"]
    for ver in versions:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                src = sdist.extract(ver, tmp, members=["pyproject.toml", "CMakeLists.txt", "cmake/"])
                spec, floor = plan.requires_python(Path(src)), plan.abi3_floor(Path(src))
        except Exception as exc:  # no index reachable
            lines.append(f"  {ver:8} (sdist unavailable: {exc})")
            continue
        p = plan.make_plan(ver, spec, floor=floor)
        combos = len({(b.variant, b.arch) for b in p.builds})
        compiles = sum(len(b.wheels) for b in p.builds)  # one compile per wheel
        served = sum(len(b.pythons) for b in p.builds)  # variant x arch x Python installs with a wheel
        per_arch = {a: sum(len(b.wheels) for b in p.builds if b.arch == a) for a in ("x86_64", "aarch64")}
        ref = next((b for b in p.builds if (b.variant, b.arch) == ("vllm-cpu", "x86_64")), None)
        shape = ", ".join(f"{w.tag} ({w.serves[0]}{'+' if len(w.serves) > 1 else ''})"
                          for w in (ref.wheels if ref else []))
        pys = f"{p.pythons[0]}-{p.pythons[-1]}"
        lines.append(f"  {ver:8} {p.release_line:5} {pys:>9} {floor:>10} {combos:14} {compiles:8} "
                     f"{per_arch['x86_64']:>4}+{per_arch['aarch64']:<3} {served:14} {served / compiles:16.2f}  {shape}")
    lines.append(f"  ({len(catalog.names())} packages in variants.json; per arch = x86_64+aarch64 compiles; "
                 "the abi3 floor is the newest USE_SABI of the tree's CPU modules, at least 3.8: "
                 "Pythons from it on share one cpXY-abi3 wheel, older ones get one each)")
    return lines


def _venv_install(venv: Path, *pip_args: str) -> tuple[float, int, int]:
    """(seconds, MiB, distributions) of a fresh venv with ``pip install pip_args``."""
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pip_args], check=True, capture_output=True)
    seconds = time.monotonic() - t
    mib = int(subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0])
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    return seconds, mib, len(json.loads(listed))


def worker_env(work: Path) -> list[str]:
    """The worker's toolchain venv ([worker], as bootstrap.py makes it) against the master's side."""
    import tarfile

    from master.toolchain import build_tarball

    work.mkdir(parents=True)
    with tarfile.open(build_tarball(work / "tarball")) as tar:
        reqs = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
    worker = [line.split("  # ")[0] for line in reqs.splitlines() if line.strip()]
    w = _venv_install(work / "worker", *worker)
    m = _venv_install(work / "master", f"{REPO}[master]")
    return ["worker toolchain venv (the tarball's requirements.txt = [worker]) vs the master's side ([master])",
            f"  worker venv   {w[0]:7.1f} s  {w[1]:5d} MiB  {w[2]:3d} distributions",
            f"  master venv   {m[0]:7.1f} s  {m[1]:5d} MiB  {m[2]:3d} distributions",
            f"  ratio worker / master      {w[0] / m[0]:5.2f} x time  {w[1] / m[1]:5.2f} x size"]


def flood(work: Path, seconds: float = 30, baseline_seconds: float = 10) -> list[str]:
    """REST latency without and with 24 anonymous clients flooding the master from 127.0.0.1."""
    import secrets

    from farm.settings import Settings, replace
    from sandbox import Sandbox
    from tests.flood import Flood, describe, probe_rest

    class ProductionMatrix(Sandbox):
        def settings(self) -> Settings:  # the sandbox computes the matrix per request; production caches it
            s = super().settings()
            return replace(s, www=replace(s.www, matrix_interval=Settings().www.matrix_interval))

    user = "admin"
    sb = ProductionMatrix(work / "sb", web_port=0, worker_port=0, index_port=0, poll_interval=1, quiet=True,
                          users={user: secrets.token_urlsafe(12)}, admins=(user,))
    try:
        sb.start()
        interval = sb.settings().www.matrix_interval
        sb.matrix()  # the first computation is no part of either figure
        t_end = time.monotonic() + baseline_seconds
        baseline = probe_rest(sb.web_url, lambda: time.monotonic() < t_end)
        with Flood(sb.web_url, seconds, rest=8, matrix_readers=8, logins=8, user=user) as f:
            flooded = probe_rest(sb.web_url, f.running)
    finally:
        sb.stop()
    rest = f.tallies["rest"].latencies
    return [f"flood: {f.clients} anonymous clients on 127.0.0.1 for {seconds:.0f} s (8 REST, 8 release matrix, "
            f"8 wrong-password logins), users file, matrix_interval {interval} s",
            "  " + describe(f"no flood, bystander REST /builders ({baseline_seconds:.0f} s)", baseline),
            "  " + describe("flood, bystander REST /builders", flooded),
            "  " + describe("flood, the 8 REST clients' own requests", rest),
            *("  " + line for line in f.report())]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("orchestration", "ccache", "plan", "worker-env", "flood"), action="append")
    ap.add_argument("--ccache-source", choices=("real", "fixture"), default="real",
                    help="what the ccache part compiles: the real vLLM 0.11.2 (minutes) or the fixture (seconds)")
    args = ap.parse_args(argv)
    parts = args.only or ["plan", "orchestration", "ccache", "worker-env", "flood"]
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-bench-") as tmp:
        for part in parts:
            t = time.monotonic()
            lines = {"orchestration": orchestration, "ccache": lambda w: ccache(w, args.ccache_source),
                     "worker-env": worker_env, "flood": flood}.get(
                part, lambda _w: per_release())(Path(tmp) / part)
            lines[0] += f"   [{time.monotonic() - t:.0f} s]"
            print("\n".join(lines) + "\n", flush=True)
            out += lines
    return 0


if __name__ == "__main__":
    sys.exit(main())
