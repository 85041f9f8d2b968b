"""Chain of custody, the pure rules: a file on the index is this farm's only if the ledger holds its sha256.

``farm.custody`` (ours or foreign, and why), ``farm.published`` (what counts
as already published), the upload's hash comparison and the release mail.
"""

from __future__ import annotations

from buildbot.process.results import SUCCESS, WARNINGS

from farm import custody, published
from farm.custody import FOREIGN_PROPERTY, Foreign
from master import notify
from vllm_cpu_build.index import IndexFile
from vllm_cpu_build.upload import conflict

A, B = "a" * 64, "b" * 64
X86 = "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"
ARM = "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl"
OLD = "vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"


def f(name: str, sha: str | None = A, yanked: bool = False) -> IndexFile:
    return IndexFile(name, f"http://index.test/packages/{name}#sha256={sha}", sha, 10, yanked)


def test_ours_only_with_the_recorded_sha256() -> None:
    assert custody.why_foreign(f(X86), A) is None
    assert custody.why_foreign(f(X86), None) == "no build of this farm produced and verified it"
    assert custody.why_foreign(f(X86), B) == (f"this farm built and verified sha256 {B} under this name; "
                                              "the index holds another file")
    assert "gives no sha256" in (custody.why_foreign(f(X86, None), A) or "")  # an unchecked listing is not ours


def test_split_and_yanked_files() -> None:
    ours, foreign = custody.split([f(X86), f(ARM, B), f(OLD, yanked=True)], {X86: A, ARM: A, OLD: A})
    assert ours == [f(X86)]
    assert foreign == [Foreign(ARM, B, custody.why_foreign(f(ARM, B), A) or "")]


def test_filter_published_counts_only_this_farms_files() -> None:
    """A planted wheel is not 'already published': the build runs, and the planted file is named."""
    listing = {"vllm-cpu": [f(X86), f(ARM, B), f(OLD, B)]}

    def lister(url: str, project: str) -> list[IndexFile]:
        return listing.get(project, [])

    asked: list[list[str]] = []

    def ledger(names: list[str]) -> dict[str, str]:
        asked.append(sorted(names))
        return {X86: A}

    builds = [{"variant": "vllm-cpu", "arch": a, "pythons": ["3.12"], "abi3": True} for a in ("x86_64", "aarch64")]
    seen: list[Foreign] = []
    todo, notes = published.filter_published(builds, "http://index.test/simple/", "0.12.0", lister=lister,
                                             ledger=ledger, foreign=seen)
    assert [b["arch"] for b in todo] == ["aarch64"]
    assert asked == [sorted([X86, ARM, OLD])]  # one listing and one ledger look-up per package
    assert {x.file for x in seen} == {ARM, OLD}
    assert notes == [f"foreign, not counted as published: {ARM} (sha256 {B}): no build of this farm produced "
                     "and verified it", f"vllm-cpu x86_64: already published ({X86})"]
    missing = published.missing_builds("http://index.test/simple/", {"0.12.0": "v0.12.0", "0.11.2": "v0.11.2"},
                                       lambda v: [dict(b) for b in builds], {}, lister=lister, ledger=lambda n: {})
    assert sorted(map(str, missing)) == ["vllm-cpu aarch64", "vllm-cpu aarch64", "vllm-cpu x86_64",
                                         "vllm-cpu x86_64"]


def test_upload_conflict_names_both_hashes() -> None:
    assert conflict(f(X86), A) is None
    why = conflict(f(X86, B), A) or ""
    assert f"index sha256 {B}" in why and f"this build's verified wheel sha256 {A}" in why and X86 in why
    assert "gives no sha256" in (conflict(f(X86, None), A) or "")


def _release(results: int, **props) -> dict:
    base = {"version": "0.12.0", "tag": "v0.12.0", "dry_run": False, "skip_upload": False, **props}
    return {"buildid": 7, "number": 3, "builderid": 1, "results": results, "complete": True,
            "state_string": "build successful", "properties": {k: [v, "t"] for k, v in base.items()}, "steps": []}


def test_release_mail_announces_foreign_files() -> None:
    assert notify.format_release(_release(SUCCESS), [], "http://bb/", "t", "http://up/") is None
    planted = [Foreign(ARM, B, "no build of this farm produced and verified it").to_json()]
    msg = notify.format_release(_release(WARNINGS, **{FOREIGN_PROPERTY: planted}), [], "http://bb/", "t", "http://up/")
    assert msg is not None
    subject, body = msg
    assert subject.endswith("1 FOREIGN file(s) on the index"), subject
    assert "FOREIGN FILES on the index" in body and f"  - {ARM} (sha256 {B}): no build of this farm" in body
    assert custody.mail_lines("garbage") == [] and custody.from_property([{"nofile": 1}, 3]) == []


def test_a_tags_release_queued_running_or_done_starts_nothing_new() -> None:
    from farm.decisions import OpenRequest, PastBuild, release_of_tag
    from farm.states import Result

    def tag_version(tag: str) -> str | None:
        return tag.removeprefix("v") if tag.startswith("v0.") else None

    assert release_of_tag("0.12.0", [], [], tag_version) is None
    waiting = OpenRequest(7, {}, branch="refs/tags/v0.12.0")  # the poller's change, not started yet
    assert release_of_tag("0.12.0", [waiting], [], tag_version) == (
        "the release of 0.12.0 is queued or running (build request 7)")
    dry = OpenRequest(8, {"versions": "0.12.0", "dry_run": True})
    assert release_of_tag("0.12.0", [dry], [], tag_version) is None  # a dry run publishes nothing
    failed = PastBuild(Result.FAILURE, {"version": "0.12.0"})
    assert release_of_tag("0.12.0", [], [failed], tag_version) == "the release of 0.12.0 is done (failure)"
    other = [PastBuild(Result.SUCCESS, {"version": "0.12.1"}), PastBuild(Result.SUCCESS, {"version": "0.12.0",
                                                                                           "postfix": ".post1"})]
    assert release_of_tag("0.12.0", [OpenRequest(9, {"version": "0.11.2"})], other, tag_version) is None
