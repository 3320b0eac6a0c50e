"""Metrics for dashboards and alerts: a Prometheus textfile and/or a Pushgateway push.

`[metrics] textfile` is rewritten atomically (a temporary file, fsynced, then renamed) every
`progress_every` seconds while a run sends and once at its end, for node_exporter's textfile
collector. `[metrics] pushgateway` gets the same figures at the end of the run. Labels: `job`
and `org` (empty until the API names it). A metrics target that cannot be written is logged;
it never changes a run's exit code.

`batcher_last_success_timestamp_seconds` is set only by a run that finished (exit 0 or 1); other
runs carry the previous value forward (from the old textfile; the Pushgateway keeps it because
pushes replace only the metrics they carry), so "no success for a day" alerts stay true.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge, generate_latest, pushadd_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from batcher.atomic import write_atomic
from batcher.job import Job
from batcher.results.journal import Journal
from batcher.results.outcomes import SENT_STATUSES, STATUSES
from batcher.send.stats import RunStats

log = structlog.get_logger("batcher.present.metrics")

LAST_SUCCESS = "batcher_last_success_timestamp_seconds"
PUSH_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One look at a run, running or ended."""

    job: str
    org: str
    counts: dict[str, int]
    requests: int
    throttled: int
    retries: int
    achieved_per_s: float
    quota_per_s: float
    duration_s: float
    running: bool
    exit_code: int | None = None  # None while running


def registry_for(fig: RunFigures, last_success_s: float | None) -> CollectorRegistry:
    """The run's metrics in a registry of their own (never prometheus_client's global one)."""
    reg = CollectorRegistry(auto_describe=True)
    labels = ("job", "org")
    values = (fig.job, fig.org)

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, labels, registry=reg).labels(*values).set(value)

    rows = Gauge("batcher_rows", "Rows of the run by status.", (*labels, "status"), registry=reg)
    for status in STATUSES:
        if status in fig.counts or not fig.running:
            rows.labels(*values, status).set(fig.counts.get(status, 0))
    gauge("batcher_requests_sent", "Requests the run sent.", fig.requests)
    gauge("batcher_throttled_requests", "Requests answered 'slow down'.", fig.throttled)
    gauge("batcher_retries", "Requests sent again after a transient failure.", fig.retries)
    gauge("batcher_requests_per_second", "Requests per second achieved.", fig.achieved_per_s)
    gauge("batcher_quota_requests_per_second", "The job's quota, per second.", fig.quota_per_s)
    gauge("batcher_run_duration_seconds", "Seconds since the run started.", fig.duration_s)
    gauge("batcher_run_in_progress", "1 while the run sends, 0 once it ended.", int(fig.running))
    if fig.exit_code is not None:
        gauge("batcher_last_exit_code", "Exit code of the last run (0-3).", fig.exit_code)
    if last_success_s is not None:
        gauge(LAST_SUCCESS, "When a run last finished (exit 0 or 1), Unix time.", last_success_s)
    return reg


def previous_success_s(path: Path, job: str) -> float | None:
    """The last-success time in an existing textfile for `job` (None: none or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("job") == job:
                    return float(sample.value)
    except (OSError, ValueError):
        return None
    return None


def write_textfile(path: Path, fig: RunFigures, now_s: float | None = None) -> None:
    """Write the textfile atomically; world-readable, as node_exporter runs as another user
    (it holds counts and names, no customer data)."""
    last_success = (
        (now_s or time.time()) if fig.exit_code in (0, 1) else previous_success_s(path, fig.job)
    )
    data = generate_latest(registry_for(fig, last_success))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=0o644)  # not owner-only, whatever the umask (a CLI run's: 077)


def push(gateway: str, fig: RunFigures, now_s: float | None = None) -> None:
    """Push to a Pushgateway, grouped by job. POST (pushadd): metrics this push does not carry,
    such as an earlier success time, stay as they were."""
    last_success = (now_s or time.time()) if fig.exit_code in (0, 1) else None
    pushadd_to_gateway(
        gateway,
        job=fig.job,
        registry=registry_for(fig, last_success),
        timeout=PUSH_TIMEOUT_S,
    )


def publish(job: Job, fig: RunFigures) -> None:
    """Write every configured target; failures are logged, never raised."""
    if job.metrics.textfile is not None:
        try:
            write_textfile(job.metrics.textfile, fig)
        except OSError as e:
            log.warning("metrics.textfile_failed", path=str(job.metrics.textfile), error=str(e))
    if job.metrics.pushgateway is not None and not fig.running:
        try:
            push(job.metrics.pushgateway, fig)
            log.info("metrics.pushed", gateway=job.metrics.pushgateway)
        except Exception as e:  # urllib, socket and HTTP errors alike: logged, never raised
            log.warning("metrics.push_failed", gateway=job.metrics.pushgateway, error=str(e))


def live_figures(job: Job, journal: Journal, stats: RunStats) -> RunFigures:
    # Read the journal's counters key by key: they are written to as we look.
    counts = {s: journal.counts.get(s, 0) for s in SENT_STATUSES}
    elapsed_s = stats.elapsed_s()
    return RunFigures(
        job=job.name,
        org="",
        counts=counts,
        requests=stats.requests,
        throttled=stats.throttles,
        retries=stats.retries,
        achieved_per_s=stats.requests / elapsed_s if elapsed_s > 0 else 0.0,
        quota_per_s=job.api.quota.rate_per_s,
        duration_s=elapsed_s,
        running=True,
    )


class MetricsWatch:
    """While a run sends: rewrite the textfile every `every_s` seconds (the progress cadence)."""

    def __init__(self, job: Job, every_s: float) -> None:
        self.job = job
        self.every_s = every_s

    @contextlib.asynccontextmanager
    async def live(
        self, journal: Journal, stats: RunStats, pace: Callable[[], Any] = lambda: None
    ) -> AsyncIterator[None]:
        if self.job.metrics.textfile is None:
            yield
            return
        task = asyncio.create_task(self._every(journal, stats))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, journal: Journal, stats: RunStats) -> None:
        while True:
            publish(self.job, live_figures(self.job, journal, stats))
            await asyncio.sleep(self.every_s)
