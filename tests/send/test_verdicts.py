"""What a whole answer means (`verdicts.classify`), from status and raw body alone."""

from __future__ import annotations

import orjson
import pytest

from batcher.send.verdicts import Kind, classify


def _classify(status: int, body: object = None, raw: bytes | None = None) -> Kind:
    data = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
    return classify(status, data, identifier="mobile", throttle_statuses=(429,)).kind


def _envelope(code: int) -> dict[str, object]:
    return {"errors": [{"code": code, "message": "m"}]}


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, None, Kind.THROTTLED),
        (401, None, Kind.REFUSED),
        (403, None, Kind.REFUSED),
        (200, _envelope(498), Kind.REFUSED),
        (400, None, Kind.SPLIT),
        (413, None, Kind.SPLIT),
        (200, _envelope(1060), Kind.SPLIT),
        (503, None, Kind.TRANSIENT),
        (599, None, Kind.TRANSIENT),
        (408, None, Kind.TRANSIENT),
        (404, None, Kind.STOP),
        (200, {"customersPartnerUpdates": []}, Kind.ITEMS),
        (200, {"deLinkCustomers": []}, Kind.ITEMS),
        (200, {"something": "else"}, Kind.TRANSIENT),
    ],
)
def test_each_kind_of_answer(status: int, body: object, kind: Kind) -> None:
    assert _classify(status, body) is kind


def test_a_throttle_status_is_a_throttle_whatever_the_body() -> None:
    assert _classify(429, raw=b"<html>slow down</html>") is Kind.THROTTLED
    custom = classify(503, b"", identifier="mobile", throttle_statuses=(429, 503))
    assert custom.kind is Kind.THROTTLED


def test_only_a_401_may_be_cured_by_a_fresh_token() -> None:
    assert classify(401, b"", identifier="mobile", throttle_statuses=()).may_refresh
    assert not classify(403, b"", identifier="mobile", throttle_statuses=()).may_refresh


def test_a_lost_answer_says_how_it_was_lost() -> None:
    html = classify(503, b"<html>busy</html>", identifier="mobile", throttle_statuses=())
    assert (html.kind, html.code, html.message, html.lost) == (
        Kind.TRANSIENT,
        503,
        "HTTP 503",
        "HTTP 503 answer",
    )
    garbled = classify(200, b"not json{", identifier="mobile", throttle_statuses=())
    assert garbled.kind is Kind.TRANSIENT and garbled.lost == "unreadable body"
    assert garbled.message is not None and garbled.message.startswith("unreadable answer")


def test_a_readable_answer_carries_its_items() -> None:
    body = {
        "customersPartnerUpdates": [
            {
                "customer": {"mobile": "919800000001", "id": 5},
                "partnerProgramUpdates": [
                    {
                        "partnerProgramName": "p",
                        "updateStatus": {"status": True, "code": 200, "message": "ok"},
                    }
                ],
            }
        ]
    }
    action = classify(200, orjson.dumps(body), identifier="mobile", throttle_statuses=(429,))
    assert action.kind is Kind.ITEMS
    (result,) = action.results
    assert (result.key, result.customer_id, result.programs["p"].status) == (
        "919800000001",
        5,
        True,
    )
