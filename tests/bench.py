"""``make bench``: measurements side by side, with ratios (not part of ``make test``).

1. Orchestration overhead: the sandbox (real master, two x86_64 workers,
   pypiserver) from a pushed tag to the last x86_64 upload, against the same
   toolchain commands run by hand (clone, patch, build, verify, smoke,
   upload --dry-run) for every x86_64 variant of the fixture upstream, one
   after the other, and packed onto two workers as the sandbox has.
2. Compile of the real vLLM 0.11.2 ``vllm-cpu``: cold ccache (a fresh
   CCACHE_DIR) against warm (the same directory again), and how many
   translation units the compiler really ran.
3. Compiles per release against wheels per release, per release line, from
   ``plan`` on the real sdists: with one stable-ABI (cp38-abi3) wheel per
   variant × arch one compile serves every Python; per-Python wheels (0.27+)
   compile once per Python.
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from testbed.fixture_upstream import MIRROR  # noqa: E402
from tests import sdist  # noqa: E402
from vllm_cpu_build import build, patch, plan  # noqa: E402
from vllm_cpu_build.variants import load  # noqa: E402


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


def orchestration(work: Path) -> list[str]:
    from sandbox import Sandbox
    from sandbox.core import NEW_TAG

    version = NEW_TAG[1:]
    sb = Sandbox(work / "sb", web_port=0, worker_port=0, index_port=0, poll_interval=1, quiet=True)
    try:
        sb.start()
        before = max([b["buildid"] for b in sb.release_builds()] or [0])
        t_push = sb.push_tag(NEW_TAG)
        done = sb.wait_release(version, after=before, timeout=1800)
        buildbot = time.monotonic() - t_push
        rows = [r for r in done["rows"] if r["arch"] == "x86_64"]
        uploaded = sum(1 for r in rows if r["uploaded"] == "yes")
        upstream, simple = sb.upstream, sb.simple_url
        variants = [v for v in load().for_release(version) if "x86_64" in v.arches]
        per_variant = []
        for v in variants:
            d = work / "hand" / v.short
            t = time.monotonic()
            subprocess.run(["git", "-c", "advice.detachedHead=false", "clone", "-q", "--branch", NEW_TAG,
                            "--depth", "1", f"file://{upstream}", str(d / "src")], check=True)
            steps = [("patch", ["--variant", v.package, "--src", str(d / "src"), "--arch", "x86_64"]),
                     ("build", ["--variant", v.package, "--src", str(d / "src"), "--out", str(d / "out"),
                                "--fetch-mirror", str(MIRROR)])]
            for name, args in steps:
                rc, doc, _ = _tool(name, *args)
                if rc != 0:
                    raise RuntimeError(f"by hand: {name} {v.package} exit {rc}")
            wheel = doc["wheel"]
            _tool("verify", "--variant", v.package, "--arch", "x86_64", wheel)
            _tool("smoke", "--variant", v.package, wheel)
            _tool("upload", "--variant", v.package, "--repository-url", sb.index_url, "--simple-url", simple,
                  "--dry-run", wheel)
            per_variant.append(time.monotonic() - t)
    finally:
        sb.stop()
    seq, two = sum(per_variant), _pack(per_variant, 2)
    return [
        "orchestration: tag push -> last x86_64 upload (fixture upstream, 5 variants)",
        f"  buildbot sandbox (2 x86_64 workers)     {buildbot:8.1f} s   ({uploaded} wheels uploaded)",
        f"  same commands by hand, sequential       {seq:8.1f} s",
        f"  same commands by hand, packed on 2      {two:8.1f} s",
        f"  ratio sandbox / by hand on 2 workers    {buildbot / two:8.2f} x  (overhead {buildbot - two:+.1f} s)",
        f"  ratio sandbox / by hand sequential      {buildbot / seq:8.2f} x",
    ]


def _ccache_stats(env: dict[str, str]) -> dict[str, int]:
    r = subprocess.run(["ccache", "--print-stats"], capture_output=True, text=True, env=env, check=False)
    return {k: int(v) for k, v in (ln.split("\t", 1) for ln in r.stdout.splitlines() if "\t" in ln)
            if v.strip().isdigit()}


def ccache(work: Path) -> list[str]:
    """Cold then warm build of the real 0.11.2 vllm-cpu with one fresh ccache directory."""
    variant = load().get("vllm-cpu")
    archive = sdist.fetch("0.11.2", quiet=True)
    cdir = work / "ccache"
    old = {k: os.environ.get(k) for k in ("CCACHE_DIR",)}
    os.environ["CCACHE_DIR"] = str(cdir)
    lines = ["ccache: real vLLM 0.11.2 vllm-cpu (x86_64), fresh CCACHE_DIR, same build env"]
    times, units = [], []
    try:
        for run in ("cold", "warm"):
            src = sdist.extract("0.11.2", work / f"src-{run}")  # another directory each time
            patch.patch_tree(src, variant, "x86_64", "0.11.2")
            before = _ccache_stats(dict(os.environ))
            res = build.build(build.BuildOptions(variant, src, work / f"dist-{run}", log=io.StringIO(),
                                                 torch="torch==2.13.0", allow_torch_mismatch=True, torch_index="",
                                                 sdist=archive))
            after = _ccache_stats(dict(os.environ))
            miss = after.get("cache_miss", 0) - before.get("cache_miss", 0)
            hit = sum(after.get(k, 0) - before.get(k, 0) for k in ("direct_cache_hit", "preprocessed_cache_hit"))
            times.append(res.seconds)
            units.append((miss, hit))
            lines.append(f"  {run:5} build {res.seconds:8.1f} s   compiler runs (ccache misses) {miss}, hits {hit}; "
                         f"wheel {Path(res.wheel).stat().st_size / 1e6:.1f} MB (module "
                         f"{sum(m.before for m in res.strip.modules.values()) / 1e6:.1f} -> "
                         f"{sum(m.after for m in res.strip.modules.values()) / 1e6:.1f} MB stripped)")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    lines.append(f"  ratio cold / warm                  {times[0] / times[1]:8.2f} x")
    return lines


def per_release() -> list[str]:
    """What ``plan`` does per release: compiles (one per build Python) against the wheels they serve."""
    catalog = load()
    lines = ["compiles per release vs wheels per release (plan on the real sdists)",
             f"  {'release':8} {'line':5} {'pythons':>7} {'variant x arch':>14} {'kind':>10} {'compiles':>8} "
             f"{'wheels':>6} {'Pythons served':>14} {'served / compile':>16}"]
    versions = ["0.10.0", "0.11.2", "0.13.0", "0.16.0", "0.17.0", "0.27.0", "0.31.0"]
    for ver in versions:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                src = sdist.extract(ver, tmp, members=["pyproject.toml"])
                spec = plan.requires_python(Path(src))
        except Exception as exc:  # no index reachable
            lines.append(f"  {ver:8} (sdist unavailable: {exc})")
            continue
        p = plan.make_plan(ver, spec)
        combos = len({(b.variant, b.arch) for b in p.builds})
        compiles = sum(len(b.build_pythons) for b in p.builds)  # one wheel per compile
        served = sum(len(b.pythons) for b in p.builds)  # variant x arch x Python installs with a wheel
        kind = "abi3" if all(b.abi3 for b in p.builds) else "per-Python"
        lines.append(f"  {ver:8} {p.release_line:5} {len(p.pythons):7} {combos:14} {kind:>10} {compiles:8} "
                     f"{compiles:6} {served:14} {served / compiles:16.2f}")
    lines.append(f"  ({len(catalog.names())} packages in variants.json; one cp38-abi3 wheel per variant x arch "
                 "while no module needs a newer stable ABI than 3.8, per-Python wheels from 0.27)")
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
    args = ap.parse_args(argv)
    parts = args.only or ["plan", "orchestration", "ccache", "worker-env", "flood"]
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-bench-") as tmp:
        for part in parts:
            t = time.monotonic()
            lines = {"orchestration": orchestration, "ccache": ccache, "worker-env": worker_env,
                     "flood": flood}.get(
                part, lambda _w: per_release())(Path(tmp) / part)
            lines[0] += f"   [{time.monotonic() - t:.0f} s]"
            print("\n".join(lines) + "\n", flush=True)
            out += lines
    return 0


if __name__ == "__main__":
    sys.exit(main())
