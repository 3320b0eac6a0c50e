"""The Python API: what the CLI, a scheduler (Airflow, Dagster) or a script calls.

Every function takes what the matching command takes and returns a typed result; none prints,
exits or configures logging unless asked (`log_format=`, and then for that call only). An
unusable job, input, credentials or lock raises `BatcherError` (its `exit_code` is the CLI's: 2,
nothing was sent). A run that starts always returns a result, whatever its rows' statuses; its
`exit_code` says what a scheduler should do (0 done, 1 done with rows to look at, 3 stopped
early: resume it).

The functions run their own event loop, so they refuse to be called from a running one;
`run_job_async` and friends run them in a worker thread for async callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from batcher.errors import BatcherError
from batcher.job import Job, load_job
from batcher.present import logs
from batcher.present.logs import LogFormat
from batcher.results.summary import RunResult, ValidateSummary
from batcher.runs.preflight import Confirm
from batcher.runs.rundir import RunDir

P = ParamSpec("P")
R = TypeVar("R")

JobLike = str | Path | Job

__all__ = [
    "BatcherError",
    "RunResult",
    "ValidationResult",
    "resume_run",
    "resume_run_async",
    "retry_run",
    "retry_run_async",
    "run_job",
    "run_job_async",
    "validate_job",
    "validate_job_async",
]


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """What `validate_job` found: its folder (rejects, plan-preview.json, summary.json)."""

    run_dir: Path
    summary: ValidateSummary
    exit_code: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Rows by validity: valid, rejected, duplicate."""
        return self.summary.counts


def _outside_event_loop(fn: Callable[P, R]) -> Callable[P, R]:
    """Refuse, with the way out, to run inside a running event loop (a run makes its own)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        raise RuntimeError(
            f"batcher.{fn.__name__}() runs its own event loop and cannot be called from a "
            f"running one; use `await batcher.{fn.__name__}_async(...)` instead."
        )

    return wrapper


async def _in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn` (undecorated) in a worker thread: a run's own event loop lives there."""
    inner: Callable[P, R] = getattr(fn, "__wrapped__", fn)
    return await asyncio.to_thread(inner, *args, **kwargs)


def _load(
    job: JobLike,
    *,
    input: str | None = None,
    base_url: str | None = None,
    output: str | None = None,
    max_pairs: int | None = None,
) -> Job:
    loaded = job if isinstance(job, Job) else load_job(job)
    return loaded.with_overrides(
        input_path=input, base_url=base_url, output_dir=output, max_pairs=max_pairs
    )


@_outside_event_loop
def validate_job(
    job: JobLike,
    *,
    input: str | None = None,
    output: str | None = None,
    log_format: LogFormat | None = None,
    log_level: str = "info",
) -> ValidationResult:
    """`batcher validate`: load, check and plan the input; write what was found; send nothing."""
    from batcher.runs.validate import validate

    with logs.for_call(log_format, log_level):
        folder, summary, exit_code = validate(_load(job, input=input, output=output))
        return ValidationResult(folder.path, summary, exit_code)


@_outside_event_loop
def run_job(
    job: JobLike,
    *,
    input: str | None = None,
    base_url: str | None = None,
    output: str | None = None,
    resume: bool = False,
    force: bool = False,
    wait: bool = False,
    max_pairs: int | None = None,
    confirm: Confirm | None = None,
    progress_every_s: float = 10.0,
    progress: Any = None,
    log_format: LogFormat | None = None,
    log_level: str = "info",
) -> RunResult:
    """`batcher run`: delink every valid pair and write an outcome for every row.

    `resume`: carry on the job's newest unfinished run instead (`force`: even if its input
    changed). `wait`: wait for another live run of the job or API key instead of failing.
    `confirm`: asked with the plan before anything is sent; False stops (exit 2).
    `progress`: a display (`batcher.present.progress.Progress`); by default none.
    """
    from batcher.runs import lineage
    from batcher.runs.execute import execute

    with logs.for_call(log_format, log_level):
        loaded = _load(job, input=input, base_url=base_url, output=output, max_pairs=max_pairs)
        if resume:
            target = lineage.newest_unfinished(loaded)
            if target is None:
                raise BatcherError(
                    f"Job {loaded.name} has no unfinished run to resume.",
                    hint=f"Start a new run: batcher run {loaded.path}",
                )
            return _reported(
                loaded,
                progress_every_s,
                progress,
                lambda watch: lineage.resume(
                    target, force=force, progress=watch, wait_for_lock=wait
                ),
            )
        return _reported(
            loaded,
            progress_every_s,
            progress,
            lambda watch: execute(loaded, progress=watch, wait_for_lock=wait, confirm=confirm),
        )


@_outside_event_loop
def resume_run(
    run_dir: str | Path,
    *,
    force: bool = False,
    wait: bool = False,
    progress_every_s: float = 10.0,
    progress: Any = None,
    log_format: LogFormat | None = None,
    log_level: str = "info",
) -> RunResult:
    """`batcher resume`: carry on an interrupted run; confirmed pairs are not sent again."""
    from batcher.runs import lineage

    with logs.for_call(log_format, log_level):
        folder, job = _folder_and_job(run_dir)
        return _reported(
            job,
            progress_every_s,
            progress,
            lambda watch: lineage.resume(folder, force=force, progress=watch, wait_for_lock=wait),
        )


