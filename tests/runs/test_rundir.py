"""The run folder: summary.json and manifest.json written and read back as typed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batcher.errors import BatcherError
from batcher.results.summary import InputFacts, RunSummary, ValidateSummary
from batcher.runs.rundir import Manifest, ManifestInput, PlanParameters, RunDir


def test_a_run_summary_round_trips_through_the_folder(tmp_path: Path) -> None:
    folder = RunDir(tmp_path)
    summary = RunSummary(
        job="demo",
        run_id="20260101T000000Z-abcd",
        input=InputFacts(files=[{"path": "a.csv", "size": 1, "mtime_ns": 2, "sha256": "x"}]),
        counts={"delinked": 3},
        stopped="interrupted by SIGINT",
        timeline=[{"second": 0, "requests": 3, "throttled": 0}],
        exit_code=3,
    )
    folder.write_summary(summary)

    assert folder.read_summary() == summary
    data = json.loads(folder.summary_path.read_text())
    # The file's keys keep their historical order: validate's part first, then the run's.
    assert list(data)[:5] == ["job", "run_id", "settings", "input", "counts"]
    assert list(data)[-1] == "files" and data["input"]["files"][0]["sha256"] == "x"


def test_an_older_summary_reads_with_defaults_and_ignores_unknown_keys(tmp_path: Path) -> None:
    folder = RunDir(tmp_path)
    folder.summary_path.write_text(json.dumps({"job": "j", "counts": {"failed": 1}, "new": 1}))

    summary = folder.read_run_summary()

    assert summary is not None and summary.counts == {"failed": 1}
    assert summary.stopped is None and summary.requests_sent == 0


def test_validate_summary_is_told_apart_and_keeps_command_first(tmp_path: Path) -> None:
    folder = RunDir(tmp_path)
    folder.write_summary(ValidateSummary(job="j", counts={"valid": 1}))

    assert isinstance(folder.read_summary(), ValidateSummary)
    assert folder.read_run_summary() is None
    assert next(iter(json.loads(folder.summary_path.read_text()))) == "command"


def test_a_torn_summary_reads_as_none(tmp_path: Path) -> None:
    folder = RunDir(tmp_path)
    folder.summary_path.write_text('{"job": ')
    assert folder.read_summary() is None


def test_manifest_round_trips_and_a_bad_one_is_a_clear_error(tmp_path: Path) -> None:
    folder = RunDir(tmp_path)
    with pytest.raises(BatcherError, match="not a run folder"):
        folder.read_manifest()
    manifest = Manifest(
        run_id="r",
        job="j",
        job_file="/jobs/j.toml",
        parent=None,
        created_at="2026-01-01T00:00:00.000Z",
        settings={"name": "j"},
        input=ManifestInput(pattern="/d/*.csv", columns=["mobile"], format="csv", files=[], rows=0),
        output_dir="/out",
        base_url="simulator",
        plan=PlanParameters(
            identifier="mobile", customers_per_request=50, programs_per_customer=50
        ),
    )
    folder.write_manifest(manifest)
    assert folder.read_manifest() == manifest

    folder.manifest_path.write_text(json.dumps({"run_id": "r"}))
    with pytest.raises(BatcherError, match="not a run manifest"):
        folder.read_manifest()
