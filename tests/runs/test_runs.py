"""`batcher runs`: a job's past runs, newest first, unfinished ones shown as such."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import batcher
from batcher.job import load_job
from batcher.runs.history import list_runs
from batcher.runs.lineage import newest_unfinished
from tests.conftest import DEMO_ENV, run_cli, write_job, write_pairs


def make_run(job_dir: Path, run_id: str, summary: dict[str, object] | None) -> None:
    d = job_dir / run_id
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(
        json.dumps({"run_id": run_id, "job": "e2e", "parent": None, "created_at": "2026-01-01"})
    )
    if summary is not None:
        (d / "summary.json").write_text(json.dumps({"job": "e2e", "run_id": run_id, **summary}))


def fill(out: Path) -> Path:
    job_dir = out / "e2e"
    make_run(
        job_dir,
        "20260101T000000Z-aaaa",
        {
            "command": "run",
            "started_at": "2026-01-01T00:00:00.000Z",
            "finished_at": "2026-01-01T00:01:30.000Z",
            "counts": {"delinked": 90, "retryable": 10},
            "exit_code": 1,
            "parent": None,
        },
    )
    make_run(
        job_dir,
        "20260102T000000Z-bbbb",
        {
            "command": "resume",
            "started_at": "2026-01-02T00:00:00.000Z",
            "elapsed_seconds": 12.5,
            "counts": {"delinked": 10},
            "exit_code": 0,
            "parent": "20260101T000000Z-aaaa",
        },
    )
    make_run(job_dir, "20260103T000000Z-cccc", None)  # killed: no summary
    validate_dir = job_dir / "20260100T000000Z-dddd"
    validate_dir.mkdir()
    (validate_dir / "summary.json").write_text(json.dumps({"command": "validate"}))
    return job_dir


def test_list_runs_newest_first_with_unfinished_and_without_validate(tmp_path: Path) -> None:
    runs = list_runs(fill(tmp_path / "out"))
    assert [r.run_id[-4:] for r in runs] == ["cccc", "bbbb", "aaaa"]
    unfinished, resumed, first = runs
    assert not unfinished.finished and unfinished.exit_code is None
    assert resumed.parent == "20260101T000000Z-aaaa" and resumed.duration_s == 12.5
    assert first.duration_s == 90.0 and first.counts["retryable"] == 10 and first.exit_code == 1


def test_runs_command_by_job_file_and_by_name(tmp_path: Path) -> None:
    fill(tmp_path / "out")
    job = write_job(tmp_path, "http://127.0.0.1:9")

    for args in (["runs", str(job)], ["runs", "e2e", "--output", str(tmp_path / "out")]):
        result = run_cli(*args, env={"COLUMNS": "200"})
        assert result.returncode == 0, result.stderr
        lines = [ln for ln in result.stdout.splitlines() if "2026010" in ln]
        assert [ln.split("│")[2].strip()[-4:] for ln in lines] == ["cccc", "bbbb", "aaaa"]
        assert "unfinished" in lines[0]
        assert "delinked 10" in lines[1] and "20260101T000000Z-aaaa" in lines[1]
        assert "retryable 10" in lines[2] and "90.0 s" in lines[2]


def test_runs_of_a_job_without_runs_is_an_error_with_a_hint(tmp_path: Path) -> None:
    result = run_cli("runs", "nothing", "--output", str(tmp_path))
    assert result.returncode == 2
    assert "No runs found" in result.stderr and "--output" in result.stderr


def test_two_runs_started_in_one_second_are_ordered_by_their_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run ids are precise to the second: the later run of one second is the newer one, whatever
    its random suffix, for `batcher runs` and for `run --resume`."""
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    write_pairs(tmp_path / "pairs.csv", range(3), ["partner-01"])
    job_path = write_job(tmp_path, "simulator")
    first = batcher.run_job(job_path).run_dir
    # A second run in the same second whose suffix sorts before the first's, that never finished.
    second_id = first.name[:16] + "-0000"
    second = first.parent / second_id
    shutil.copytree(first, second)
    (second / "summary.json").unlink()
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["created_at"]
    manifest["run_id"] = second_id
    started = max(
        manifest["created_at"], json.loads((first / "summary.json").read_text())["started_at"]
    )
    later = datetime.fromisoformat(started.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    manifest["created_at"] = later.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    (second / "manifest.json").write_text(json.dumps(manifest))
    assert sorted([first.name, second_id])[0] == second_id  # names alone would say "first"

    assert next(r.run_id for r in list_runs(first.parent)) == second_id
    assert newest_unfinished(load_job(job_path)) == second
