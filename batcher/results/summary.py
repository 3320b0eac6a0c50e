"""summary.json as typed values: what `validate` found, and what a run did.

A summary is written once (`RunDir.write_summary`) and read once (`RunDir.read_summary`); every
other module takes the typed value. To add a figure, add a field with a default to the class:
it is written in field order and read back by name, and a summary written before the field
existed reads with the default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class InputFacts:
    """The input as validate saw it."""

    format: str = "csv"
    files: list[dict[str, Any]] = field(default_factory=list)  # input.files.InputFile.to_json()
    rows: int = 0
    # Blank lines (or rows of empty cells) skipped: not rows, but they keep their numbers.
    blank_lines_skipped: int = 0
    columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSummary:
    """What validate finds: the head of both validate's and a run's summary.json."""

    job: str = ""
    run_id: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    input: InputFacts = field(default_factory=InputFacts)
    # validate: valid / rejected / duplicate. A run: rows per status (validate's: `validation`).
    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    pairs: int = 0
    customers: int = 0
    # Requests the plan makes (a run's summary also has `requests_sent`: every HTTP request).
    requests_planned: int = 0
    warnings: list[str] = field(default_factory=list)
    # At the quota: what sending takes at least (throttles and retries only add to it).
    expected_send_seconds: float = 0.0

    def plan_fields(self) -> dict[str, Any]:
        """This plan's fields by name (shallow), to start a larger summary from."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(PlanSummary)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidateSummary(PlanSummary):
    """`batcher validate`'s summary.json."""

    command: str = "validate"
    started_at: str | None = None
    finished_at: str | None = None
    outputs: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = to_json(self)
        return {"command": data.pop("command"), **data}  # the command first, as it always was


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary(PlanSummary):
    """A run's summary.json (`run`, `resume`, `retry`): counts per status sum to input rows."""

    command: str = "run"
    parent: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    validation: dict[str, int] = field(default_factory=dict)
    codes: list[dict[str, Any]] = field(default_factory=list)
    requests_sent: int = 0
    responses_by_status: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    retries: int = 0
    splits: int = 0
    transport_errors: int = 0
    token_refreshes: int = 0
    # Times every request failed, FAILURES_TO_OUTAGE in a row (send.outage).
    outages: int = 0
    # Requests refused for their size (1060), and the limit learned from them (send.batch_limit).
    size_refusals: int = 0
    learned_customers_per_request: int | None = None
    elapsed_seconds: float = 0.0
    send_seconds: float = 0.0
    achieved_requests_per_second: float = 0.0
    quota_requests_per_second: float = 0.0
    quota_period_seconds: float = 1.0
    # What the quota governs: the most requests in any window of its period (see quota_use).
    quota_use: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    timeline: list[dict[str, int]] = field(default_factory=list)
    org: dict[str, Any] | None = None
    # Customers in answers that matched no customer sent (their rows' notes say so).
    unmatched_answers: int = 0
    stopped: str | None = None
    abort: str | None = None
    exit_code: int | None = None
    files: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: its folder, exit code and summary (as written to summary.json)."""

    run_dir: Path
    exit_code: int
    summary: RunSummary

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, as in summary.json."""
        return self.summary.counts

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped early (exit 3); None when it finished."""
        return self.summary.stopped


def to_json(record: Any) -> dict[str, Any]:
    """A typed record as a JSON-ready dict, fields in declaration order."""
    data: dict[str, Any] = dataclasses.asdict(record)
    return data


def from_json(cls: type[T], data: Any) -> T:
    """A typed record from parsed JSON: missing keys take their defaults, unknown keys are ignored.

    Raises KeyError for a missing field without a default and TypeError when `data` is not an
    object; the caller says which file was unreadable.
    """
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f.name)
    return cls(**values)


def _convert(hint: Any, value: Any) -> Any:
    """Nested records (and lists of them) become their classes; everything else stays as parsed."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_json(hint, value)
    return value
