"""``farm.states``: the enums are Buildbot's results and the documented words, nothing else."""

from __future__ import annotations

import json

import pytest
from buildbot.process import results as bb

from farm.states import BAD, OK, BuildState, CellState, Result, label


def test_result_is_buildbots_integer_and_name() -> None:
    assert [int(r) for r in Result] == bb.ALL_RESULTS
    for value in bb.ALL_RESULTS:
        r = Result(value)
        assert r == value and r.label == bb.statusToString(value) and Result.named(r.label) is r
    assert Result.of(None) is None and Result.of(-1) is None  # a build request's "no result yet"
    assert label(None) == "not finished" and label(bb.CANCELLED) == "cancelled"
    with pytest.raises(ValueError, match="not a Buildbot result"):
        Result.named("succeeded")
    # Buildbot's own helpers take the members as they are.
    assert bb.worst_status(Result.WARNINGS, Result.FAILURE) == bb.FAILURE
    assert json.dumps({"results": Result.EXCEPTION}) == '{"results": 4}'


def test_ok_and_bad_results() -> None:
    assert {r for r in Result if r.ok} == OK == {Result.SUCCESS, Result.WARNINGS}
    assert {r for r in Result if r.bad} == BAD == {Result.FAILURE, Result.EXCEPTION, Result.CANCELLED}
    assert bb.FAILURE in BAD and None not in OK  # data-API integers and "not finished" compare as they are


def test_states_read_as_their_words() -> None:
    assert [str(s) for s in CellState] == ["published", "published with caveats", "foreign", "building", "waiting",
                                          "failed", "ready", "dry run", "not built", "not applicable"]
    assert f"{CellState.DRY_RUN}" == "dry run" and CellState.DRY_RUN == "dry run"
    assert json.dumps([CellState.NOT_BUILT, BuildState.WAITING]) == '["not built", "waiting"]'
    assert f"1 {BuildState.CANCELLED}" == "1 cancelled"
