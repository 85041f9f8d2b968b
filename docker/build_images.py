#!/usr/bin/env python3
"""Build (or print) the Docker runtime images of one vLLM release.

Image names and tags derive from variants.json: ``<repo>:<short>-<version>``
and, with ``--latest``, ``<repo>:<short>-latest``, for every variant published
for that release. Runs on a worker with a Docker engine; elsewhere use
``--print`` to see the commands.

Exit codes: 0 ok, 1 a docker build failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from packaging.version import InvalidVersion, Version  # noqa: E402

from vllm_cpu_build import variants  # noqa: E402


def commands(version: str, repo: str, latest: bool, only: list[str] | None) -> list[list[str]]:
    catalog = variants.load()
    chosen = catalog.for_release(version)
    if only:
        wanted = {catalog.get(name).package for name in only}
        chosen = [v for v in chosen if v.package in wanted]
    out = []
    for v in chosen:
        tags = v.docker_tags(version) if latest else v.docker_tags(version)[:1]
        cmd = ["docker", "build", "-f", str(ROOT / "docker" / "Dockerfile"),
               "--build-arg", f"PACKAGE={v.package}", "--build-arg", f"VERSION={version}",
               "--build-arg", f"TORCH_INDEX_URL={catalog.project['torch_index_url']}"]
        for tag in tags:
            cmd += ["-t", f"{repo}:{tag}"]
        out.append([*cmd, str(ROOT)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", required=True, help="package version, e.g. 0.11.2 or 0.11.2.post1")
    parser.add_argument("--repo", default="vllm-cpu", help="image repository (default: vllm-cpu)")
    parser.add_argument("--variants", help="comma-separated packages (default: all published for the release)")
    parser.add_argument("--latest", action="store_true", help="also tag <short>-latest")
    parser.add_argument("--print", dest="dry", action="store_true", help="print the commands, build nothing")
    args = parser.parse_args(argv)
    try:
        Version(args.version)
        cmds = commands(args.version, args.repo, args.latest, args.variants.split(",") if args.variants else None)
    except (InvalidVersion, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cmds:
        print(f"error: no package is published for vLLM {args.version}", file=sys.stderr)
        return 2
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if not args.dry and subprocess.call(cmd) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
