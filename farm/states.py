"""The closed sets of the release logic: a build's result, a variant build's state, a matrix cell's state.

``Result`` is Buildbot's integer result (``buildbot.process.results``) as an
enum: its members *are* Buildbot's integers (an ``IntEnum``), ``label`` is
Buildbot's own name for it (``"success"``, ``"warnings"``, ...), so a value
read from the data API, a step's return value and a mail's text agree.
``BuildState`` is where one variant build of a release stands (the release
report, ``fan_out``'s verdict); ``CellState`` is a cell of the release matrix
(its documented JSON ``states``).  Both are ``str`` enums: their value is the
word the table, the JSON and the page show.
"""

from __future__ import annotations

import enum

from buildbot.process import results as bb


class Result(enum.IntEnum):
    """A finished build's or step's result: Buildbot's integer, with Buildbot's name as ``label``."""

    SUCCESS = bb.SUCCESS
    WARNINGS = bb.WARNINGS
    FAILURE = bb.FAILURE
    SKIPPED = bb.SKIPPED
    EXCEPTION = bb.EXCEPTION
    RETRY = bb.RETRY
    CANCELLED = bb.CANCELLED

    @property
    def label(self) -> str:
        """Buildbot's word for it: ``success``, ``warnings``, ``failure``, ... (``statusToString``)."""
        return str(bb.statusToString(int(self)))

    @classmethod
    def of(cls, value: int | None) -> Result | None:
        """The result of a data-API ``results`` field: None while not finished (None, or -1 for a request)."""
        return None if value is None or value < 0 else cls(value)

    @classmethod
    def named(cls, label: str) -> Result:
        """The result Buildbot calls ``label`` (``"cancelled"`` -> CANCELLED); ValueError for another word."""
        for r in cls:
            if r.label == label:
                return r
        raise ValueError(f"not a Buildbot result: {label!r}")

    @property
    def ok(self) -> bool:
        """The build made what it should (warnings included: e.g. a smoke test skipped for lack of a CPU)."""
        return self in OK

    @property
    def bad(self) -> bool:
        """Failed, broke or was cancelled: what a rebuild redoes and a failure mail reports."""
        return self in BAD


# Buildbot's own names, for a step's ``return FAILURE`` (typed, unlike ``buildbot.process.results``).
SUCCESS = Result.SUCCESS
WARNINGS = Result.WARNINGS
FAILURE = Result.FAILURE
SKIPPED = Result.SKIPPED
EXCEPTION = Result.EXCEPTION
RETRY = Result.RETRY
CANCELLED = Result.CANCELLED

OK = frozenset({SUCCESS, WARNINGS})
BAD = frozenset({FAILURE, EXCEPTION, CANCELLED})
FAILED_ATTEMPT = frozenset({FAILURE, EXCEPTION})  # a build that tried and failed (not cancelled, not a retry)


def label(value: int | None) -> str:
    """Buildbot's word for a data-API ``results`` field: ``success``, ..., ``not finished`` for None."""
    r = Result.of(value)
    return r.label if r is not None else "not finished"


class _Word(str, enum.Enum):
    """A ``str`` enum whose text is its value (f-strings, tables, JSON), on every Python we support."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class BuildState(_Word):
    """Where one variant × arch build of a release stands (``farm.decisions.build_state``)."""

    OK = "ok"  # finished: success, warnings or skipped
    FAILED = "failed"  # finished otherwise (failure, exception, retry, no result)
    CANCELLED = "cancelled"
    RUNNING = "running"  # a worker builds it
    QUEUED = "queued"  # a connected worker will take it
    WAITING = "waiting"  # no connected worker of its arch could take it


class CellState(_Word):
    """A cell of the release matrix: what a maintainer needs to know first about a version × package × arch."""

    PUBLISHED = "published"
    PUBLISHED_CAVEATS = "published with caveats"  # published, but not fully tested (e.g. smoke skipped): says why
    FOREIGN = "foreign"  # the index holds a file no build of this farm produced and verified (farm.custody)
    BUILDING = "building"
    WAITING = "waiting"
    FAILED = "failed"
    READY = "ready"  # a readiness build ("next" rows) built, verified and smoke-tested what the next release will be
    DRY_RUN = "dry run"
    NOT_BUILT = "not built"
    NOT_APPLICABLE = "not applicable"


def _check_covers_buildbot() -> None:
    """Every result Buildbot knows is a member, under Buildbot's own name (checked at import, also with -O)."""
    known = {int(r): r.label for r in Result}
    theirs = {int(v): str(bb.statusToString(v)) for v in bb.ALL_RESULTS}
    if known != theirs:
        raise RuntimeError(f"farm.states.Result {known} does not match Buildbot's results {theirs}")


_check_covers_buildbot()
