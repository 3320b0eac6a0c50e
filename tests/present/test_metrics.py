"""[metrics]: a Prometheus textfile and a Pushgateway push, read back with prometheus-client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import batcher
from batcher.job import load_job
from batcher.present import metrics
from batcher.results.journal import Journal
from batcher.send.stats import RunStats
from tests.conftest import DEMO_ENV, Sim, clean_profile, write_job, write_pairs
from tests.loopback import Receiver

PROGRAMS = ["partner-01", "partner-02"]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), parsed by prometheus-client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    org: str = "",
    **labels: str,
) -> float:
    wanted = {"job": "e2e", "org": org, **labels}
    return parsed[(name, tuple(sorted(wanted.items())))]


def test_the_textfile_holds_the_run_and_survives_a_failed_one(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(state={"customers": 8, "program_count": 2}))
    write_pairs(tmp_path / "pairs.csv", range(10), PROGRAMS)
    job = write_job(tmp_path, sim.base_url, extra='[metrics]\ntextfile = "prom/batcher.prom"\n')
    prom = tmp_path / "prom" / "batcher.prom"

    result = batcher.run_job(job)

    assert result.summary.org is not None
    org = str(result.summary.org["org_id"])  # the org the API named (the simulator's)
    parsed = samples(prom.read_text())
    assert value(parsed, "batcher_rows", org=org, status="delinked") == 16
    assert value(parsed, "batcher_rows", org=org, status="failed") == 4
    assert value(parsed, "batcher_rows", org=org, status="rejected") == 0
    assert value(parsed, "batcher_requests_sent", org=org) == result.summary.requests_sent
    assert value(parsed, "batcher_quota_requests_per_second", org=org) == 1000
    assert value(parsed, "batcher_last_exit_code", org=org) == 1
    assert value(parsed, "batcher_run_in_progress", org=org) == 0
    success = value(parsed, "batcher_last_success_timestamp_seconds", org=org)
    assert success > 1.7e9
    assert os.stat(prom).st_mode & 0o777 == 0o644  # node_exporter reads it as another user
    assert [p.name for p in prom.parent.iterdir()] == ["batcher.prom"]  # no temporary left

    (tmp_path / "pairs.csv").unlink()
    with pytest.raises(batcher.InputError):
        batcher.run_job(job)

    parsed = samples(prom.read_text())
    assert value(parsed, "batcher_last_exit_code") == 2
    assert value(parsed, "batcher_last_success_timestamp_seconds") == success  # carried over


def test_while_running_the_textfile_says_so_and_nothing_is_pushed(
    tmp_path: Path, receiver: Receiver
) -> None:
    job_path = write_job(
        tmp_path,
        "simulator",
        extra=f'[metrics]\ntextfile = "b.prom"\npushgateway = "http://127.0.0.1:{receiver.port}"\n',
    )
    job = load_job(job_path)
    figures = metrics.RunFigures(
        job="e2e",
        org="",
        counts={"delinked": 3},
        requests=1,
        throttled=0,
        retries=0,
        achieved_per_s=1.0,
        quota_per_s=1000.0,
        duration_s=1.0,
        running=True,
    )

    metrics.publish(job, figures)

    parsed = samples((tmp_path / "b.prom").read_text())
    assert value(parsed, "batcher_run_in_progress") == 1
    assert value(parsed, "batcher_rows", status="delinked") == 3
    assert not any(name == "batcher_last_exit_code" for name, _ in parsed)
    assert receiver.requests == []


def test_the_pushgateway_gets_the_same_metrics(
    tmp_path: Path, simulator: Sim, receiver: Receiver
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(
        tmp_path,
        sim.base_url,
        extra=f'[metrics]\npushgateway = "http://127.0.0.1:{receiver.port}"\n',
    )

    result = batcher.run_job(job)

    assert result.exit_code == 0
    (push,) = receiver.requests
    assert push.method == "POST" and push.path == "/metrics/job/e2e"
    assert result.summary.org is not None
    org = str(result.summary.org["org_id"])
    parsed = samples(push.body.decode())
    assert value(parsed, "batcher_rows", org=org, status="delinked") == 10
    assert value(parsed, "batcher_last_exit_code", org=org) == 0
    assert value(parsed, "batcher_last_success_timestamp_seconds", org=org) > 1.7e9


def test_an_unreachable_pushgateway_is_logged_and_changes_nothing(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(tmp_path, sim.base_url, extra='[metrics]\npushgateway = "http://127.0.0.1:9"\n')

    result = batcher.run_job(job)

    assert result.exit_code == 0
    assert '"metrics.push_failed"' in (result.run_dir / "run.log.jsonl").read_text()


async def test_while_a_run_sends_the_textfile_is_written_at_its_cadence(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, "simulator", extra='[metrics]\ntextfile = "live.prom"\n'))
    journal = Journal(tmp_path / "journal.jsonl")
    stats = RunStats(pairs_total=10, requests=4)
    journal.counts["delinked"] = 7
    try:
        async with metrics.MetricsWatch(job, every_s=3600).live(journal, stats):
            await asyncio.sleep(0)  # the watcher writes once at the start, then every every_s
            parsed = samples((tmp_path / "live.prom").read_text())
    finally:
        journal.close()

    assert value(parsed, "batcher_run_in_progress") == 1
    assert value(parsed, "batcher_rows", status="delinked") == 7
    assert value(parsed, "batcher_requests_sent") == 4
