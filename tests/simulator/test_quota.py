"""Quota windows at their exact boundaries, with a fake clock (no sleeping)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from batcher.simulator.profile import Rate
from batcher.simulator.quota import Quota
from tests.conftest import mobile
from tests.simulator_support import FakeClock, basic, body, profile, running


def test_fixed_window_resets_exactly_at_the_period_boundary() -> None:
    clock = FakeClock(100.0)
    quota = Quota(Rate(3, 1.0), "fixed", clock)
    assert [quota.acquire("a") for _ in range(3)] == [None, None, None]
    clock.now = 100.25
    assert quota.acquire("a") == 0.75  # wait until the window ends
    clock.now = 100.999
    assert quota.acquire("a") is not None
    clock.now = 101.0
    assert [quota.acquire("a") for _ in range(3)] == [None, None, None]
    assert quota.acquire("a") is not None


def test_fixed_window_allows_a_burst_across_the_boundary() -> None:
    """The known weakness of fixed windows: 2N requests around a boundary."""
    clock = FakeClock(0.0)
    quota = Quota(Rate(2, 1.0), "fixed", clock)
    quota.acquire("a")
    clock.now = 0.99
    assert quota.acquire("a") is None
    clock.now = 1.0
    assert [quota.acquire("a") for _ in range(2)] == [None, None]


def test_sliding_window_frees_a_slot_exactly_one_period_after_each_request() -> None:
    clock = FakeClock(0.0)
    quota = Quota(Rate(2, 1.0), "sliding", clock)
    assert quota.acquire("a") is None  # t=0
    clock.now = 0.5
    assert quota.acquire("a") is None  # t=0.5
    clock.now = 0.999
    wait_s = quota.acquire("a")
    assert wait_s is not None
    assert abs(wait_s - 0.001) < 1e-9
    clock.now = 1.0
    assert quota.acquire("a") is None  # the t=0 request stopped counting
    assert quota.acquire("a") is not None
    clock.now = 1.5
    assert quota.acquire("a") is None


def test_quota_is_per_credential_and_unlimited_without_a_rate() -> None:
    clock = FakeClock()
    quota = Quota(Rate(1, 60.0), "fixed", clock)
    assert quota.acquire("a") is None
    assert quota.acquire("b") is None
    assert quota.acquire("a") is not None
    assert all(Quota(None, "fixed", clock).acquire("a") is None for _ in range(1000))


async def test_server_throttles_with_429_retry_after_seconds_and_json_body() -> None:
    clock = FakeClock(50.0)
    prof = profile(quota={"rate": "2/minute", "window": "fixed"})
    async with running(prof, clock=clock) as c:
        payload = body((mobile(1), ["partner-01"]))
        assert [(await c.delink(payload))[0] for _ in range(2)] == [200, 200]
        clock.now += 20
        status, headers, parsed = await c.delink(payload)
        assert status == 429
        assert headers["Retry-After"] == "40"
        assert parsed["errors"][0]["code"] == 429
        clock.now += 40  # exactly the window's end
        status, _, _ = await c.delink(payload)
        assert status == 200
        snap = await c.state("?pairs=0")
    assert snap["counters"]["throttled"] == 1
    assert snap["counters"]["by_status"] == {"200": 3, "429": 1}


async def test_throttle_status_http_date_and_html_body_are_knobs() -> None:
    clock = FakeClock()
    prof = profile(
        quota={"rate": "1/second", "status": 503, "retry_after": "http-date", "body": "html"}
    )
    async with running(prof, clock=clock) as c:
        await c.delink(body((mobile(1), ["partner-01"])))
        status, headers, parsed = await c.delink(body((mobile(1), ["partner-01"])))
    assert status == 503
    assert parsedate_to_datetime(headers["Retry-After"]).tzinfo is not None
    assert headers["Content-Type"].startswith("text/html")
    assert "<html>" in parsed


async def test_no_retry_after_and_empty_body() -> None:
    clock = FakeClock()
    prof = profile(quota={"rate": "1/second", "retry_after": "none", "body": "empty"})
    async with running(prof, clock=clock) as c:
        await c.delink(body((mobile(1), ["partner-01"])))
        status, headers, parsed = await c.delink(body((mobile(1), ["partner-01"])))
    assert (status, parsed) == (429, None)  # an empty body
    assert "Retry-After" not in headers


async def test_basic_and_oauth_credentials_have_separate_quotas() -> None:
    clock = FakeClock()
    prof = profile(quota={"rate": "1/minute"})
    async with running(prof, clock=clock) as c:
        payload = body((mobile(1), ["partner-01"]))
        assert (await c.delink(payload, headers=basic()))[0] == 200
        _, token = await c.token()
        oauth = {"X-CAP-API-OAUTH-TOKEN": token["data"]["accessToken"]}
        assert (await c.delink(payload, headers=oauth))[0] == 200
        assert (await c.delink(payload, headers=oauth))[0] == 429


async def test_slowdown_drops_the_quota_after_n_requests() -> None:
    clock = FakeClock()
    prof = profile(quota={"rate": "100/second"}, slowdown={"after_requests": 3, "rate": "1/minute"})
    async with running(prof, clock=clock) as c:
        payload = body((mobile(1), ["partner-01"]))
        statuses = [(await c.delink(payload))[0] for _ in range(6)]
        snap = await c.state("?pairs=0")
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert snap["quota"] == {"rate": "1/minute", "window": "fixed", "slowed_down": True}


async def test_slowdown_after_seconds_from_the_first_request() -> None:
    clock = FakeClock()
    prof = profile(slowdown={"after_seconds": 10, "rate": "1/minute"})
    async with running(prof, clock=clock) as c:
        payload = body((mobile(1), ["partner-01"]))
        assert [(await c.delink(payload))[0] for _ in range(5)] == [200] * 5
        clock.now += 10
        assert [(await c.delink(payload))[0] for _ in range(2)] == [200, 429]
