"""tests/sdist.py against a real HTTP index on 127.0.0.1 (PEP 691 JSON), and the real one."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import sdist

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def make_sdist(version: str, files: dict[str, str], evil: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = {f"vllm-{version}/{k}": v for k, v in files.items()}
        if evil:
            names[evil] = "boom"
        for name, text in names.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Index:
    """A tiny simple-index server: /simple/vllm/ (JSON) and /files/<name>."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.meta: dict[str, dict] = {}
        self.hits: list[str] = []
        self.fail_next = 0  # answer this many requests with 503 first (a busy or restarting index)
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                index.hits.append(self.path)
                if index.fail_next > 0:
                    index.fail_next -= 1
                    self.send_error(503)
                    return
                if self.path == "/simple/vllm/":
                    if SIMPLE_JSON not in self.headers.get("Accept", ""):
                        self.send_error(406)
                        return
                    body = json.dumps({"meta": {"api-version": "1.0"}, "name": "vllm", "files": [
                        {"filename": n, "url": f"../../files/{n}", "size": len(d),
                         "hashes": {"sha256": index.meta.get(n, {}).get("sha256", hashlib.sha256(d).hexdigest())},
                         "yanked": index.meta.get(n, {}).get("yanked", False)}
                        for n, d in index.files.items()]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", SIMPLE_JSON)
                elif self.path.startswith("/files/") and self.path[7:] in index.files:
                    body = index.files[self.path[7:]]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                else:
                    self.send_error(404)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, version: str, data: bytes, **meta) -> None:
        self.files[f"vllm-{version}.tar.gz"] = data
        self.meta[f"vllm-{version}.tar.gz"] = meta


@pytest.fixture
def index(monkeypatch, tmp_path):
    idx = Index()
    idx.thread.start()
    monkeypatch.setenv("PIP_INDEX_URL", idx.url)
    monkeypatch.setenv("VLLM_CPU_CACHE", str(tmp_path / "cache"))
    yield idx
    idx.server.shutdown()
    idx.server.server_close()


FILES = {"setup.py": "print('setup')\n", "cmake/cpu_extension.cmake": "# cmake\n", "PKG-INFO": "Version: 9.1.0\n",
         "csrc/big.cpp": "int x;\n"}


def test_index_url_follows_pip(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/mirror/simple")
    assert sdist.index_url() == "http://127.0.0.1:9/mirror/simple/"
    monkeypatch.delenv("PIP_INDEX_URL")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    from pip._internal.models.index import PyPI

    assert sdist.index_url() == PyPI.simple_url.rstrip("/") + "/"


def test_fetch_checks_sha_and_caches(index, tmp_path):
    index.add("9.1.0", make_sdist("9.1.0", FILES))
    path = sdist.fetch("9.1.0")
    assert path.parent == tmp_path / "cache" / "sdists" and path.name == "vllm-9.1.0.tar.gz"
    assert path.read_bytes() == index.files["vllm-9.1.0.tar.gz"]
    index.hits.clear()
    assert sdist.fetch("9.1.0") == path
    assert index.hits == [], "a verified cached file must not be downloaded again"


def test_fetch_survives_a_transient_index_failure(index, tmp_path):
    """The shared index client retries 5xx with backoff: a restarting index is not a failed run."""
    index.add("9.1.0", make_sdist("9.1.0", FILES))
    index.fail_next = 2
    path = sdist.fetch("9.1.0")
    assert path.read_bytes() == index.files["vllm-9.1.0.tar.gz"]
    assert index.hits[:3] == ["/simple/vllm/"] * 3


def test_fetch_rejects_bad_hash_and_leaves_nothing(index, tmp_path):
    index.add("9.2.0", make_sdist("9.2.0", FILES), sha256="0" * 64)
    with pytest.raises(sdist.SdistError, match="sha256"):
        sdist.fetch("9.2.0")
    assert not list((tmp_path / "cache" / "sdists").glob("*")), "no partial or bad file may stay in the cache"


def test_fetch_unknown_version(index):
    index.add("9.1.0", make_sdist("9.1.0", FILES))
    with pytest.raises(sdist.SdistError, match="no file vllm-9.9.9.tar.gz"):
        sdist.fetch("9.9.9")


def test_newest_release_skips_prereleases_and_yanked(index):
    for v in ("9.1.0", "9.3.0rc1"):
        index.add(v, make_sdist(v, FILES))
    index.add("9.2.0", make_sdist("9.2.0", FILES), yanked=True)
    assert sdist.newest_release() == "9.1.0"
    assert [str(v) for v in sdist.available_versions()] == ["9.1.0", "9.3.0rc1"]


def test_extract_only_members(index, tmp_path):
    index.add("9.1.0", make_sdist("9.1.0", FILES))
    out = sdist.extract("9.1.0", tmp_path / "src", ["setup.py", "cmake/"])
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["cmake/cpu_extension.cmake", "setup.py"]
    full = sdist.extract("9.1.0", tmp_path / "all")
    assert (full / "csrc/big.cpp").read_text() == "int x;\n"


def test_extract_refuses_path_traversal(index, tmp_path):
    index.add("9.1.0", make_sdist("9.1.0", FILES, evil="vllm-9.1.0/../../escape.txt"))
    with pytest.raises(sdist.SdistError, match="unsafe"):
        sdist.extract("9.1.0", tmp_path / "src")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.slow
def test_real_index_newest_and_cached_sdist(tmp_path):
    """The configured index really answers; a cached sdist matches its published sha256."""
    newest = sdist.newest_release()
    from packaging.version import Version

    assert Version(newest) >= Version("0.33.0")
    path = sdist.fetch("0.10.0")
    stamp = Path(str(path) + ".sha256").read_text().strip()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stamp
