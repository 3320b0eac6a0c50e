"""The Python API: typed results, documented errors, no printing, and the same files as the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import batcher
from batcher.cli import main
from tests.conftest import DEMO_ENV, Sim, clean_profile, only_run_dir, write_job, write_pairs

PROGRAMS = ["partner-01", "partner-02"]
# What differs between two runs of the same job: clocks, ids, and where the files went.
VOLATILE = {
    "run_id",
    "started_at",
    "finished_at",
    "elapsed_seconds",
    "send_seconds",
    "achieved_requests_per_second",
    "latency_ms",
    "timeline",
    "files",
    "settings",
}


@pytest.fixture(autouse=True)
def demo_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)


def stable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def test_api_and_cli_runs_of_one_job_write_the_same_result_files(
    tmp_path: Path, simulator: Sim
) -> None:
    profile = clean_profile(state={"customers": 40, "program_count": 2})
    write_pairs(tmp_path / "pairs.csv", range(50), PROGRAMS)  # 10 customers the API does not know
    (tmp_path / "pairs.csv").write_text(
        (tmp_path / "pairs.csv").read_text() + "not-a-mobile,partner-01,r0\n"
    )
    via_cli, via_api = simulator(profile), simulator(profile)  # each starts with every link
    job = write_job(tmp_path, "simulator")
    out_cli, out_api = str(tmp_path / "cli"), str(tmp_path / "api")

    cli = CliRunner().invoke(
        main, ["run", str(job), "--base-url", via_cli.base_url, "--output", out_cli, "--quiet"]
    )
    result = batcher.run_job(job, base_url=via_api.base_url, output=out_api)

    assert cli.exit_code == result.exit_code == 1, cli.output
    cli_dir = only_run_dir(tmp_path / "cli")
    assert result.run_dir == only_run_dir(tmp_path / "api")
    names = sorted(p.name for p in cli_dir.iterdir())
    assert names == sorted(p.name for p in result.run_dir.iterdir())
    for name in ("failures.csv", "rejects.csv"):
        assert (cli_dir / name).read_bytes() == (result.run_dir / name).read_bytes(), name
    answers = pl.exclude("finished_at", "request_id")
    assert (
        pl.read_parquet(cli_dir / "outcomes.parquet")
        .select(answers)
        .equals(pl.read_parquet(result.run_dir / "outcomes.parquet").select(answers))
    )
    cli_summary = json.loads((cli_dir / "summary.json").read_text())
    api_summary = json.loads((result.run_dir / "summary.json").read_text())
    assert list(cli_summary) == list(api_summary)
    assert stable(cli_summary) == stable(api_summary)
    # The typed result is the summary the file holds.
    assert result.counts == api_summary["counts"] and result.counts["failed"] == 20
    assert result.summary.requests_sent == api_summary["requests_sent"]
    assert result.stop_reason is None and result.run_id == result.run_dir.name


def test_the_api_prints_nothing_and_is_safe_to_call_twice(
    tmp_path: Path, simulator: Sim, capfd: pytest.CaptureFixture[str]
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(20), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)

    first = batcher.run_job(job)
    second = batcher.run_job(str(job))

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert first.run_dir != second.run_dir
    assert second.counts["not_linked"] == 40  # the first run delinked them all
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # ... while the run log still records the run.
    lines = (first.run_dir / "run.log.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert "run.finished" in events


def test_an_unusable_job_raises_batcher_error_with_the_cli_exit_code(tmp_path: Path) -> None:
    job = tmp_path / "bad.toml"
    job.write_text('name = "x"\n[input]\npath = "missing.csv"\n[api]\nbase_url = "simulator"\n')

    with pytest.raises(batcher.BatcherError) as raised:
        batcher.run_job(job)

    assert raised.value.exit_code == 2 and "missing.csv" in str(raised.value)
    assert isinstance(raised.value, batcher.InputError)


def test_validate_job_returns_counts_and_writes_the_plan(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(tmp_path, "simulator")

    result = batcher.validate_job(job)

    assert result.exit_code == 0 and result.counts == {"valid": 10, "rejected": 0, "duplicate": 0}
    assert (result.run_dir / "plan-preview.json").is_file()


def test_inside_a_running_loop_the_sync_call_refuses_and_the_async_one_runs(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)

    async def from_a_loop() -> batcher.RunResult:
        with pytest.raises(RuntimeError, match="run_job_async"):
            batcher.run_job(job)
        return await batcher.run_job_async(job)

    result = asyncio.run(from_a_loop())

    assert result.exit_code == 0 and result.counts["delinked"] == 10


def test_retry_and_resume_through_the_api(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile(state={"customers": 3, "program_count": 2}))
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)
    first = batcher.run_job(job)
    assert first.exit_code == 1 and first.counts["failed"] == 4

    assert batcher.retry_run(first.run_dir) is None  # nothing retryable
    child = batcher.retry_run(first.run_dir, include_failed=True)
    assert child is not None and child.summary.parent == first.run_id
    assert child.counts["failed"] == 4
    with pytest.raises(batcher.BatcherError, match="no unfinished run"):
        batcher.run_job(job, resume=True)
