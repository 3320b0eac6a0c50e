"""`batcher report` across runs written by different batcher versions: columns added later."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner

from batcher.cli import main
from tests.conftest import DEMO_ENV, Sim, clean_profile, mobile, only_run_dir, write_job


def _run(tmp_path: Path, sim_url: str, rows: list[tuple[str, str]]) -> int:
    pl.DataFrame(rows, schema=["mobile", "partner_program_name"], orient="row").write_csv(
        tmp_path / "pairs.csv"
    )
    job = write_job(tmp_path, sim_url)
    return CliRunner().invoke(main, ["run", str(job), "--quiet"], env=DEMO_ENV).exit_code


def test_report_merges_a_family_whose_first_run_predates_api_identifier(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    rows = [(mobile(i), "partner-01") for i in range(5)] + [(mobile(5), "no-such-program")]
    assert _run(tmp_path, sim.base_url, rows) == 1
    parent = only_run_dir(tmp_path / "out")
    runner = CliRunner()
    assert (
        runner.invoke(main, ["retry", str(parent), "--all", "--quiet"], env=DEMO_ENV).exit_code == 1
    )
    # The first run was written by a batcher without the column.
    old = pl.read_parquet(parent / "outcomes.parquet").drop("api_identifier")
    old.write_parquet(parent / "outcomes.parquet")

    out = tmp_path / "final.csv"
    result = runner.invoke(main, ["report", str(parent), "--out", str(out)])

    assert result.exit_code == 0, result.output
    merged = pl.read_csv(out, infer_schema=False)
    assert merged["api_identifier"].to_list() == [None] * 5 + [mobile(5)]
