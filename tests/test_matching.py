"""The sender's matching of answers to what it asked, with a real journal on disk.

Any order, either shape, omissions, customers the request did not name: every pair asked for
ends with exactly one journal line or goes back for another try, and extras are only logged.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from batcher.job import load_job
from batcher.results.journal import Journal, read_journal
from batcher.send import contract
from batcher.send.sender import Batch, PendingCustomer, PendingPair, Sender
from tests.conftest import mobile, write_job

PROGRAMS = ["partner-01", "partner-02", "partner-03"]
SHAPES = {
    "current": ("customersPartnerUpdates", "partnerProgramUpdates", "updateStatus"),
    "legacy": ("deLinkCustomers", "deLinkFromPartnerPrograms", "partnerDeLinkStatus"),
}
ITEM = st.sampled_from(
    [
        (True, 200, "Success"),
        (False, 2004, "Link the customer"),
        (False, 2006, "No program"),
        (False, 521, "Busy"),
        (False, 2010, "Queued"),
    ]
)


def _body(shape: str, answers: list[tuple[str, list[tuple[str, tuple[bool, int, str]]]]]) -> Any:
    customers_key, programs_key, status_key = SHAPES[shape]
    return {
        customers_key: [
            {
                "customer": {
                    "mobile": int(m) if i % 2 else m,
                    "id": 10 + i,
                    "status": {"status": True, "code": 1000, "message": "found"},
                },
                programs_key: [
                    {
                        "partnerProgramName": p,
                        status_key: {"status": ok, "code": code, "message": message},
                    }
                    for p, (ok, code, message) in programs
                ],
            }
            for i, (m, programs) in enumerate(answers)
        ],
        "warnings": [],
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    customers=st.integers(min_value=1, max_value=8),
    answers=st.lists(ITEM, min_size=24, max_size=24),
    omitted=st.sets(st.integers(min_value=0, max_value=23), max_size=6),
    extras=st.integers(min_value=0, max_value=3),
    shape=st.sampled_from(sorted(SHAPES)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_pair_is_answered_once_or_retried_and_extras_are_logged(
    tmp_path: Path,
    customers: int,
    answers: list[tuple[bool, int, str]],
    omitted: set[int],
    extras: int,
    shape: str,
    seed: int,
) -> None:
    order = random.Random(seed)
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    job = load_job(write_job(folder, "http://127.0.0.1:9", retry={"max_attempts": 5}))
    journal = Journal(folder / "journal.jsonl")
    sender = Sender(job, iter(()), journal)
    batch = Batch(
        [
            PendingCustomer(
                mobile(c), [PendingPair(c * 10 + j, mobile(c), p) for j, p in enumerate(PROGRAMS)]
            )
            for c in range(customers)
        ]
    )
    asked = [(mobile(c), p) for c in range(customers) for p in PROGRAMS]
    listed = []
    for c in range(customers):
        progs = [
            (p, answers[c * 3 + j]) for j, p in enumerate(PROGRAMS) if c * 3 + j not in omitted
        ]
        order.shuffle(progs)
        listed.append((mobile(c), progs))
    listed += [(mobile(900 + e), [("partner-01", (True, 200, "Success"))]) for e in range(extras)]
    order.shuffle(listed)
    results, _ = contract.parse_response("mobile", _body(shape, listed))

    async def match() -> None:
        sender._changed = asyncio.Event()
        sender._match(batch, results, "rid-1")

    with capture_logs() as logs:
        asyncio.run(match())
    journal.close()

    done = read_journal(folder / "journal.jsonl")
    answered = list(zip(done["cu"].to_list(), done["pr"].to_list(), strict=True))
    waiting = [(c.customer, p.program) for _, _, c in sender._pool for p in c.pairs]
    # Each pair asked for: one journal line or back in line, never both, never neither.
    assert sorted(answered + waiting) == sorted(asked)
    assert not set(answered) & set(waiting)
    expected_waiting = {
        asked[i]
        for i in range(len(asked))
        if i in omitted or answers[i][1] in contract.TRANSIENT_ITEM_CODES
    }
    assert set(waiting) == expected_waiting
    statuses = dict(zip(answered, done["s"].to_list(), strict=True))
    for i, pair in enumerate(asked):
        if pair in statuses:
            ok, code, _ = answers[i]
            expected = "delinked" if ok else ("not_linked" if code == 2004 else "failed")
            assert statuses[pair] == expected
    unexpected = [e for e in logs if e["event"] == "response.unexpected_items"]
    assert (len(unexpected) == 1 and unexpected[0]["count"] == extras) if extras else not unexpected
