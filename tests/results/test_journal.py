"""The journal's intents after a kill: read a block at a time, the same pairs as read whole."""

from __future__ import annotations

import random
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
