"""The canary: one customer alone until an answer names the org."""

from __future__ import annotations

from collections.abc import Mapping

from batcher.send import events as ev
from batcher.send.auth import OrgGuard, TokenClaims
from batcher.send.canary import Canary


def test_one_customer_alone_until_an_answer_names_the_org() -> None:
    heard: list[ev.Event] = []
    org = OrgGuard(100)
    canary = Canary(org, heard.append)
    canary.start()
    assert canary.out and canary.size(50) == 1
    assert not canary.waits(in_flight=0)  # the canary itself leaves
    assert canary.waits(in_flight=1)  # everyone else waits for its answer
    headers: Mapping[str, str] = {"org_id": "100"}
    assert org.from_answer(headers, answered=True) is None
    assert not canary.waits(in_flight=1)
    assert not canary.out and canary.size(50) == 50
    assert heard == [ev.CanaryAnswered(100)]


def test_no_canary_when_the_token_named_the_org() -> None:
    org = OrgGuard(100)
    org.from_token(TokenClaims(org_id=100))
    canary = Canary(org, lambda _: None)
    canary.start()
    assert not canary.out and not canary.waits(in_flight=3) and canary.size(50) == 50