@_outside_event_loop
def retry_run(
    run_dir: str | Path,
    *,
    include_failed: bool = False,
    wait: bool = False,
    progress_every_s: float = 10.0,
    progress: Any = None,
    log_format: LogFormat | None = None,
    log_level: str = "info",
) -> RunResult | None:
    """`batcher retry`: a new (child) run over RUN_DIR's retryable rows (`include_failed`: and
    its failed ones). None when there is nothing to retry."""
    from batcher.runs import lineage

    with logs.for_call(log_format, log_level):
        folder, job = _folder_and_job(run_dir)
        return _reported(
            job,
            progress_every_s,
            progress,
            lambda watch: lineage.retry(
                folder, include_failed=include_failed, progress=watch, wait_for_lock=wait
            ),
        )


async def validate_job_async(job: JobLike, **options: Any) -> ValidationResult:
    """`validate_job` for async callers: runs in a worker thread."""
    return await _in_thread(validate_job, job, **options)


async def run_job_async(job: JobLike, **options: Any) -> RunResult:
    """`run_job` for async callers: runs in a worker thread (signals stay with the host)."""
    return await _in_thread(run_job, job, **options)


async def resume_run_async(run_dir: str | Path, **options: Any) -> RunResult:
    """`resume_run` for async callers: runs in a worker thread."""
    return await _in_thread(resume_run, run_dir, **options)


async def retry_run_async(run_dir: str | Path, **options: Any) -> RunResult | None:
    """`retry_run` for async callers: runs in a worker thread."""
    return await _in_thread(retry_run, run_dir, **options)


class _Watchers:
    """Several watchers of a sending run (the display, the metrics textfile) as one."""

    def __init__(self, *watchers: Any) -> None:
        self.watchers = [w for w in watchers if w is not None]

    @contextlib.asynccontextmanager
    async def live(self, *watch: Any) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for w in self.watchers:
                await stack.enter_async_context(w.live(*watch))
            yield


def _folder_and_job(run_dir: str | Path) -> tuple[Path, Job]:
    """A run folder (absolute) and the job its manifest names: what resume and retry act on."""
    from batcher.runs import lineage

    folder = Path(run_dir).resolve()
    return folder, lineage.job_of_run(folder, lineage.read_manifest(folder))


def _reported(
    job: Job,
    progress_every_s: float,
    progress: Any,
    start: Callable[[Any], R],
) -> R:
    """Run `start(watchers)`; then tell [notify] and [metrics] how it went, also when it failed
    to start. Neither can change the result or the exception."""
    from batcher.present.metrics import MetricsWatch

    watch = _Watchers(progress, MetricsWatch(job, progress_every_s))
    started_s = time.monotonic()
    try:
        result = start(watch)
    except BatcherError as e:
        _tell_failure(job, e, time.monotonic() - started_s)
        raise
    if isinstance(result, RunResult):
        _tell_result(job, result)
    return result


def _org_of(summary_org: dict[str, Any] | None) -> str:
    if not summary_org or summary_org.get("org_id") is None:
        return ""
    return str(summary_org["org_id"])


def _tell_result(job: Job, result: RunResult) -> None:

    s = result.summary
    org = _org_of(s.org)
    # What happens to the notices goes into the run's own log, after its other events.
    logs.open_run_log(RunDir(result.run_dir).log_path, ())
    try:
        _publish_and_notify(job, result, org)
    finally:
        logs.close_run_log()


def _publish_and_notify(job: Job, result: RunResult, org: str) -> None:
    from batcher.present import metrics, notify

    s = result.summary
    metrics.publish(
        job,
        metrics.RunFigures(
            job=job.name,
            org=org,
            counts=dict(s.counts),
            requests=s.requests_sent,
            throttled=s.throttled,
            retries=s.retries,
            achieved_per_s=s.achieved_requests_per_second,
            quota_per_s=s.quota_requests_per_second,
            duration_s=s.elapsed_seconds,
            running=False,
            exit_code=result.exit_code,
        ),
    )
    notify.send(
        job.notify,
        notify.run_message(
            job=job.name,
            run_id=result.run_id,
            exit_code=result.exit_code,
            counts=dict(s.counts),
            org=org or None,
            elapsed_s=s.elapsed_seconds,
            stop_reason=s.abort or s.stopped,
            run_dir=str(result.run_dir),
        ),
    )


def _tell_failure(job: Job, error: BatcherError, elapsed_s: float) -> None:
    from batcher.present import metrics, notify

    metrics.publish(
        job,
        metrics.RunFigures(
            job=job.name,
            org="",
            counts={},
            requests=0,
            throttled=0,
            retries=0,
            achieved_per_s=0.0,
            quota_per_s=job.api.quota.rate_per_s,
            duration_s=elapsed_s,
            running=False,
            exit_code=error.exit_code,
        ),
    )
    notify.send(
        job.notify,
        notify.run_message(
            job=job.name,
            run_id=None,
            exit_code=error.exit_code,
            counts={},
            org=None,
            elapsed_s=None,
            stop_reason=None,
            run_dir=None,
            error=error.message,
        ),
    )
