"""The simulator's API, driven with a plain aiohttp client on a real loopback port."""

from __future__ import annotations

from typing import Any

from tests.conftest import mobile
from tests.simulator_support import FakeClock, basic, body, profile, running


def _only_customer(parsed: Any, key: str = "customersPartnerUpdates") -> dict[str, Any]:
    assert parsed["warnings"] == []
    [item] = parsed[key]
    return item  # type: ignore[no-any-return]


def _statuses(
    item: dict[str, Any], programs: str = "partnerProgramUpdates", status: str = "updateStatus"
) -> dict[str, tuple[bool, int]]:
    return {
        p["partnerProgramName"]: (p[status]["status"], p[status]["code"]) for p in item[programs]
    }


async def test_delink_then_delink_again_answers_2004_not_linked() -> None:
    async with running() as c:
        status, headers, first = await c.delink(body((mobile(3), ["partner-01", "partner-02"])))
        assert status == 200
        assert headers["X-CAP-REQUEST-ID"]
        item = _only_customer(first)
        assert item["customer"]["id"] == 10_000_003
        assert item["customer"]["mobile"] == mobile(3)
        assert item["customer"]["status"] == {
            "status": True,
            "message": "Customer successfully retrieved",
            "code": 1000,
        }
        assert _statuses(item) == {"partner-01": (True, 200), "partner-02": (True, 200)}
        assert item["partnerProgramUpdates"][0]["updateStatus"]["message"] == "Success"
        _, _, second = await c.delink(body((mobile(3), ["partner-01"])))
        again = _only_customer(second)["partnerProgramUpdates"][0]["updateStatus"]
        assert again == {
            "status": False,
            "code": 2004,
            "message": "Link the customer with the partner program",
        }
        snap = await c.state()
    pair = next(p for p in snap["pairs"] if p["program"] == "partner-01")
    assert pair == {
        "customer": "10000003",
        "id": 10_000_003,
        "mobile": mobile(3),
        "email": "customer3@example.com",
        "externalId": "EXT00000003",
        "program": "partner-01",
        "attempts": 2,
        "delinked": 1,
        "linked_now": False,
    }
    assert snap["links_initial"] == 60
    assert snap["links_remaining"] == 58
    assert snap["counters"]["by_status"] == {"200": 2}


async def test_every_identifier_matches_and_mobile_may_be_a_json_number() -> None:
    async with running() as c:
        for identifier, value, program in [
            ("mobile", 919800000004, "partner-01"),
            ("mobile", " 919800000004 ", "partner-02"),
            ("email", "Customer4@Example.com", "partner-03"),
            ("externalId", "EXT00000005", "partner-01"),
            ("id", "10000005", "partner-02"),
            ("id", 10000005, "partner-03"),
        ]:
            _, _, parsed = await c.delink(body((value, [program]), identifier=identifier))
            item = _only_customer(parsed)
            assert _statuses(item) == {program: (True, 200)}, (identifier, value)
            assert isinstance(item["customer"]["id"], int)
            assert isinstance(item["customer"]["mobile"], str)


async def test_unknown_customer_8015_with_empty_program_list_by_default() -> None:
    async with running() as c:
        _, _, parsed = await c.delink(body((mobile(999), ["partner-01"])))
        item = _only_customer(parsed)
        assert item["customer"] == {
            "mobile": mobile(999),
            "status": {
                "status": False,
                "code": 8015,
                "message": "Customer not found for given identifier",
            },
        }
        assert item["partnerProgramUpdates"] == []
        snap = await c.state()
    assert snap["pairs"] == [
        {
            "customer": f"mobile:{mobile(999)}",
            "mobile": mobile(999),
            "program": "partner-01",
            "attempts": 1,
            "delinked": 0,
            "linked_now": False,
        }
    ]


async def test_unknown_customer_programs_echo_knob_repeats_8015_per_program() -> None:
    async with running(profile(unknown_customer_programs="echo")) as c:
        _, _, parsed = await c.delink(
            body(("nobody@example.com", ["partner-01"]), identifier="email")
        )
    assert _statuses(_only_customer(parsed)) == {"partner-01": (False, 8015)}


async def test_unknown_program_2006_and_invalid_mobile_1001() -> None:
    async with running() as c:
        _, _, parsed = await c.delink(body((mobile(1), ["no-such-program", "partner-01"])))
        assert _statuses(_only_customer(parsed)) == {
            "no-such-program": (False, 2006),
            "partner-01": (True, 200),
        }
        for bad in ["91980000000x", "12345", "9198000000012345678"]:
            _, _, parsed = await c.delink(body((bad, ["partner-01"])))
            assert _only_customer(parsed)["customer"]["status"]["code"] == 1001, bad
        _, _, parsed = await c.delink(body(("not-an-email", ["partner-01"]), identifier="email"))
        assert _only_customer(parsed)["customer"]["status"]["code"] == 1002


async def test_legacy_shape_uses_delinkcustomers_and_partnerdelinkstatus() -> None:
    async with running(profile(response_shape="legacy")) as c:
        _, _, parsed = await c.delink(body((mobile(2), ["partner-01"])))
    item = _only_customer(parsed, "deLinkCustomers")
    assert _statuses(item, "deLinkFromPartnerPrograms", "partnerDeLinkStatus") == {
        "partner-01": (True, 200)
    }


async def test_shuffled_items_still_answer_every_customer() -> None:
    async with running(profile(shuffle_items=True)) as c:
        _, _, parsed = await c.delink(body(*[(mobile(i), ["partner-01"]) for i in range(10)]))
    got = [item["customer"]["mobile"] for item in parsed["customersPartnerUpdates"]]
    assert sorted(got) == [mobile(i) for i in range(10)]
    assert got != sorted(got)


