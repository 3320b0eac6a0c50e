"""Planning: every pair exactly once, limits respected, no customer twice per request, stable."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.input.source import exact_customer_key
from batcher.plan import (
    BUCKET_PAIRS,
    PairBatches,
    PlannedRequest,
    build_plan,
    plan_figures,
    plan_pairs,
    spill_plan,
    stream_plan,
)


def pairs_of(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_key": list(range(len(rows))),
            "_customer": [c for c, _ in rows],
            "_program": [p for _, p in rows],
        },
        schema_overrides={"_key": pl.Int64},
    )


def test_groups_programs_per_customer_in_first_appearance_order() -> None:
    plan = build_plan(pairs_of([("b", "p1"), ("a", "p1"), ("b", "p2"), ("c", "p1")]), 50, 50)
    (req,) = list(plan.iter_requests("mobile"))
    assert [(e.customer, e.programs) for e in req.entries] == [
        ("b", ("p1", "p2")),
        ("a", ("p1",)),
        ("c", ("p1",)),
    ]
    assert req.keys == ((0, 2), (1,), (3,))
    assert req.body("mobile") == {
        "deLinkCustomers": [
            {
                "customer": {"mobile": "b"},
                "deLinkFromPartnerPrograms": [
                    {"partnerProgramName": "p1"},
                    {"partnerProgramName": "p2"},
                ],
            },
            {
                "customer": {"mobile": "a"},
                "deLinkFromPartnerPrograms": [{"partnerProgramName": "p1"}],
            },
            {
                "customer": {"mobile": "c"},
                "deLinkFromPartnerPrograms": [{"partnerProgramName": "p1"}],
            },
        ]
    }
    assert (plan.customers, plan.requests) == (3, 1)


def test_split_customer_never_shares_a_request_with_itself() -> None:
    rows = [("a", f"p{i}") for i in range(5)] + [("b", "p0")]
    plan = build_plan(pairs_of(rows), customers_per_request=10, programs_per_customer=2)
    requests = list(plan.iter_requests("mobile"))
    assert [[(e.customer, len(e.programs)) for e in r.entries] for r in requests] == [
        [("a", 2), ("b", 1)],
        [("a", 2)],
        [("a", 1)],
    ]
    assert [r.index for r in requests] == [0, 1, 2] and plan.requests == 3


def test_empty_pairs_plan_nothing() -> None:
    plan = build_plan(pairs_of([]), 50, 50)
    assert (plan.customers, plan.requests, list(plan.iter_requests("mobile"))) == (0, 0, [])


def test_subset_of_keys_is_planned_by_key_order() -> None:
    frame = pl.DataFrame(
        {"_key": [9, 3, 5], "_customer": ["x", "y", "x"], "_program": ["a", "b", "c"]}
    )
    (req,) = list(build_plan(frame, 50, 50).iter_requests("email"))
    assert [e.customer for e in req.entries] == ["y", "x"]
    assert req.keys == ((3,), (5, 9))


def test_streams_across_slices(monkeypatch: object) -> None:
    import batcher.plan as plan_module

    setattr(plan_module, "_SLICE_ROWS", 7)  # noqa: B010 - force many slice boundaries
    try:
        rows = [(f"c{i % 13}", f"p{i}") for i in range(100)]
        plan = build_plan(pairs_of(rows), 3, 4)
        got = sorted(k for r in plan.iter_requests("mobile") for ks in r.keys for k in ks)
        assert got == list(range(100))
    finally:
        setattr(plan_module, "_SLICE_ROWS", 65_536)  # noqa: B010


# Up to 40 distinct (customer, program) pairs over 8 customers and 5 programs.
PAIR_ROWS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.sampled_from(["p1", "p2", "p3", "p4", "p5"])),
    unique=True,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    PAIR_ROWS,
    st.integers(1, 5),
    st.integers(1, 4),
)
def test_every_pair_exactly_once_within_limits_and_deterministic(
    rows: list[tuple[str, str]], per_request: int, per_customer: int
) -> None:
    frame = pairs_of(rows)
    plan = build_plan(frame, per_request, per_customer)
    requests = list(plan.iter_requests("mobile"))
    assert_sends_every_pair_once(requests, rows, per_request, per_customer)
    assert plan.requests == len(requests)
    assert plan.customers == len({c for c, _ in rows})
    again = list(build_plan(frame, per_request, per_customer).iter_requests("mobile"))
    assert again == requests


def in_batches(frame: pl.DataFrame, rows: int) -> PairBatches:
    """`frame`'s pairs as a plan reads them: batches of `rows` rows (one empty frame if none)."""

    def batches() -> Iterator[pl.DataFrame]:
        for start in range(0, max(frame.height, 1), rows):
            yield frame.slice(start, rows)

    return batches


