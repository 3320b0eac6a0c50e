"""Results back to the bucket: `[output] dir = "s3://bucket/prefix"`.

A run works in a local staging folder (the journal and the lock need a real file system),
exactly as with a local output dir; at its end, and on a stop, the files the data team reads
are uploaded to `<dir>/<job name>/<run id>/`. Resume, retry and report work from the staging
folder, and upload again when they finish.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import structlog

from batcher.errors import BatcherError
from batcher.input import cloud
from batcher.input.tables import TableFormat
from batcher.job import Job
from batcher.runs.rundir import (
    FAILURES_STEM,
    OUTCOMES_NAME,
    PLAN_PREVIEW_NAME,
    REJECTS_STEM,
    REPORT_NAME,
    SUMMARY_NAME,
)

TABLE_FORMATS: tuple[str, ...] = get_args(TableFormat)

log = structlog.get_logger("batcher.runs.upload")

# What the data team picks up (every name from rundir, which owns them); the journal, intents,
# manifest and log stay in staging.
UPLOADED = (
    OUTCOMES_NAME,
    *(f"{stem}.{fmt}" for stem in (FAILURES_STEM, REJECTS_STEM) for fmt in TABLE_FORMATS),
    PLAN_PREVIEW_NAME,
    SUMMARY_NAME,
    REPORT_NAME,
)


def _options(job: Job) -> dict[str, str]:
    return cloud.storage_options(job.input.storage_options)


def run_url(job: Job, run_id: str) -> str | None:
    """Where a run's results go in the bucket (None: the output dir is local)."""
    if job.output_url is None:
        return None
    return f"{job.output_url.rstrip('/')}/{job.name}/{run_id}"


def check_output(job: Job) -> None:
    """Before anything is sent: credentials for the output bucket, and the bucket is there.

    Listing the prefix proves the bucket exists and the credentials work; a missing put
    permission can only show at the upload, which then names the staging folder.
    """
    if job.output_url is None:
        return
    url = cloud.parse_url(job.output_url)
    options = _options(job)
    try:
        cloud.check_credentials(url, options, f"the output bucket {job.output_url}")
        # A prefix no object has: the answer is empty, but only from a bucket we may list.
        probe = "/".join(p for p in (url.key.strip("/"), job.name, ".batcher-probe") if p)
        cloud.list_objects(url, probe, options)
    except BatcherError as e:
        raise BatcherError(
            f"[output] dir: {e.message}", hint=e.hint or "Check output.dir in the job file."
        ) from e


def upload_results(job: Job, run_dir: Path) -> list[str]:
    """Upload the run's result files; returns their URLs. BatcherError if one cannot be."""
    base = run_url(job, run_dir.name)
    if base is None:
        return []
    url = cloud.parse_url(base)
    options = _options(job)
    done: list[str] = []
    for name in UPLOADED:
        path = run_dir / name
        if path.is_file():
            target = url.child(f"{url.key}/{name}")
            cloud.put_file(target, path, options)
            done.append(target.url)
    log.info("results.uploaded", url=base, files=len(done))
    return done


def upload_results_or_log(job: Job, run_dir: Path) -> bool:
    """Upload, and on failure log where the results are instead of failing the run."""
    if job.output_url is None:
        return True
    try:
        upload_results(job, run_dir)
    except BatcherError as e:
        log.error(
            "results.upload_failed",
            url=run_url(job, run_dir.name),
            error=e.message,
            hint=e.hint,
            results=str(run_dir),
        )
        return False
    return True
