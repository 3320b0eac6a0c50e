"""The settings schema (batcher/settings.py): msgspec's complaints become the right Problem.

settings.py reads msgspec's words ("Object contains unknown field ...", "Expected `int`, got
`str` - at `$.a.b`"): each shape is pinned here, so a msgspec upgrade that rewords one fails a
test instead of quietly blurring a message.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from batcher.settings import Problem, Quota, Table, convert, key, keys, parse_rate, sections

_POS = "a positive integer"


class Inner(Table):
    count: Annotated[int, key(_POS, gt=0)] = 1
    codes: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=400)], ...], key("a list of statuses")
    ] = ()
    options: Annotated[dict[str, str], key("a table of strings")] = msgspec.field(
        default_factory=dict
    )


class Outer(Table):
    name: Annotated[str, key("a name")]
    maybe: Annotated[int, key("an optional integer", ge=0)] | None = None
    inner: Inner = msgspec.field(default_factory=Inner)


def problem(data: dict[str, Any]) -> Problem:
    with pytest.raises(Problem) as caught:
        convert(data, Outer)
    return caught.value


@pytest.mark.parametrize(
    ("data", "kind", "key_", "value", "allowed"),
    [
        ({"name": "x", "colour": 1}, "unknown", "colour", 1, None),
        ({"name": "x", "inner": {"colour": 2}}, "unknown", "inner.colour", 2, None),
        ({}, "missing", "name", None, "a name"),
        ({"name": 5}, "type", "name", 5, "a name"),
        ({"name": "x", "inner": {"count": "1"}}, "type", "inner.count", "1", _POS),
        ({"name": "x", "inner": {"count": True}}, "type", "inner.count", True, _POS),
        ({"name": "x", "inner": {"count": 0}}, "value", "inner.count", 0, _POS),
        ({"name": "x", "maybe": -1}, "value", "maybe", -1, "an optional integer"),
        # An item of a list, a value of a table: the key's whole value is the bad value.
        ({"name": "x", "inner": {"codes": [400, 200]}}, "value", "inner.codes", [400, 200], None),
        ({"name": "x", "inner": {"codes": [400, "x"]}}, "value", "inner.codes", [400, "x"], None),
        ({"name": "x", "inner": {"options": {"a": 1}}}, "value", "inner.options", {"a": 1}, None),
        # A value where a table belongs.
        ({"name": "x", "inner": 3}, "type", "inner", 3, None),
    ],
)
def test_each_complaint_becomes_a_problem_at_the_dotted_key(
    data: dict[str, Any], kind: str, key_: str, value: Any, allowed: str | None
) -> None:
    p = problem(data)
    assert (p.kind, p.key, p.value) == (kind, key_, value)
    if allowed is not None:
        assert p.allowed == allowed


def test_a_problem_knows_its_table_and_whether_the_key_is_a_section() -> None:
    assert problem({"name": "x", "inner": {"colour": 1}}).table is Inner
    assert problem({"name": "x", "inner": 3}).is_section
    assert not problem({"name": 5}).is_section
    assert keys(Outer) == ["name", "maybe", "inner"]
    assert sections(Outer) == {"inner": Inner}


def test_good_data_converts_with_defaults() -> None:
    got = convert({"name": "x", "inner": {"count": 3, "codes": [429]}}, Outer)
    assert (got.name, got.maybe, got.inner.count, got.inner.codes) == ("x", None, 3, (429,))


@pytest.mark.parametrize(
    ("text", "quota"),
    [
        ("1000/minute", Quota(1000, 60.0)),
        ("20/second", Quota(20, 1.0)),
        (" 2.5 / s ", Quota(2.5, 1.0)),
        ("100/MIN", Quota(100, 60.0)),
        ("7/sec", Quota(7, 1.0)),
        ("7/m", Quota(7, 60.0)),
    ],
)
def test_one_rate_parser(text: str, quota: Quota) -> None:
    assert parse_rate(text) == quota


@pytest.mark.parametrize("text", ["fast", "0/second", "10/hour", "-1/s", "1e3/s", ""])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)
