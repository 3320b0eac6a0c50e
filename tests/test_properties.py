"""Properties (hypothesis) of the pure parts: normalisation, response matching, accounting.

Planning's properties (every pair once, limits, no customer twice, deterministic) are in
tests/test_plan.py.
"""

from __future__ import annotations

import random
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.input.source import validate_rows
from batcher.results.assemble import assemble_outcomes
from batcher.results.journal import JOURNAL_SCHEMA
from batcher.results.outcomes import STATUSES
from batcher.send import contract

FAST = settings(max_examples=60, deadline=None)
digits = st.text(alphabet="0123456789", min_size=10, max_size=15)


def _validate(values: list[str], identifier: str = "mobile") -> pl.DataFrame:
    column = identifier
    frame = pl.DataFrame(
        {
            "row": list(range(1, len(values) + 1)),
            "_key": list(range(len(values))),
            "source_file": ["in.csv"] * len(values),
            column: values,
            "partner_program_name": ["partner-01"] * len(values),
        },
        schema={
            "row": pl.Int64,
            "_key": pl.Int64,
            "source_file": pl.String,
            column: pl.String,
            "partner_program_name": pl.String,
        },
    )
    return validate_rows(frame, identifier, column, "partner_program_name")  # type: ignore[arg-type]


@FAST
@given(st.lists(digits, min_size=1, max_size=30, unique=True))
def test_valid_mobiles_keep_their_digits_and_never_collide(mobiles: list[str]) -> None:
    noisy = [f" +{m[:3]} {m[3:7]}-{m[7:]} " for m in mobiles]
    out = _validate(noisy)
    assert out["status"].to_list() == ["valid"] * len(mobiles)
    assert out["_customer"].to_list() == mobiles  # digits unchanged, only noise removed
    assert out["_customer"].n_unique() == len(mobiles)


@FAST
@given(
    st.lists(
        st.from_regex(r"[a-z0-9]{1,10}@[a-z]{1,8}\.[a-z]{2,4}", fullmatch=True),
        min_size=1,
        max_size=20,
        unique=True,
    ),
    st.randoms(use_true_random=False),
)
def test_emails_compare_case_insensitively(emails: list[str], rnd: random.Random) -> None:
    shouted = ["".join(c.upper() if rnd.random() < 0.5 else c for c in e) for e in emails]
    out = _validate(emails + shouted, "email")
    statuses = out["status"].to_list()
    assert statuses[: len(emails)] == ["valid"] * len(emails)
    assert statuses[len(emails) :] == ["duplicate"] * len(emails)
    assert out["duplicate_of"].to_list()[len(emails) :] == [i + 1 for i in range(len(emails))]


STATUS_CODES = [(True, 200), (False, 2004), (False, 2006), (False, 521), (False, 2010)]


def _response(
    shape: int, customers: list[tuple[str, list[tuple[str, bool, int]]]]
) -> dict[str, Any]:
    ckey, pkey, skey = contract._SHAPES[shape]
    return {
        ckey: [
            {
                "customer": {"mobile": m, "id": 1, "status": {"status": True, "code": 1000}},
                pkey: [
                    {"partnerProgramName": p, skey: {"status": s, "code": c, "message": "m"}}
                    for p, s, c in progs
                ],
            }
            for m, progs in customers
        ],
        "warnings": [],
    }


@FAST
@given(
    st.dictionaries(
        digits,
        st.dictionaries(
            st.sampled_from([f"p{i}" for i in range(6)]), st.sampled_from(STATUS_CODES), min_size=1
        ),
        min_size=1,
        max_size=8,
    ),
    st.sets(digits, max_size=3),
    st.integers(0, 1),
    st.randoms(use_true_random=False),
    st.floats(0, 1),
)
def test_parse_response_any_order_either_shape_omissions_and_extras(
    asked: dict[str, dict[str, tuple[bool, int]]],
    extra: set[str],
    shape: int,
    rnd: random.Random,
    omit_share: float,
) -> None:
    answered = []
    for m, progs in asked.items():
        kept = [(p, s, c) for p, (s, c) in progs.items() if rnd.random() >= omit_share]
        rnd.shuffle(kept)
        answered.append((m, kept))
    extras = [(m, [("p0", True, 200)]) for m in extra if m not in asked]
    answered += extras
    rnd.shuffle(answered)

    results, oddities = contract.parse_response("mobile", _response(shape, answered))

    assert oddities == []
    by_key = {r.key: r for r in results}
    assert set(by_key) == set(asked) | {m for m, _ in extras}
    for m, kept in answered:
        if m not in asked:
            continue
        got = by_key[m].programs
        assert set(got) == {p for p, _, _ in kept}  # omitted programs are absent, not invented
        for p, s, c in kept:
            assert (got[p].status, got[p].code) == (s, c)
    # Matching is by identifier: every asked customer found by its key, whatever the order.
    for m in asked:
        assert contract.match_key("mobile", m) in by_key or m not in dict(answered)


def _journal(entries: list[tuple[str, str, str]]) -> pl.DataFrame:
    rows = [
        {
            "k": i,
            "cu": cu,
            "pr": pr,
            "s": s,
            "c": 200,
            "m": "x",
            "cid": None,
            "rid": "r",
            "a": 1,
            "t": "2026-01-01T00:00:00Z",
            "n": None,
        }
        for i, (cu, pr, s) in enumerate(entries)
    ]
    frame = pl.DataFrame(rows, schema=JOURNAL_SCHEMA)
    # As read_journal gives it: the last line of a pair wins.
    return frame.unique(subset=["cu", "pr"], keep="last", maintain_order=True)


@FAST
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20),
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["valid", "rejected", "duplicate"]),
        ),
        max_size=60,
    ),
    st.lists(
        st.tuples(
            st.integers(0, 25),
            st.sampled_from(["a", "b", "c", "z"]),
            st.sampled_from(["delinked", "not_linked", "failed", "retryable"]),
        ),
        max_size=80,
    ),
)
def test_statuses_always_sum_to_rows_read(
    rows: list[tuple[int, str, str]], entries: list[tuple[int, str, str]]
) -> None:
    seen: set[tuple[int, str]] = set()
    data = []
    for i, (c, p, status) in enumerate(rows):
        if status == "valid" and (c, p) in seen:
            status = "duplicate"  # a pair is valid once; the source guarantees it
        if status == "valid":
            seen.add((c, p))
        data.append(
            {
                "row": i + 1,
                "mobile": str(c),
                "_customer": str(c) if status == "valid" else None,
                "_program": p if status == "valid" else None,
                "status": status,
                "message": None,
                "reason": None,
                "duplicate_of": None,
            }
        )
    frame = pl.DataFrame(
        data,
        schema={
            "row": pl.Int64,
            "mobile": pl.String,
            "_customer": pl.String,
            "_program": pl.String,
            "status": pl.String,
            "message": pl.String,
            "reason": pl.String,
            "duplicate_of": pl.Int64,
        },
    )
    out = assemble_outcomes(frame, _journal([(str(c), p, s) for c, p, s in entries]), ["mobile"])

    assert out.height == len(rows)
    assert sorted(out["row"].to_list()) == list(range(1, len(rows) + 1))
    assert set(out["status"].to_list()) <= set(STATUSES)
    for r, status in zip(out["row"].to_list(), out["status"].to_list(), strict=True):
        given_status = frame["status"][r - 1]
        if given_status != "valid":
            assert status == given_status
        else:
            assert status in ("delinked", "not_linked", "failed", "retryable")
