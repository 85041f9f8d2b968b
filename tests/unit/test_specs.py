"""vllm_cpu_build/specs.py: the one parser per input format (force form, tags, plan, patch)."""

from __future__ import annotations

import re

import pytest

from farm import settings
from vllm_cpu_build import specs
from vllm_cpu_build.specs import SpecError

TAGS = ["v0.10.0", "v0.10.1.1", "v0.11.0", "v0.11.1", "v0.11.2", "v0.12.0", "v0.13.0rc1", "v0.13.0",
        "nightly", "v0.14.0.dev3", "refs/tags/v0.16.0"]


def available(pre: bool = False) -> dict[str, str]:
    return specs.release_tags(TAGS, settings.Settings().upstream.tag_pattern, prereleases=pre)


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
    assert specs.expand_versions(spec, available()) == want


def test_range_includes_prerelease_only_as_end_point() -> None:
    a = available(pre=True)
    assert specs.expand_versions("0.12.0-0.13.0", a) == ["0.12.0", "0.13.0"]
    assert specs.expand_versions("0.12.0-0.13.0rc1", a) == ["0.12.0", "0.13.0rc1"]


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
    with pytest.raises(SpecError, match=msg):
        specs.expand_versions(spec, available())


@pytest.mark.parametrize(("raw", "want"), [
    ("", ""), (".post1", ".post1"), ("post2", ".post2"), (".dev0", ".dev0"), ("rc1", "rc1"), ("a3", "a3"),
    ("b12", "b12"), (".post01", ".post1"), ("-post1", ".post1"),
])
def test_postfix_normalised(raw: str, want: str) -> None:
    assert specs.normalize_postfix(raw) == want


@pytest.mark.parametrize("raw", ["+cpu", ".post", "post1.dev1", "1", "rc", ".rc1x", "final"])
def test_bad_postfix(raw: str) -> None:
    with pytest.raises(SpecError, match="not a version postfix"):
        specs.normalize_postfix(raw)


def test_final_version() -> None:
    assert specs.final_version("0.11.2", "post1") == "0.11.2.post1"
    assert specs.final_version("0.13.0", "rc2") == "0.13.0rc2"


@pytest.mark.parametrize(("spec", "want"), [
    ("auto", None), ("", None), ("3.11", ["3.11"]), ("3.12,3.10", ["3.10", "3.12"]),
    ("3.10-3.13", ["3.10", "3.11", "3.12", "3.13"]), ("3.10-3.11, 3.13", ["3.10", "3.11", "3.13"]),
])
def test_pythons(spec: str, want: list[str] | None) -> None:
    assert specs.parse_pythons(spec) == want


@pytest.mark.parametrize("spec", ["3", "2.7", "3.13-3.10", "3.10-3.11-3.12", "python3.11", "3.x", "4.0"])
def test_bad_pythons(spec: str) -> None:
    with pytest.raises(SpecError):
        specs.parse_pythons(spec)


def test_tag_version_accepts_full_refs() -> None:
    pat = settings.Settings().upstream.tag_pattern
    assert str(specs.tag_version("refs/tags/v0.11.2", pat)) == "0.11.2"
    assert specs.tag_version("refs/heads/main", pat) is None
    assert specs.tag_version("v0.13.0rc1", pat).is_prerelease


@pytest.mark.parametrize(("requires", "asked", "want"), [
    (">=3.10,<3.14", "auto", ["3.10", "3.11", "3.12", "3.13"]),
    (">=3.11,<3.15", "auto", ["3.11", "3.12", "3.13", "3.14"]),
    (">=3.9,<3.13", "3.10-3.13", ["3.10", "3.11", "3.12"]),
    (">=3.10,<3.14", "3.12, 3.11", ["3.11", "3.12"]),
    (">=3.10,<3.14", "3.11 3.12", ["3.11", "3.12"]),
    (">=3.10,<3.14", "3.10-3.11,3.13", ["3.10", "3.11", "3.13"]),
    (">=3.10,!=3.11.*,<3.14", "auto", ["3.10", "3.12", "3.13"]),
])
def test_pythons_for_trims_to_requires_python(requires, asked, want):
    assert specs.pythons_for(requires, asked, strict=False) == want


@pytest.mark.parametrize("asked", ["3.13-3.10", "py3", "3.8", "3.٣"])
def test_pythons_for_bad_or_empty(asked):
    with pytest.raises(SpecError):
        specs.pythons_for(">=3.10,<3.14", asked, strict=False)


def test_pythons_for_strict_names_what_is_outside():
    with pytest.raises(SpecError, match="3.9 not allowed by requires-python"):
        specs.pythons_for(">=3.10,<3.14", "3.9-3.11")
    assert specs.pythons_for(">=3.10,<3.14", "3.10-3.11") == ["3.10", "3.11"]


def test_only_ascii_digits():
    with pytest.raises(SpecError):
        specs.parse_pythons("3.١١")
    with pytest.raises(SpecError):
        specs.parse_version_spec("٠.11.2")


def test_final_version_refuses_local_and_bad_postfix():
    with pytest.raises(SpecError, match="local"):
        specs.final_version("0.11.2+cpu")
    with pytest.raises(SpecError, match="not a version postfix"):
        specs.final_version("0.11.2", "+cpu")


def test_release_version_honours_prereleases():
    pat = settings.Settings().upstream.tag_pattern
    assert specs.release_version("refs/tags/v0.13.0rc1", pat, prereleases=False) is None
    assert specs.release_version("refs/tags/v0.13.0rc1", pat, prereleases=True) == "0.13.0rc1"
    assert specs.release_version("v0.11.2-evil", pat, prereleases=True) is None


@pytest.mark.parametrize(("raw", "want"), [("0.12", "0.12.0"), ("v0.12", "0.12.0"), ("0.12.0", "0.12.0"),
                                           ("1", "1.0.0"), ("0.13-rc1", "0.13.0rc1"), ("0.12.post2", "0.12.0.post2"),
                                           ("0.10.1.1", "0.10.1.1"), ("1!0.12", "1!0.12.0")])
def test_versions_get_three_release_components(raw: str, want: str) -> None:
    assert specs.normalize_version(raw) == want
    assert str(specs.parse_version(raw)) == want
    assert specs.final_version(raw) == want


def test_a_short_version_is_one_version_everywhere() -> None:
    assert specs.final_version("0.12", "post1") == "0.12.0.post1"
    assert specs.parse_version_spec("0.11-0.12") == [(specs.parse_version("0.11.0"), specs.parse_version("0.12.0"))]
    assert specs.expand_versions("0.12", ["0.11.2", "0.12.0"]) == ["0.12.0"]
    pattern = settings.Settings().upstream.tag_pattern
    assert specs.release_version("v0.12", pattern, False) is None  # the tag pattern wants three components
    assert specs.tag_version("v0.12", re.compile(r"v(?P<version>.+)")) == specs.parse_version("0.12.0")


def test_the_version_option_type_is_the_one_parser() -> None:
    import argparse

    from vllm_cpu_build.cli import version_arg

    assert version_arg(" 0.12 ") == "0.12.0"
    with pytest.raises(argparse.ArgumentTypeError, match="'0.x' is not a version"):
        version_arg("0.x")
