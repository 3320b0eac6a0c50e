"""`batcher validate` as a user runs it: files written, summary counts, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batcher.cli import main
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


def only_run_dir(out: Path, job: str) -> Path:
    (run_dir,) = (out / job).iterdir()
    return run_dir


def write_job(tmp_path: Path, path: str = "in.csv", extra: str = "") -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f'name = "t"\n[input]\npath = "{path}"\n[api]\nbase_url = "simulator"\n{extra}')
    return job


@pytest.mark.parametrize(
    ("sample", "fmt"), [("demo.toml", "csv"), ("demo-parquet.toml", "parquet")]
)
def test_samples_validate_and_every_row_is_accounted_for(
    tmp_path: Path, sample: str, fmt: str
) -> None:
    proc = run_cli("validate", str(REPO / "jobs" / sample), "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Nothing was sent" in proc.stdout
    name = sample.removesuffix(".toml")
    run_dir = only_run_dir(tmp_path, name)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["command"] == "validate" and summary["job"] == name
    assert summary["run_id"] == run_dir.name
    counts = summary["counts"]
    assert counts["valid"] + counts["rejected"] + counts["duplicate"] == summary["input"]["rows"]
    assert sum(summary["reasons"].values()) == counts["rejected"]
    assert summary["customers"] > 0 and summary["requests_planned"] > 0
    assert summary["input"]["files"][0]["sha256"]
    assert summary["settings"]["api"]["customers_per_request"] == 50
    assert summary["started_at"] <= summary["finished_at"]
    rejects_path = run_dir / f"rejects.{fmt}"
    rejects = (
        pl.read_csv(rejects_path, infer_schema=False)
        if fmt == "csv"
        else pl.read_parquet(rejects_path)
    )
    assert rejects.height == counts["rejected"] + counts["duplicate"]
    assert rejects.columns[0] == "batcher_row"
    assert rejects.columns[-4:] == [
        "batcher_status",
        "batcher_reason",
        "batcher_message",
        "batcher_duplicate_of",
    ]
    assert "batcher_source_file" not in rejects.columns
    preview = json.loads((run_dir / "plan-preview.json").read_text())["first_requests"]
    assert 0 < len(preview) <= 5
    for body in preview:
        assert 0 < len(body["deLinkCustomers"]) <= 50
        for entry in body["deLinkCustomers"]:
            (value,) = entry["customer"].values()
            assert isinstance(value, str)


def test_demo_extra_columns_are_carried_into_rejects(tmp_path: Path) -> None:
    args = ["validate", str(REPO / "jobs/demo.toml"), "--output", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rejects = pl.read_csv(only_run_dir(tmp_path, "demo") / "rejects.csv", infer_schema=False)
    assert {"region", "requested_by"} <= set(rejects.columns)
    assert set(rejects.get_column("batcher_status")) == {"rejected", "duplicate"}


def test_preview_is_exactly_the_planned_bodies(tmp_path: Path) -> None:
    rows = "".join(f"9198{i:08d},partner-0{i % 3 + 1}\n" for i in range(300))
    (tmp_path / "in.csv").write_text("mobile,partner_program_name\n" + rows)
    job = write_job(tmp_path, extra='customers_per_request = 7\nrate = "10/minute"\n')
    result = CliRunner().invoke(main, ["validate", str(job), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "out", "t")
    whole = json.loads((run_dir / "plan-preview.json").read_text())
    # 43 requests at 10 a minute: the time it takes at the quota, in the file and on screen.
    assert (whole["requests_planned"], whole["quota"]) == (43, "10/minute")
    assert (whole["expected_send_seconds"], whole["expected_send_time"]) == (258.0, "0:04:18")
    assert "at the quota of 10/minute sending takes at least 0:04:18" in result.output
    preview = whole["first_requests"]
    assert len(preview) == 5
    assert preview[0]["deLinkCustomers"][0] == {
        "customer": {"mobile": "919800000000"},
        "deLinkFromPartnerPrograms": [{"partnerProgramName": "partner-01"}],
    }
    assert all(len(b["deLinkCustomers"]) == 7 for b in preview)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["customers"], summary["requests_planned"]) == (300, 43)
    assert summary["expected_send_seconds"] == 258.0
    assert summary["outputs"]["rejects"] is None
    assert not list(run_dir.glob("rejects.*"))


def test_glob_rejects_name_the_source_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("mobile,partner_program_name\n919800000001,p1\nbad,p1\n")
    (tmp_path / "b.csv").write_text("mobile,partner_program_name\n919800000001,p1\n")
    proc = run_cli("validate", str(write_job(tmp_path, "*.csv")), "--output", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    rejects = pl.read_csv(only_run_dir(tmp_path / "o", "t") / "rejects.csv", infer_schema=False)
    assert rejects.select("batcher_row", "batcher_source_file", "batcher_status").rows() == [
        ("2", "a.csv", "rejected"),
        ("1", "b.csv", "duplicate"),
    ]


def test_unusable_input_is_exit_2_without_traceback_or_run_dir(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("phone,partner_program_name\n919800000001,p1\n")
    proc = run_cli("validate", str(write_job(tmp_path)), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "'phone', 'partner_program_name'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_non_utf8_input_error_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(b"mobile,partner_program_name\n919800000001,caf\xe9\n")
    proc = run_cli("validate", str(write_job(tmp_path)), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "row 1" in proc.stderr and "input.encoding" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_input_override_and_formula_cells_neutralised(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text('mobile,partner_program_name,note\n=cmd(),p1,"@x"\n')
    result = CliRunner().invoke(
        main,
        [
            "validate",
            str(write_job(tmp_path, "missing.csv")),
            "--input",
            str(other),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (only_run_dir(tmp_path / "o", "t") / "rejects.csv").read_text()
    assert "'=cmd()" in text and "'@x" in text
