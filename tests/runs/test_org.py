"""Which org a run acts on: token claims, the API's org_id/till headers, and the expected org.

The simulator is the API here: its JWT-shaped tokens and its headers are read by batcher's own
Authenticator and OrgGuard, never by a copy of their logic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batcher.cli import main
from batcher.send.auth import decode_claims
from batcher.simulator.server import SimulatorThread
from tests.conftest import (
    DEMO_ENV,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
    write_job,
    write_pairs,
)
from tests.simulator_support import basic, body, profile, running


async def test_simulator_tokens_are_jwts_naming_its_org_and_expiry() -> None:
    async with running(profile(org_id=777, auth={"token_ttl_seconds": 120})) as c:
        _, parsed = await c.token()
    claims = decode_claims(parsed["data"]["accessToken"])
    assert claims is not None
    assert (claims.org_id, claims.client_id, claims.till) == (777, "demo-key", "demo.till")
    assert claims.exp is not None


@pytest.mark.parametrize("auth", ["basic", "oauth"])
async def test_every_authenticated_answer_names_org_and_till(auth: str) -> None:
    async with running(profile(org_id=777)) as c:
        headers = basic()
        if auth == "oauth":
            _, parsed = await c.token()
            headers = {"X-CAP-API-OAUTH-TOKEN": parsed["data"]["accessToken"]}
        status, answer_headers, _ = await c.delink(
            body((mobile(1), ["partner-01"])), headers=headers
        )
        assert status == 200
        assert (answer_headers["org_id"], answer_headers["till"]) == ("777", "demo.till")
        status, answer_headers, _ = await c.delink(body((mobile(1), ["p"])), headers=basic("x"))
        assert status == 401 and "org_id" not in answer_headers


async def test_a_profile_can_leave_the_org_headers_out() -> None:
    async with running(profile(org_headers=False)) as c:
        status, headers, _ = await c.delink(body((mobile(1), ["partner-01"])))
    assert status == 200 and "org_id" not in headers and "till" not in headers


# --- end to end: the CLI against the simulator on loopback ------------------------------------


def run_job(tmp_path: Path, sim: SimulatorThread, **api: Any) -> tuple[Result, dict[str, Any]]:
    job = write_job(tmp_path, sim.base_url, api=api)
    result = CliRunner().invoke(main, ["run", str(job)], env=DEMO_ENV)
    summary = read_summary(only_run_dir(tmp_path / "out"))
    return result, summary


def counters(sim: SimulatorThread) -> dict[str, Any]:
    return dict(sim.snapshot(pairs=False)["counters"])


def test_oauth_token_of_another_org_sends_nothing_exit_2(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile(org_id=100))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), ["partner-01"])

    result, summary = run_job(tmp_path, sim, auth="oauth", expect_org_id=200)

    assert result.exit_code == 2, result.output
    assert "org 100" in result.output and "org 200" in result.output
    assert "nothing was sent" in result.output
    seen = counters(sim)
    assert seen["delink_requests"] == 0  # the token request alone reached the server
    assert seen["requests"] == seen["tokens_issued"] == 1
    assert summary["counts"]["retryable"] == rows and summary["exit_code"] == 2
    assert summary["org"] == {
        "org_id": 100,
        "till": "demo.till",
        "expected_org_id": 200,
        "seen_in": "token",
    }


def test_oauth_token_of_the_expected_org_runs_and_records_it(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(org_id=200))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), ["partner-01"])

    result, summary = run_job(tmp_path, sim, auth="oauth", expect_org_id=200)

    assert result.exit_code == 0, result.output
    assert summary["counts"]["delinked"] == rows
    assert counters(sim)["delink_requests"] == 6  # no canary: the token named the org
    assert summary["org"]["org_id"] == 200 and summary["org"]["till"] == "demo.till"
    # The end-of-run table, report.html and the run.started log line say where it acted.
    assert "org 200 · till demo.till (from the token) · as expected" in result.output
    run_dir = only_run_dir(tmp_path / "out")
    assert "org 200 · till demo.till" in (run_dir / "report.html").read_text()
    run_log = (run_dir / "run.log.jsonl").read_text().splitlines()
    started = [json.loads(line) for line in run_log if '"run.started"' in line]
    assert len(started) == 1 and started[0]["org_id"] == 200
    assert started[0]["till"] == "demo.till"


def test_basic_canary_of_another_org_stops_after_one_request_exit_3(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(org_id=100))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), ["partner-01"])

    result, summary = run_job(tmp_path, sim, auth="basic", expect_org_id=200)

    assert result.exit_code == 3, result.output
    assert "org 100" in result.output and "org 200" in result.output
    seen = counters(sim)
    assert seen["delink_requests"] == 1 and seen["customers"] == 1  # the canary alone
    counts = summary["counts"]
    # The canary's answer is what the API did; every other row was never sent.
    assert counts["delinked"] == 1 and counts["retryable"] == rows - 1
    assert summary["org"]["org_id"] == 100 and summary["exit_code"] == 3
    assert "batcher resume" in result.output


def test_basic_canary_of_the_expected_org_then_the_rest(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile(org_id=200))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), ["partner-01"])

    result, summary = run_job(tmp_path, sim, auth="basic", expect_org_id=200)

    assert result.exit_code == 0, result.output
    assert summary["counts"]["delinked"] == rows
    # The canary is one customer alone, the first planned request's other 49 go on their own.
    assert counters(sim)["delink_requests"] == 7
    assert summary["org"] == {
        "org_id": 200,
        "till": "demo.till",
        "expected_org_id": 200,
        "seen_in": "response headers",
    }
    # run.started waited for the canary's answer, so it names the org.
    run_log = (only_run_dir(tmp_path / "out") / "run.log.jsonl").read_text().splitlines()
    started = [json.loads(line) for line in run_log if '"run.started"' in line]
    assert [(e["org_id"], e["till"]) for e in started] == [(200, "demo.till")]


def test_no_org_header_is_one_warning_and_the_run_carries_on(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(org_headers=False))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), ["partner-01"])

    result, summary = run_job(tmp_path, sim, auth="basic", expect_org_id=200)

    assert result.exit_code == 0, result.output
    assert summary["counts"]["delinked"] == rows
    run_log = (only_run_dir(tmp_path / "out") / "run.log.jsonl").read_text()
    assert run_log.count('"org.not_reported"') == 1
    assert summary["org"]["org_id"] is None and summary["org"]["expected_org_id"] == 200
    assert "org not reported by the API (expected org 200)" in result.output
