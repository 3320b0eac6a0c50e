"""Each kind of seeded trouble, and that a fixed seed repeats the same answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from batcher.simulator.profile import FaultSettings
from batcher.simulator.server import Simulator
from tests.conftest import mobile
from tests.simulator_support import body, profile, running

ONE = body((mobile(1), ["partner-01"]))


async def test_server_error_answers_5xx_json_or_html() -> None:
    seen: set[tuple[int, str]] = set()
    async with running(profile(faults={"server_error": 1.0})) as c:
        for _ in range(30):
            status, headers, parsed = await c.delink(ONE)
            kind = "html" if headers["Content-Type"].startswith("text/html") else "json"
            if kind == "json":
                assert parsed["errors"][0]["code"] == status
            seen.add((status, kind))
        snap = await c.state()
    assert {s for s, _ in seen} == {500, 502, 503}
    assert {k for _, k in seen} == {"html", "json"}
    assert snap["pairs"] == []  # nothing processed
    assert snap["counters"]["faults"] == {"server_error": 30}


async def test_random_throttle_answers_429_with_retry_after() -> None:
    async with running(profile(faults={"throttle": 1.0})) as c:
        status, headers, _ = await c.delink(ONE)
        snap = await c.state("?pairs=0")
    assert (status, headers["Retry-After"]) == (429, "1")
    assert snap["counters"]["throttled"] == 1


async def test_hang_outlives_a_short_client_timeout_and_does_not_block_shutdown() -> None:
    async with running(profile(faults={"hang": 1.0})) as c:
        with pytest.raises(asyncio.TimeoutError):
            await c.delink(ONE, timeout_s=0.2)
        snap = await c.state()
        started = time.monotonic()
    assert time.monotonic() - started < 2.0  # stop() woke the hanging handler
    assert snap["counters"]["by_status"] == {"hang": 1}
    assert snap["pairs"] == []


async def test_disconnect_before_processing_leaves_the_link() -> None:
    async with running(profile(faults={"disconnect_before": 1.0})) as c:
        with pytest.raises(aiohttp.ClientError):
            await c.delink(ONE)
        snap = await c.state()
    assert snap["pairs"] == []
    assert snap["links_remaining"] == snap["links_initial"]
    assert snap["counters"]["by_status"] == {"closed": 1}


async def test_disconnect_after_processing_loses_the_answer_and_a_resend_says_2004() -> None:
    async with running(profile(faults={"disconnect_after": 1.0})) as c:
        with pytest.raises(aiohttp.ClientError):
            await c.delink(ONE)
        c.sim.set_faults(None)
        _, _, parsed = await c.delink(ONE)
        snap = await c.state()
    update = parsed["customersPartnerUpdates"][0]["partnerProgramUpdates"][0]["updateStatus"]
    assert update["code"] == 2004
    [pair] = snap["pairs"]
    assert (pair["attempts"], pair["delinked"], pair["linked_now"]) == (2, 1, False)


async def test_malformed_json_after_processing() -> None:
    async with running(profile(faults={"malformed_json": 1.0})) as c:
        status, _, parsed = await c.delink(ONE)
        snap = await c.state()
    assert status == 200
    assert isinstance(parsed, str)  # not JSON
    assert snap["pairs"][0]["delinked"] == 1


async def test_item_transient_answers_521_or_2010_and_keeps_the_link() -> None:
    programs = ["partner-01", "partner-02", "partner-03"]
    async with running(profile(faults={"item_transient": 1.0})) as c:
        _, _, parsed = await c.delink(body(*[(mobile(i), programs) for i in range(10)]))
        snap = await c.state()
    codes = {
        p["updateStatus"]["code"]
        for item in parsed["customersPartnerUpdates"]
        for p in item["partnerProgramUpdates"]
    }
    assert codes == {521, 2010}
    assert snap["pairs"] == []
    assert snap["links_remaining"] == snap["links_initial"]


async def test_item_omitted_leaves_items_out_some_processed_some_not() -> None:
    programs = ["partner-01", "partner-02", "partner-03"]
    async with running(profile(faults={"item_omitted": 1.0})) as c:
        _, _, parsed = await c.delink(body(*[(mobile(i), programs) for i in range(10)]))
        snap = await c.state()
    assert all(item["partnerProgramUpdates"] == [] for item in parsed["customersPartnerUpdates"])
    assert 0 < len(snap["pairs"]) < 30  # the processed share was delinked silently
    assert snap["counters"]["faults"] == {"item_omitted": 30}


async def test_poison_identifier_fails_the_whole_request_and_alone_after_a_split() -> None:
    prof = profile(faults={"poison_identifiers": [mobile(5)]})
    async with running(prof) as c:
        status, _, parsed = await c.delink(
            body((mobile(4), ["partner-01"]), (mobile(5), ["partner-01"]))
        )
        assert status == 400
        assert parsed["errors"][0]["status"] is False
        status, _, _ = await c.delink(body((mobile(4), ["partner-01"])))
        assert status == 200
        status, _, _ = await c.delink(body((mobile(5), ["partner-01"])))
        assert status == 400


async def test_latency_is_fixed_plus_spread() -> None:
    async with running(profile(latency={"fixed_ms": 50, "spread_ms": 20})) as c:
        started = time.monotonic()
        await c.delink(ONE)
    assert 0.05 <= time.monotonic() - started < 1.0


async def _answers(seed: int) -> list[Any]:
    faults = {
        "throttle": 0.1,
        "server_error": 0.2,
        "malformed_json": 0.1,
        "item_transient": 0.2,
        "item_omitted": 0.1,
    }
    out = []
    async with running(profile(seed=seed, shuffle_items=True, faults=faults)) as c:
        for i in range(40):
            status, headers, parsed = await c.delink(
                body(*[(mobile((i + k) % 25), ["partner-01", "partner-02"]) for k in range(3)])
            )
            headers.pop("Date", None)
            headers.pop("Server", None)
            out.append((status, headers, parsed))
        out.append(await c.state())
    return out


async def test_same_seed_same_requests_same_answers() -> None:
    first, again, other = await _answers(7), await _answers(7), await _answers(8)
    assert first == again
    assert first != other


def test_set_faults_none_turns_trouble_off() -> None:
    sim = Simulator(profile(faults={"server_error": 1.0}))
    sim.set_faults(None)
    assert sim.trouble.request_fault() is None
    sim.set_faults(FaultSettings(hang=1.0))
    assert sim.trouble.request_fault() is not None
