"""``make run``: the whole system on 127.0.0.1, releasing the newest fixture tag.

Starts the sandbox (``sandbox.core``) under ``.sandbox/``, then pushes the
newest fixture release tag and lets the real tag path (GitPoller) release
it, printing progress and a final table read from the REST API.
``--once`` exits (0 when every wheel of the asked arches is published and
installable from the local index); otherwise it serves until Ctrl-C.
Exit codes: 0 released, 1 a problem (printed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from farm import report
from farm.names import IMAGES
from farm.report import format_table
from farm.settings import REPO_ROOT
from master import matrix
from sandbox import watch
from sandbox.core import NEW_TAG, Sandbox, say
from vllm_cpu_build.helptext import Parser, describe
from vllm_cpu_build.variants import load as load_variants


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m sandbox", description=describe(__doc__),
               epilog="exit codes: 0 released (--once) or stopped, 1 a problem (printed), 2 bad arguments")
    p.add_argument("--once", action="store_true", help="release once, print the table and exit")
    p.add_argument("--dir", type=Path, default=REPO_ROOT / ".sandbox", help="state directory (wiped at start)")
    p.add_argument("--arm64", action="store_true",
                   help="also provision the emulated arm64 worker (Debian arm64 under qemu-user, as root; its "
                        "build takes minutes) so the release builds both arches; the master starts it when an "
                        "aarch64 build is queued and stops it when idle (an on-demand worker)")
    p.add_argument("--images", action="store_true",
                   help="two local OCI registries: the release's runtime images are built (buildah) and pushed")
    p.add_argument("--github", action="store_true", help="a local GitHub stand-in receives the release")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    arches = ("x86_64", "aarch64") if args.arm64 else ("x86_64",)
    sb = Sandbox(args.dir, github=args.github, images=args.images, image_arches=arches)
    code = 1
    arm_root = None

    def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM/SIGHUP (a service manager, a closed terminal) and a SIGINT that
    # a background shell marked ignored must still stop the children below.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    try:
        if args.arm64:
            arm_root = _arm64_root(sb)
            sb.arm64_on_demand(arm_root)
        sb.start()
        if arm_root is not None:
            secs = sb.install_arm64(arm_root)
            sb.log(f"emulated arm64 worker installed by workers/provision.sh ({secs:.0f}s); the master starts it "
                   "when an aarch64 build is queued and stops it after 600 s idle")
        code = release_once(sb, arches)
        if arm_root is not None:
            _show_on_demand_starts(sb)
        if not args.once:
            serve(sb)
    except KeyboardInterrupt:
        sb.log("stopping")
    except Exception as exc:
        say(f"FAILED: {exc}")
        _print_master_log(sb)
        code = 1
    finally:
        if arm_root is not None:
            from sandbox import arm64

            arm64.stop(arm_root, shared=sb.arm64_shared)
        sb.stop()
        if arm_root is not None:
            arm_root.close()
    return code


def serve(sb: Sandbox) -> None:
    """Until Ctrl-C: one line per release, build result (a failure with its first error line) and
    worker connecting or leaving (``sandbox.watch``)."""
    watcher = watch.Watcher(sb)
    watcher.baseline()
    sb.log("serving; Ctrl-C to stop. From now on: releases, build results, workers connecting and leaving")
    watch.follow(sb, sb.log, watcher=watcher)


def release_once(sb: Sandbox, arches: tuple[str, ...]) -> int:
    """Push the new tag, wait for its release, print the table and check what it published; the exit code."""
    version = NEW_TAG[1:]
    before = max([b["buildid"] for b in sb.release_builds()] or [0])
    images_before = sb.newest_build(IMAGES) if sb.images else 0
    t_push = sb.push_tag(NEW_TAG)
    sb.log(f"pushed tag {NEW_TAG} to the fixture upstream; waiting for the poller")
    # The release ends when its builds have finished or wait for a worker nobody serves
    # (no arm64 worker unless ARM64=1); its publishing steps run before that.
    done = sb.wait_release(version, after=before, progress=True, timeout=5400 if "aarch64" in arches else 900)
    rows = done["rows"]
    print()
    print(format_table(rows), end="")
    print()
    sb.log(f"tag push -> release result: {time.monotonic() - t_push:.1f}s: {done['release']['state_string']}")
    expected = [(v.package, a) for v in load_variants().for_release(version) for a in v.arches if a in arches]
    ok = sorted((r["variant"], r["arch"]) for r in rows if r["uploaded"] == "yes") == sorted(expected)
    x86 = [r for r in rows if r["arch"] == "x86_64"]
    problems = sb.installable(x86, version) if ok else [f"not every {'/'.join(arches)} wheel was uploaded"]
    if sb.github:
        problems += _show_github(sb, NEW_TAG)
    if sb.images:
        problems += _show_images(sb, version, images_before)
    for prob in problems:
        sb.log(f"PROBLEM: {prob}")
    if not problems:
        sb.log(f"every {'/'.join(arches)} wheel of {version} is published and installable from {sb.simple_url}")
    sb.log(f"web UI: {sb.web_url}")
    sb.log(f"release matrix: {matrix.page_url(sb.web_url)} (JSON: {matrix.json_url(sb.web_url)})")
    return 0 if not problems else 1


def _show_on_demand_starts(sb: Sandbox) -> None:
    """How long each on-demand worker took from its start to connected (master/latent.py logs it)."""
    log = sb.master_dir / "twistd.log"
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "s after its start" in line:
            sb.log(line.split("vllm-cpu: ", 1)[-1])


def _print_master_log(sb: Sandbox) -> None:
    """The end of the master's log on stderr: why a start or a release failed."""
    for log in ("master/twistd.log", "master.log"):
        path = sb.root / log
        if path.exists():
            print("".join(path.read_text(errors="replace").splitlines(True)[-40:]), file=sys.stderr)
            return


def _arm64_root(sb: Sandbox) -> Any:
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
        return [f"no GitHub release {tag} at the stand-in {(sb.github or {}).get('api_url')}"]
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
