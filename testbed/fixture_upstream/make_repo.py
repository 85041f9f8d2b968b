"""Turn the fixture vLLM tree (``src/``) into a git repository with release tags.

The repository looks like upstream where the pipeline cares: annotated
``vX.Y.Z`` tags on commits of a ``main`` branch, setuptools_scm versions from
those tags.  It builds in seconds because its only extension is a small C file.

    python -m testbed.fixture_upstream.make_repo DEST [--tag v0.11.2 ...]
    python -m testbed.fixture_upstream.make_repo DEST --add v0.12.1   # new release on an existing repo
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.version import InvalidVersion, Version

SRC = Path(__file__).resolve().parent / "src"
DEFAULT_TAGS: list[str] = ["v0.11.1", "v0.11.2", "v0.12.0"]

# Fixed identity and dates: the repository does not depend on the caller's
# git config and two runs give the same commits.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "vLLM fixture",
    "GIT_AUTHOR_EMAIL": "fixture@localhost",
    "GIT_COMMITTER_NAME": "vLLM fixture",
    "GIT_COMMITTER_EMAIL": "fixture@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}
_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+(\.\d+)?((a|b|rc)\d+)?$")
_RELEASES_FILE = "RELEASES.txt"


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, **_GIT_ENV, "HOME": os.environ.get("HOME", "/tmp")}
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    out = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def check_tag(tag: str) -> str:
    """``tag`` if it is an upstream-style release tag ``vX.Y.Z`` (optionally rcN)."""
    if not _TAG_RE.match(tag):
        raise ValueError(f"{tag!r} is not a release tag like v0.11.2 or v0.12.0rc1")
    try:
        Version(tag[1:])
    except InvalidVersion:
        raise ValueError(f"{tag!r} is not a PEP 440 version") from None
    return tag


def rc_tags(tag: str, count: int = 1) -> list[str]:
    """Release candidates that precede ``tag``: ``v0.12.0`` -> ``[v0.12.0rc1, ...]``."""
    check_tag(tag)
    if Version(tag[1:]).pre:
        raise ValueError(f"{tag} is already a pre-release")
    return [f"{tag}rc{i}" for i in range(1, count + 1)]


def _commit_count(repo: Path) -> int:
    return int(_git(repo, "rev-list", "--count", "HEAD"))


def _date(repo: Path) -> str:
    n = _commit_count(repo)
    return f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00"


def add_release(repo: Path, tag: str, files: dict[str, str] | None = None) -> str:
    """Commit a release note on ``main`` and tag it ``tag`` (annotated); returns the commit.

    ``files`` (path relative to the repo -> text) are changed for this tag
    only, e.g. a compile error: ``main`` gets the old contents back in the
    next commit, so later tags are sound again.
    """
    check_tag(tag)
    repo = Path(repo)
    if _git(repo, "tag", "--list", tag):
        raise ValueError(f"{repo}: tag {tag} already exists")
    old = {rel: (repo / rel).read_text() for rel in files or {}}
    for rel, text in (files or {}).items():
        (repo / rel).write_text(text)
    # One commit per release, like upstream's release branches merging back.
    with (repo / _RELEASES_FILE).open("a") as fh:
        fh.write(f"{tag}\n")
    date = _date(repo)
    _git(repo, "add", _RELEASES_FILE, *old)
    _git(repo, "commit", "-q", "-m", f"Release {tag}", date=date)
    _git(repo, "tag", "-a", tag, "-m", f"vLLM {tag}", date=date)
    commit = _git(repo, "rev-parse", "HEAD")
    if old:
        for rel, text in old.items():
            (repo / rel).write_text(text)
        _git(repo, "add", *old)
        _git(repo, "commit", "-q", "-m", f"Undo the changes made for {tag}", date=_date(repo))
    return commit


def make_fixture_repo(dest: Path, tags: list[str] | None = None) -> Path:
    """Create ``dest`` as a git repo of the fixture tree with ``tags`` (default DEFAULT_TAGS).

    Each tag gets its own commit, in the given order; HEAD ends at the last one.
    """
    dest = Path(dest)
    tags = list(DEFAULT_TAGS if tags is None else tags)
    for t in tags:
        check_tag(t)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    shutil.copytree(SRC, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "_version.py", "*.so", "__pycache__"))
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "Initial fixture vLLM tree", date="2025-01-01T00:00:00+00:00")
    for t in tags:
        add_release(dest, t)
    return dest


def main(argv: list[str] | None = None) -> int:
    from vllm_cpu_build.helptext import Parser, describe

    p = Parser(prog="python -m testbed.fixture_upstream.make_repo", description=describe(__doc__))
    p.add_argument("dest", type=Path, help="directory to create (must be empty or absent)")
    p.add_argument("--tag", action="append", dest="tags", help=f"release tag, repeatable (default: {DEFAULT_TAGS})")
    p.add_argument("--add", action="append", default=[], help="add this release tag to an existing repo instead")
    args = p.parse_args(argv)
    try:
        if args.add:
            for t in args.add:
                print(f"{args.dest}: {t} at {add_release(args.dest, t)}")
            return 0
        make_fixture_repo(args.dest, args.tags)
    except (ValueError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dest}: fixture vLLM repo with tags {', '.join(args.tags or DEFAULT_TAGS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
