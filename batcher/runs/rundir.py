"""Run directories: `<output>/<job name>/<run id>/`, ids that sort by start time."""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batcher.job import Job


def new_run_id(now: datetime | None = None) -> str:
    """A run id such as 20261126T041310Z-3f9a: sorts by start time, unique within a second."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def job_output_dir(job: Job) -> Path:
    return job.output_dir / job.name


def create_run_dir(job: Job, run_id: str | None = None) -> tuple[str, Path]:
    """Make a fresh run folder, owner-only (it holds customer data)."""
    run_id = run_id or new_run_id()
    path = job_output_dir(job) / run_id
    path.mkdir(parents=True, mode=0o700, exist_ok=False)
    return run_id, path


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees half a file, a crash never leaves one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
