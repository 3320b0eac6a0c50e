"""Small things an operator reads: the quota line, summary names, `batcher runs`, messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batcher.cli import main
from tests.conftest import DEMO_ENV, Sim, clean_profile, mobile, read_summary, write_job


def run_dir_of(out: Path, job: str = "e2e") -> Path:
    (only,) = [p for p in (out / job).iterdir() if p.is_dir()]
    return only


@pytest.mark.parametrize(("rate", "unit"), [("50/second", "second"), ("600/minute", "minute")])
def test_the_quota_line_never_reads_above_100_percent_and_speaks_the_quotas_unit(
    tmp_path: Path, simulator: Sim, rate: str, unit: str
) -> None:
    """Three requests in a few milliseconds are not '177% of the quota'."""
    sim = simulator(clean_profile())
    pl.DataFrame(
        {"mobile": [mobile(i) for i in range(3)], "partner_program_name": ["partner-01"] * 3}
    ).write_csv(tmp_path / "pairs.csv")
    job = write_job(tmp_path, sim.base_url, api={"rate": rate, "customers_per_request": 1})

    result = CliRunner().invoke(main, ["run", str(job)], env={**DEMO_ENV, "COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("requests "))
    percents = [float(p) for p in re.findall(r"([0-9.]+)%", line)]
    assert percents and max(percents) <= 100, line
    assert f"/{unit}" in line and f"busiest {unit} 3 requests" in line, line
    if unit == "minute":
        assert "/s" not in line and "req/s" not in line, line
    summary = read_summary(run_dir_of(tmp_path / "out"))
    assert summary["quota_use"]["busiest_window_requests"] == 3
    assert summary["quota_use"]["window_seconds"] == (1 if unit == "second" else 60)


def test_summary_names_planned_and_sent_requests_so_nobody_guesses(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    pl.DataFrame(
        {"mobile": [mobile(i) for i in range(10)], "partner_program_name": ["partner-01"] * 10}
    ).write_csv(tmp_path / "pairs.csv")
    job = write_job(tmp_path, sim.base_url, api={"customers_per_request": 5})

    result = CliRunner().invoke(main, ["run", str(job), "--quiet"], env=DEMO_ENV)

    assert result.exit_code == 0, result.output
    summary = read_summary(run_dir_of(tmp_path / "out"))
    assert "requests" not in summary
    assert summary["requests_planned"] == 2
    # requests_sent: what reached the API, as the server counted it.
    assert summary["requests_sent"] == sim.snapshot(pairs=False)["counters"]["delink_requests"]


def test_batcher_runs_shows_whole_run_ids_in_80_columns(tmp_path: Path) -> None:
    job_dir = tmp_path / "out" / "a-rather-long-job-name-for-the-table"
    run_ids = ["20260101T000000Z-aaaa", "20260102T000000Z-bbbb"]
    for run_id in run_ids:
        d = job_dir / run_id
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"run_id": run_id, "job": job_dir.name}))
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "job": job_dir.name,
                    "run_id": run_id,
                    "command": "retry",
                    "started_at": "2026-01-01T00:00:00.000Z",
                    "elapsed_seconds": 12.5,
                    "counts": {"delinked": 123456, "not_linked": 7890, "retryable": 12},
                    "exit_code": 1,
                    "parent": "20251231T235959Z-cccc",
                }
            )
        )

    result = CliRunner().invoke(
        main, ["runs", "--output", str(tmp_path / "out")], env={"COLUMNS": "80"}
    )

    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    for run_id in [*run_ids, "20251231T235959Z-cccc"]:
        assert run_id in result.output, result.output


def test_a_float_mobile_column_is_rejected_with_a_reason_that_says_why(tmp_path: Path) -> None:
    pl.DataFrame(
        {"mobile": [919800000001.0, 919800000002.0], "partner_program_name": ["p1", "p1"]}
    ).write_parquet(tmp_path / "pairs.parquet")
    job = write_job(tmp_path, "simulator", input_path="pairs.parquet")

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(tmp_path / "out")
    summary = read_summary(run_dir)
    assert summary["counts"]["rejected"] == 2
    assert any("floating-point" in n for n in summary["input"]["notes"])
    rejects = pl.read_parquet(run_dir / "rejects.parquet")
    assert all("floating-point" in m for m in rejects["batcher_message"].to_list())


def test_the_progress_line_shows_a_per_minute_quota_per_minute() -> None:
    """A "20/minute" quota reads "20.0/min", never "0.3/s"."""
    import io
    from collections import Counter
    from types import SimpleNamespace

    from rich.console import Console

    from batcher.present.progress import render, take_figures
    from batcher.send.stats import RunStats

    journal = SimpleNamespace(counts=Counter({"delinked": 4}))
    stats = RunStats(pairs_total=100, requests=4)
    stats.started_at -= 60.0
    console = Console(file=io.StringIO(), width=160, record=True)
    figures = take_figures(journal, stats, 20 / 60, quota_period_s=60.0)  # type: ignore[arg-type]

    console.print(render(figures))

    text = console.export_text()
    assert "of 20.0/min quota" in text and " req/min" in text, text
    assert "/s" not in text.replace("req/min", ""), text