def assert_sends_every_pair_once(
    requests: list[PlannedRequest],
    rows: list[tuple[str, str]],
    per_request: int,
    per_customer: int,
) -> None:
    """Requests numbered from 0, within the limits, no customer twice in one, every pair
    exactly once, and each customer's programs sent in input order."""
    seen: list[tuple[str, str]] = []
    for n, req in enumerate(requests):
        assert req.index == n
        customers = [e.customer for e in req.entries]
        assert 0 < len(customers) <= per_request
        assert len(set(customers)) == len(customers)
        for entry, keys in zip(req.entries, req.keys, strict=True):
            assert 0 < len(entry.programs) <= per_customer
            assert len(keys) == len(entry.programs)
            for program, key in zip(entry.programs, keys, strict=True):
                assert rows[key] == (entry.customer, program)
                seen.append((entry.customer, program))
    assert sorted(seen) == sorted(rows)
    for customer in {c for c, _ in rows}:
        assert [p for c, p in seen if c == customer] == [p for c, p in rows if c == customer]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefghijkl"), st.sampled_from([f"p{i}" for i in range(9)])),
        unique=True,
        max_size=80,
    ),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(1, 6),
)
def test_validate_figures_and_preview_equal_the_full_plans(
    rows: list[tuple[str, str]], per_request: int, per_customer: int, preview: int
) -> None:
    """`validate` counts the plan instead of building it: same figures, same first requests."""
    frame = pairs_of(rows)
    full = build_plan(frame, per_request, per_customer)
    figures, head = plan_figures(frame, per_request, per_customer, preview_requests=preview)
    assert figures == full.figures
    first = list(itertools.islice(full.iter_requests("mobile"), preview))
    shown = list(itertools.islice(head.iter_requests("mobile"), preview))
    assert [r.body() for r in shown] == [r.body() for r in first]


# Validated customers whose numbers are equal but whose text is not (leading zeros count in a
# mobile), and the extremes of each form; the letters are not a mobile or an id.
MOBILES = ["12345678", "012345678", "0012345678", "000000000000000", "999999999999999", "a"]
IDS = ["1", "10", "100", "123456789012345678", "999999999999999999", "b"]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([("mobile", MOBILES), ("id", IDS), ("externalId", MOBILES)]),
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from([f"p{i}" for i in range(7)]))),
    st.booleans(),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_validate_figures_counted_on_the_exact_customer_key_equal_the_full_plans(
    form: tuple[str, list[str]],
    drawn: list[tuple[int, str]],
    with_text: bool,
    per_request: int,
    per_customer: int,
) -> None:
    """Counting the pairs per customer on its number (mobiles, ids) gives build_plan's figures;
    a customer that is not such a number (only if a caller passes other pairs) is counted on
    its text instead."""
    identifier, customers = form
    limit = len(customers) if with_text else len(customers) - 1
    rows = list(dict.fromkeys((customers[i % limit], p) for i, p in drawn))
    frame = pairs_of(rows)
    key = exact_customer_key(identifier)  # type: ignore[arg-type]
    assert (key is None) == (identifier == "externalId")
    figures, _ = plan_figures(frame, per_request, per_customer, customer_key=key)
    assert figures == build_plan(frame, per_request, per_customer).figures


