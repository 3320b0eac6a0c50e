"""The run folder, `<output>/<job name>/<run id>/`: every file name in it, and its two records.

`RunDir` is the one place that knows what a run folder holds and what each file is called;
summary.json and manifest.json are written and read only through it, as typed values
(`RunSummary`/`ValidateSummary`, `Manifest`), with one error policy each.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batcher.atomic import write_atomic
from batcher.errors import BatcherError
from batcher.job import Job
from batcher.results.journal import JOURNAL_NAME
from batcher.results.summary import RunSummary, ValidateSummary, from_json, to_json

SUMMARY_NAME = "summary.json"
MANIFEST_NAME = "manifest.json"
OUTCOMES_NAME = "outcomes.parquet"
JOB_COPY_NAME = "job.toml"
LOG_NAME = "run.log.jsonl"
REPORT_NAME = "report.html"
ORIGIN_NAME = "origin.parquet"
PLAN_PREVIEW_NAME = "plan-preview.json"
FAILURES_STEM = "failures"
PARKED_ROWS_NAME = ".rows.parquet"
PLAN_NAME = ".plan"
REJECTS_STEM = "rejects"
RETRY_INPUT_STEM = "input"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestInput:
    """The input as the run found it: what a resume compares the files against."""

    pattern: str
    columns: list[str]
    format: str
    files: list[dict[str, Any]]  # input.files.InputFile.to_json(): what a resume compares
    rows: int
    sheet: str | None = None
    # `columns` under their names in the input file (outcomes.parquet renames a user's
    # `status` to `input_status`; a retry's input gives it its name back). None: the same.
    columns_as_written: list[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanParameters:
    identifier: str
    customers_per_request: int
    programs_per_customer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a resume needs: the job as it was, the inputs' fingerprints, the plan's parameters."""

    run_id: str
    job: str
    job_file: str
    parent: str | None
    created_at: str
    settings: dict[str, Any]
    input: ManifestInput
    output_dir: str
    output_url: str | None = None
    base_url: str
    plan: PlanParameters


def new_run_id(now: datetime | None = None) -> str:
    """A run id such as 20261126T041310Z-3f9a: sorts by start time, unique within a second."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def job_output_dir(job: Job) -> Path:
    return job.output_dir / job.name


@dataclass(frozen=True, slots=True)
class RunDir:
    """One run's folder and the names of everything in it."""

    path: Path

    @classmethod
    def create(cls, job: Job, run_id: str | None = None) -> RunDir:
        """Make a fresh run folder, owner-only (it holds customer data)."""
        path = job_output_dir(job) / (run_id or new_run_id())
        path.mkdir(parents=True, mode=0o700, exist_ok=False)
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_NAME

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    @property
    def outcomes_path(self) -> Path:
        return self.path / OUTCOMES_NAME

    @property
    def job_copy_path(self) -> Path:
        """The job file as it was when the run started."""
        return self.path / JOB_COPY_NAME

    @property
    def journal_path(self) -> Path:
        """The outcome journal; its write-ahead intents file sits beside it."""
        return self.path / JOURNAL_NAME

    @property
    def log_path(self) -> Path:
        return self.path / LOG_NAME

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_NAME

    @property
    def origin_path(self) -> Path:
        """In a retry run: which row of the first run each row came from."""
        return self.path / ORIGIN_NAME

    @property
    def plan_preview_path(self) -> Path:
        return self.path / PLAN_PREVIEW_NAME

    @property
    def parked_rows_path(self) -> Path:
        """The validated rows while their pairs are sent (removed once the results are written)."""
        return self.path / PARKED_ROWS_NAME

    @property
    def plan_path(self) -> Path:
        """A big plan's files while its pairs are sent (a folder; removed once they are)."""
        return self.path / PLAN_NAME

    def failures_path(self, fmt: str) -> Path:
        return self.path / f"{FAILURES_STEM}.{fmt}"

    def rejects_path(self, fmt: str) -> Path:
        return self.path / f"{REJECTS_STEM}.{fmt}"

    def retry_input_path(self, fmt: str) -> Path:
        """A retry run's input: its parent's rows to try again."""
        return self.path / f"{RETRY_INPUT_STEM}.{fmt}"

    def sibling(self, run_id: str) -> RunDir:
        """Another run of the same job."""
        return RunDir(self.path.parent / run_id)

    # --- the manifest: written when a run starts; a folder without one is not a run ----------

    def has_manifest(self) -> bool:
        return self.manifest_path.is_file()

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.manifest_path, to_json(manifest))

    def read_manifest(self) -> Manifest:
        """The run's manifest; BatcherError when the folder is not a (readable) run."""
        path = self.manifest_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BatcherError(
                f"{self.path} is not a run folder of batcher (it has no {MANIFEST_NAME}).",
                hint="Pass a folder such as output/<job>/<run id>; `batcher runs JOB` lists them.",
            ) from None
        except (OSError, ValueError) as e:
            raise BatcherError(f"Cannot read {path}: {e}.") from e
        try:
            return from_json(Manifest, data)
        except (KeyError, TypeError, ValueError) as e:
            raise BatcherError(f"{path} is not a run manifest (missing or bad {e}).") from e

    # --- the summary: written when a run (or validate) ends ------------------------------------

    def write_summary(self, summary: RunSummary | ValidateSummary) -> None:
        write_json(self.summary_path, summary.to_json())

    def read_summary(self) -> RunSummary | ValidateSummary | None:
        """The summary, or None when there is none yet (running, killed) or it is unreadable."""
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("command") == "validate":
                return from_json(ValidateSummary, data)
            return from_json(RunSummary, data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def read_run_summary(self) -> RunSummary | None:
        """A run's summary; None for an unfinished run or a validate folder."""
        summary = self.read_summary()
        return summary if isinstance(summary, RunSummary) else None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and owner-only: a reader never sees half a file, a crash never
    leaves one."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