async def test_request_validation_415_400_1060_2008() -> None:
    async with running(profile(max_customers_per_request=2, max_programs_per_customer=2)) as c:
        headers = {**basic(), "Content-Type": "text/plain"}
        status, _, parsed = await c.delink(None, headers=headers, raw=b"{}")
        assert status == 415
        assert parsed["errors"][0]["code"] == 415
        json_headers = {**basic(), "Content-Type": "application/json"}
        for raw in [b"not json", b"{}", b'{"deLinkCustomers": "x"}', b'{"deLinkCustomers": []}']:
            status, headers_back, parsed = await c.delink(None, headers=json_headers, raw=raw)
            assert status == 400, raw
            assert parsed["warnings"] == []
            assert parsed["errors"][0]["status"] is False
            assert "X-CAP-REQUEST-ID" in headers_back
        status, _, parsed = await c.delink(body(*[(mobile(i), ["partner-01"]) for i in range(3)]))
        assert (status, parsed["errors"][0]["code"]) == (400, 1060)
        status, _, parsed = await c.delink(body((mobile(1), ["a", "b", "c"])))
        assert (status, parsed["errors"][0]["code"]) == (400, 2008)
        snap = await c.state("?pairs=0")
    assert "pairs" not in snap
    assert snap["links_remaining"] == snap["links_initial"]  # nothing was processed


async def test_basic_auth_refused_with_v2_envelope() -> None:
    async with running() as c:
        for headers in [
            {},
            basic(password="wrong"),
            basic(user="someone"),
            {"Authorization": "Basic !!!"},
        ]:
            status, hdrs, parsed = await c.delink(
                body((mobile(1), ["partner-01"])), headers=headers
            )
            assert status == 401
            assert "X-CAP-REQUEST-ID" in hdrs
            assert parsed["warnings"] == []
            assert parsed["errors"][0]["status"] is False
        snap = await c.state("?pairs=0")
    assert snap["counters"]["auth_failures"] == 4
    assert snap["links_remaining"] == snap["links_initial"]


async def test_oauth_token_works_and_bad_key_answers_320001() -> None:
    async with running() as c:
        status, parsed = await c.token(secret="wrong")
        assert status == 401
        assert parsed == {
            "data": None,
            "errors": [{"code": 320001, "message": "Invalid client key and secret"}],
        }
        status, parsed = await c.token()
        assert status == 200
        assert parsed["errors"] is None
        assert parsed["data"]["ttlSeconds"] == 300
        token = parsed["data"]["accessToken"]
        status, _, _ = await c.delink(
            body((mobile(1), ["partner-01"])), headers={"X-CAP-API-OAUTH-TOKEN": token}
        )
        assert status == 200
        status, _, _ = await c.delink(
            body((mobile(1), ["partner-01"])), headers={"X-CAP-API-OAUTH-TOKEN": "forged"}
        )
        assert status == 401
        snap = await c.state("?pairs=0")
    assert snap["counters"]["tokens_issued"] == 1


async def _expired_token_answer(expired_status: int) -> tuple[int, Any]:
    clock = FakeClock()
    prof = profile(auth={"token_ttl_seconds": 60, "expired_token_status": expired_status})
    async with running(prof, clock=clock) as c:
        _, parsed = await c.token()
        header = {"X-CAP-API-OAUTH-TOKEN": parsed["data"]["accessToken"]}
        clock.now += 59.999
        status, _, _ = await c.delink(body((mobile(1), ["partner-01"])), headers=header)
        assert status == 200
        clock.now += 0.001  # exactly at expiry
        status, _, parsed = await c.delink(body((mobile(1), ["partner-01"])), headers=header)
        return status, parsed


async def test_expired_token_answers_401_with_code_498() -> None:
    status, parsed = await _expired_token_answer(401)
    assert status == 401
    assert parsed["errors"][0]["code"] == 498
    assert parsed["errors"][0]["message"].startswith("Token expired at ")


async def test_expired_token_answers_http_498_when_the_profile_says_so() -> None:
    status, parsed = await _expired_token_answer(498)
    assert (status, parsed["errors"][0]["code"]) == (498, 498)


async def test_state_linked_filter_and_still_linked_query() -> None:
    async with running() as c:
        await c.delink(body((mobile(1), ["partner-01"]), (mobile(2), ["partner-01"])))
        await c.delink(body((mobile(1), ["partner-01"])))
        linked = await c.state("?linked=1")
        assert linked["pairs"] == []
        query = {
            "identifier": "mobile",
            "pairs": [
                [mobile(1), "partner-01"],
                [mobile(1), "partner-02"],
                [mobile(999), "partner-01"],
            ],
        }
        async with c.session.post(c.sim.base_url + "/__simulator/still-linked", json=query) as resp:
            answer = await resp.json()
    assert answer == {"checked": 3, "still_linked": [[mobile(1), "partner-02"]]}
    assert c.sim.still_linked("id", [("10000002", "partner-01"), ("10000002", "partner-03")]) == [
        ("10000002", "partner-03")
    ]


async def test_link_probability_leaves_some_pairs_unlinked_deterministically() -> None:
    prof = profile(state={"customers": 200, "link_probability": 0.5})
    async with running(prof) as first, running(prof) as second:
        a, b = first.sim.snapshot(pairs=False), second.sim.snapshot(pairs=False)
    assert a["links_initial"] == b["links_initial"]
    assert 200 < a["links_initial"] < 400