@settings(max_examples=200, deadline=None)
@given(
    PAIR_ROWS,
    st.booleans(),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 9),
)
def test_streamed_plan_sends_what_the_built_plan_sends(
    rows: list[tuple[str, str]],
    grouped: bool,
    per_request: int,
    per_customer: int,
    batch_rows: int,
) -> None:
    """A plan streamed from batches of pairs gives exactly build_plan's requests, or declines
    (None) when the input order is not the send order."""
    if grouped:  # an export sorted by customer, programs in their drawn order
        rows = sorted(rows, key=lambda r: r[0])
    frame = pairs_of(rows)

    batches = in_batches(frame, batch_rows)
    built = build_plan(frame, per_request, per_customer)
    streamed = stream_plan(batches, per_request, per_customer)
    runs = [c for c, _ in itertools.groupby(c for c, _ in rows)]
    in_input_order = len(runs) == len(set(runs))
    longest = max((len(list(g)) for _, g in itertools.groupby(c for c, _ in rows)), default=0)
    if not in_input_order or longest > per_customer:
        assert streamed is None
        return
    assert streamed is not None
    assert streamed.figures == built.figures
    assert list(streamed.iter_requests("mobile")) == list(built.iter_requests("mobile"))


@settings(max_examples=60, deadline=None)
@given(
    PAIR_ROWS,
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(1, 9),
    st.integers(1, 6),
)
def test_a_plan_spilled_in_buckets_sends_every_pair_once_within_limits(
    rows: list[tuple[str, str]],
    per_request: int,
    per_customer: int,
    batch_rows: int,
    buckets: int,
) -> None:
    """spill_plan (a big input not in send order) keeps build_plan's guarantees; it may only
    leave one request per bucket and round partly filled where build_plan would not."""
    frame = pairs_of(rows)

    batches = in_batches(frame, batch_rows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ".plan"
        folder.mkdir()
        (folder / "in-00000-000000.arrow").write_text("a killed run's leftover")
        spilled = spill_plan(batches, buckets * BUCKET_PAIRS, per_request, per_customer, folder)
        requests = list(spilled.iter_requests("mobile"))
        assert {p.name.split("-")[0] for p in folder.iterdir()} <= {"plan"}
        again = spill_plan(batches, buckets * BUCKET_PAIRS, per_request, per_customer, folder)
        assert list(again.iter_requests("mobile")) == requests
    assert_sends_every_pair_once(requests, rows, per_request, per_customer)
    built = build_plan(frame, per_request, per_customer)
    rounds = max(
        (
            -(-len(list(g)) // per_customer)
            for _, g in itertools.groupby(sorted(c for c, _ in rows))
        ),
        default=0,
    )
    assert spilled.figures.pairs == len(rows)
    assert spilled.customers == built.customers
    assert spilled.requests == len(requests)
    assert built.requests <= spilled.requests <= built.requests + buckets * rounds


def test_plan_pairs_spills_only_a_big_plan_not_in_send_order(tmp_path: Path) -> None:
    scattered = pairs_of([(f"c{i % 7}", f"p{i}") for i in range(30)])
    grouped = pairs_of(sorted((f"c{i % 7}", f"p{i % 3}") for i in range(21)))
    folder = tmp_path / ".plan"
    for frame, expected, kind in (
        (scattered, BUCKET_PAIRS, "built"),
        (scattered, BUCKET_PAIRS + 1, "spilled"),
        (grouped, 10 * BUCKET_PAIRS, "streamed"),
    ):
        plan = plan_pairs(in_batches(frame, frame.height), expected, 2, 3, folder)
        got = "spilled" if plan.spilled else "streamed" if plan.batches else "built"
        assert got == kind
        assert plan.figures.pairs == frame.height
