"""The journal's intents after a kill: read a block at a time, the same pairs as read whole."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from batcher.results.journal import (
    JOURNAL_NAME,
    Journal,
    confirmed_pairs,
    intent_pairs,
    unconfirmed_intents,
)
from batcher.results.outcomes import Outcome, Status


def test_unconfirmed_intents_in_small_blocks_equal_the_whole_file(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / JOURNAL_NAME
    journal = Journal(path)
    pairs = [(f"9198{n:08d}", f"partner-{n % 3}") for n in range(600)]
    key = 0
    for start in range(0, len(pairs), 20):  # a request of 20 pairs, intended before sending
        request = pairs[start : start + 20]
        journal.intend(request)
        for customer, program in request:
            if rng.random() < 0.8:  # the rest were in flight when the run was killed
                status = rng.choice([Status.DELINKED, Status.RETRYABLE, Status.NOT_LINKED])
                journal.record(Outcome(key, customer, program, status, 200, None))
            key += 1
        journal.hand_over()
    journal.intend(pairs[:5])  # a pair intended twice (a resend)
    journal.close()
    confirmed = confirmed_pairs(path)
    whole = intent_pairs(path).join(
        confirmed.rename({"customer": "cu", "program": "pr"}), on=["cu", "pr"], how="anti"
    )
    expected = set(zip(whole["cu"].to_list(), whole["pr"].to_list(), strict=True))
    assert expected, "some intended pairs have no confirmed answer"
    assert unconfirmed_intents(path, confirmed, block_bytes=64) == expected
    assert unconfirmed_intents(path) == expected


def test_record_all_writes_the_lines_record_writes_one_by_one(tmp_path: Path) -> None:
    rng = random.Random(5)
    values = ["919800000001", 'a"b', "x\\y", "é", "tab\there", "\x01", "", "partner-01"]
    outcomes = [
        Outcome(
            key,
            rng.choice(values),
            rng.choice(values),
            rng.choice(list(Status)),
            rng.choice([None, 200, 2004]),
            rng.choice([None, "Success", 'm"x']),
            rng.choice([None, 1, 10**12]),
            rng.choice([None, "rid-1"]),
            rng.choice([0, 1, 3]),
            rng.choice([None, "note é"]),
            rng.choice([True, False]),
            rng.choice([None, "9198"]),
        )
        for key in range(2000)
    ]
    one, many = (tmp_path / "one", tmp_path / "many")
    for folder in (one, many):
        folder.mkdir()
    by_one, by_many = Journal(one / JOURNAL_NAME), Journal(many / JOURNAL_NAME)
    at = "2026-11-28T20:00:00.000Z"
    for start in range(0, len(outcomes), 37):  # an answer's outcomes at a time
        answer = outcomes[start : start + 37]
        for o in answer:
            by_one.record(o, at)
        by_many.record_all(answer, at)
    by_one.close()
    by_many.close()
    assert (many / JOURNAL_NAME).read_bytes() == (one / JOURNAL_NAME).read_bytes()
    assert by_many.counts == by_one.counts == Counter(o.status.value for o in outcomes)
    lines = (many / JOURNAL_NAME).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "k": o.key,
            "cu": o.customer,
            "pr": o.program,
            "s": o.status.value,
            "c": o.code,
            "m": o.message,
            "cid": o.customer_id,
            "rid": o.request_id,
            "a": o.attempts,
            "t": at,
            "n": o.note,
            "ms": o.maybe_sent,
            "ai": o.api_identifier,
        }
        for o in outcomes
    ]
