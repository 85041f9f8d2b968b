"""Unit tests: what a maintainer types into the force form."""

from __future__ import annotations

import pytest

from master import settings, versions
from master.versions import InputError

TAGS = ["v0.10.0", "v0.10.1.1", "v0.11.0", "v0.11.1", "v0.11.2", "v0.12.0", "v0.13.0rc1", "v0.13.0",
        "nightly", "v0.14.0.dev3", "refs/tags/v0.16.0"]


def available(pre: bool = False) -> dict[str, str]:
    return versions.release_tags(TAGS, settings.Settings().tag_pattern, prereleases=pre)


def test_release_tags_skip_prereleases_unless_asked() -> None:
    a = available()
    assert list(a) == ["0.10.0", "0.10.1.1", "0.11.0", "0.11.1", "0.11.2", "0.12.0", "0.13.0", "0.16.0"]
    assert a["0.16.0"] == "v0.16.0"
    assert "0.13.0rc1" in available(pre=True)


@pytest.mark.parametrize(("spec", "want"), [
    ("0.11.2", ["0.11.2"]),
    ("0.11.0-0.12.0", ["0.11.0", "0.11.1", "0.11.2", "0.12.0"]),
    ("0.10.0, 0.11.0-0.11.2", ["0.10.0", "0.11.0", "0.11.1", "0.11.2"]),
    ("0.12.0 0.10.0,0.12.0", ["0.10.0", "0.12.0"]),
    ("0.12.0-0.16.0", ["0.12.0", "0.13.0", "0.16.0"]),
])
def test_expand_versions(spec: str, want: list[str]) -> None:
    assert versions.expand_versions(spec, available()) == want


def test_range_includes_prerelease_only_as_end_point() -> None:
    a = available(pre=True)
    assert versions.expand_versions("0.12.0-0.13.0", a) == ["0.12.0", "0.13.0"]
    assert versions.expand_versions("0.12.0-0.13.0rc1", a) == ["0.12.0", "0.13.0rc1"]


@pytest.mark.parametrize(("spec", "msg"), [
    ("0.99.0", "not an upstream release"),
    ("0.12.0-0.11.0", "start is after end"),
    ("0.11.0-", "malformed range"),
    ("0.11.0-0.11.1-0.12.0", "malformed range"),
    ("banana", "not a version"),
    ("0.14.0-0.15.0", "contains no upstream release"),
    ("", "no version given"),
])
def test_bad_versions_say_why(spec: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        versions.expand_versions(spec, available())


@pytest.mark.parametrize(("raw", "want"), [
    ("", ""), (".post1", ".post1"), ("post2", ".post2"), (".dev0", ".dev0"), ("rc1", "rc1"), ("a3", "a3"),
    ("b12", "b12"), (".post01", ".post1"), ("-post1", ".post1"),
])
def test_postfix_normalised(raw: str, want: str) -> None:
    assert versions.normalize_postfix(raw) == want


@pytest.mark.parametrize("raw", ["+cpu", ".post", "post1.dev1", "1", "rc", ".rc1x", "final"])
def test_bad_postfix(raw: str) -> None:
    with pytest.raises(InputError, match="not a version postfix"):
        versions.normalize_postfix(raw)


def test_final_version() -> None:
    assert versions.final_version("0.11.2", "post1") == "0.11.2.post1"
    assert versions.final_version("0.13.0", "rc2") == "0.13.0rc2"


@pytest.mark.parametrize(("spec", "want"), [
    ("auto", None), ("", None), ("3.11", ["3.11"]), ("3.12,3.10", ["3.10", "3.12"]),
    ("3.10-3.13", ["3.10", "3.11", "3.12", "3.13"]), ("3.10-3.11, 3.13", ["3.10", "3.11", "3.13"]),
])
def test_pythons(spec: str, want: list[str] | None) -> None:
    assert versions.parse_pythons(spec) == want


@pytest.mark.parametrize("spec", ["3", "2.7", "3.13-3.10", "3.10-3.11-3.12", "python3.11", "3.x", "4.0"])
def test_bad_pythons(spec: str) -> None:
    with pytest.raises(InputError):
        versions.parse_pythons(spec)


def test_tag_version_accepts_full_refs() -> None:
    pat = settings.Settings().tag_pattern
    assert str(versions.tag_version("refs/tags/v0.11.2", pat)) == "0.11.2"
    assert versions.tag_version("refs/heads/main", pat) is None
    assert versions.tag_version("v0.13.0rc1", pat).is_prerelease
