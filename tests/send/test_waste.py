"""Not one request of quota wasted (issue 12): outages, batch limits and retries, end to end.

`batcher run` in-process (click's CliRunner) against the simulator on a loopback port; the
simulator's own counter of delink requests is the truth for what the quota paid.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
from click.testing import CliRunner, Result

from batcher.cli import main
from batcher.simulator.profile import Profile
from tests.conftest import (
    DEMO_ENV,
    Sim,
    mobile,
    only_run_dir,
    profile_with,
    read_summary,
    write_job,
    write_pairs,
)


def cli(*args: str) -> Result:
    result = CliRunner().invoke(main, [*args, "--quiet"], env=DEMO_ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def sim_profile(customers: int, **sections: Any) -> Profile:
    base = {"seed": 12, "state": {"customers": customers, "program_count": 1}}
    return profile_with(base, sections)


def delink_requests(sim: Any) -> int:
    return int(sim.snapshot(pairs=False)["counters"]["delink_requests"])


def test_an_outage_costs_one_probe_at_a_time_then_stops_resumable_and_resume_finishes(
    tmp_path: Path, simulator: Sim
) -> None:
    """503 to everything, 30 planned requests: at most 30 requests, exit 3, every row retryable."""
    sim = simulator(sim_profile(1500, faults={"server_error": 1.0, "server_error_statuses": [503]}))
    write_pairs(tmp_path / "pairs.csv", range(1500), ["partner-01"])
    # Small settings keep the wall time short; the bound is the same as with issue 12's 20 s.
    job = write_job(
        tmp_path,
        sim.base_url,
        retry={"backoff_base_seconds": 0.05, "backoff_max_seconds": 1, "give_up_after_seconds": 2},
    )

    result = cli("run", str(job))

    assert result.exit_code == 3, result.output
    assert delink_requests(sim) <= 30
    run_dir = only_run_dir(tmp_path / "out")
    summary = read_summary(run_dir)
    assert summary["counts"]["retryable"] == 1500 == summary["input"]["rows"]
    assert "failing for" in summary["abort"] and "HTTP 503" in summary["abort"]
    assert "failing for" in result.output

    sim.set_faults(None)
    before = delink_requests(sim)
    resumed = cli("resume", str(run_dir))

    assert resumed.exit_code == 0, resumed.output
    # Basic auth's canary (one customer alone), then full requests: nothing sent twice.
    assert delink_requests(sim) - before == 31
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.height == 1500
    assert outcomes.get_column("status").unique().to_list() == ["delinked"]
    assert sim.still_linked("mobile", [(mobile(i), "partner-01") for i in range(1500)]) == []


def test_attempts_in_an_outage_do_not_use_up_max_attempts(tmp_path: Path, simulator: Sim) -> None:
    """503 to everything until the server has seen 15 requests, then healthy: with
    max_attempts = 2, every pair still ends delinked, and the run saw one outage."""
    sim = simulator(sim_profile(500, faults={"server_error": 1.0, "server_error_statuses": [503]}))
    write_pairs(tmp_path / "pairs.csv", range(500), ["partner-01"])
    job = write_job(
        tmp_path,
        sim.base_url,
        retry={"max_attempts": 2, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2},
    )
    done = threading.Event()

    def heal_after_15_requests() -> None:
        while not done.is_set() and delink_requests(sim) < 15:
            time.sleep(0.01)
        sim.set_faults(None)

    healer = threading.Thread(target=heal_after_15_requests)
    healer.start()
    try:
        result = cli("run", str(job))
    finally:
        done.set()
        healer.join()

    assert result.exit_code == 0, result.output
    summary = read_summary(only_run_dir(tmp_path / "out"))
    assert summary["counts"]["delinked"] == 500
    assert summary["outages"] == 1


def test_the_batch_limit_is_learned_and_every_later_request_packed_at_it(
    tmp_path: Path, simulator: Sim
) -> None:
    """A server taking 10 customers per request, 3,000 customers at 50: few 1060s, ~300 requests."""
    sim = simulator(sim_profile(3000, max_customers_per_request=10))
    write_pairs(tmp_path / "pairs.csv", range(3000), ["partner-01"])
    job = write_job(tmp_path, sim.base_url, api={"customers_per_request": 50})

    result = cli("run", str(job))

    assert result.exit_code == 0, result.output
    counters = sim.snapshot(pairs=False)["counters"]
    assert counters["by_status"].get("400", 0) <= 20  # every 400 here is a 1060
    assert counters["delink_requests"] <= 1.1 * math.ceil(3000 / 10) + 20
    summary = read_summary(only_run_dir(tmp_path / "out"))
    assert summary["learned_customers_per_request"] == 10
    assert summary["counts"]["delinked"] == 3000


def test_retries_travel_in_full_requests(tmp_path: Path, simulator: Sim) -> None:
    """30% of requests answered 503 at random: at most 1.25 x planned / 0.7 requests."""
    sim = simulator(sim_profile(3300, faults={"server_error": 0.3, "server_error_statuses": [503]}))
    write_pairs(tmp_path / "pairs.csv", range(3300), ["partner-01"])
    job = write_job(tmp_path, sim.base_url, retry={"max_attempts": 20})

    result = cli("run", str(job))

    assert result.exit_code == 0, result.output
    planned = 66
    assert delink_requests(sim) <= 1.25 * planned / (1 - 0.3)
    summary = read_summary(only_run_dir(tmp_path / "out"))
    assert summary["counts"]["delinked"] == 3300
    assert summary["learned_customers_per_request"] is None
