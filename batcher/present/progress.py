"""Progress while a run sends: a live two-line display on a terminal, log lines everywhere else.

On a terminal the display redraws a few times a second; log lines are routed through its console so
they scroll above it instead of tearing it. Off a terminal (cron, CI, Airflow) there is no display:
a `run.progress` event every `every_s` seconds says the same thing to the log aggregator.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, TextIO

import structlog
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batcher.present import logs
from batcher.results.journal import Journal
from batcher.results.outcomes import Status
from batcher.send.pace import PaceState
from batcher.send.stats import RunStats

log = structlog.get_logger("batcher.present.progress")

Mode = Literal["bar", "log", "off"]
# The statuses a sent pair can end with, in display order.
SENT_STATUSES = (
    Status.DELINKED,
    Status.DELINKED_UNCONFIRMED,
    Status.NOT_LINKED,
    Status.FAILED,
    Status.RETRYABLE,
)
RATE_WINDOW_S = 3  # requests/s is measured over the last few complete seconds


@dataclass(frozen=True, slots=True)
class Figures:
    """One look at a run in progress."""

    done: int
    total: int
    counts: dict[str, int]
    requests: int
    rate_per_s: float
    quota_per_s: float
    pace_per_s: float | None
    paused_s: float
    throttles: int
    retries: int
    elapsed_s: float
    eta_s: float | None
    quota_period_s: float = 1.0  # 60 for a per-minute quota: rates are then shown per minute


def recent_rate_per_s(stats: RunStats, elapsed_s: float) -> float:
    """Requests per second over the last complete seconds of the timeline."""
    now = int(elapsed_s)
    if now < RATE_WINDOW_S:
        return stats.requests / elapsed_s if elapsed_s > 0 else 0.0
    window = range(now - RATE_WINDOW_S, now)
    return sum(stats.timeline.get(s, (0, 0))[0] for s in window) / RATE_WINDOW_S


def take_figures(
    journal: Journal,
    stats: RunStats,
    quota_per_s: float,
    pace: PaceState | None = None,
    loop_time: float = 0.0,
    quota_period_s: float = 1.0,
) -> Figures:
    # Read counters key by key: the journal's Counter is being written to as we look.
    counts = {s.value: journal.counts.get(s.value, 0) for s in SENT_STATUSES}
    done = sum(counts.values())
    elapsed_s = stats.elapsed_s()
    return Figures(
        done=done,
        total=stats.pairs_total,
        counts=counts,
        requests=stats.requests,
        rate_per_s=recent_rate_per_s(stats, elapsed_s),
        quota_per_s=quota_per_s,
        pace_per_s=pace.rate_per_s if pace else None,
        paused_s=max(0.0, pace.paused_until - loop_time) if pace else 0.0,
        throttles=stats.throttles,
        retries=stats.retries,
        elapsed_s=elapsed_s,
        eta_s=eta_s(done, stats.pairs_total, stats.requests_planned, elapsed_s, quota_per_s),
        quota_period_s=quota_period_s,
    )


def eta_s(
    done: int, total: int, requests_planned: int, elapsed_s: float, quota_per_s: float
) -> float | None:
    """Seconds left: at the pace so far, but never less than the quota allows.

    Before the first answer the quota is the only guide: the planned requests left, sent at
    the quota. Throttles and retries make a run slower than that, never faster.
    """
    if total and done >= total:
        return 0.0
    left = total - done
    at_quota = (
        left / total * requests_planned / quota_per_s
        if total and requests_planned and quota_per_s > 0
        else None
    )
    so_far = left / (done / elapsed_s) if done > 0 and elapsed_s > 0 else None
    known = [e for e in (at_quota, so_far) if e is not None]
    return max(known) if known else None


def clock(seconds: float | None) -> str:
    """H:MM:SS, or `-` when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(fig: Figures) -> RenderableType:
    """Two lines: how far and how long; how fast and how it is going."""
    share = fig.done / fig.total if fig.total else 1.0
    top = Table.grid(padding=(0, 1))
    top.add_column(width=40)
    top.add_column()
    top.add_row(
        ProgressBar(total=max(fig.total, 1), completed=min(fig.done, max(fig.total, 1))),
        Text(
            f"{fig.done:,}/{fig.total:,} pairs {100 * share:.0f}% · "
            f"elapsed {clock(fig.elapsed_s)} · ETA {clock(fig.eta_s)}"
        ),
    )
    line = Text()
    # In the quota's own unit: a "20/minute" quota is 20/min, not 0.3/s.
    per, unit = (60.0, "min") if fig.quota_period_s >= 60 else (1.0, "s")
    line.append(f"{fig.rate_per_s * per:.1f} req/{unit}", style="bold")
    line.append(f" of {fig.quota_per_s * per:.1f}/{unit} quota")
    if fig.paused_s > 0:
        line.append(f" (paused {fig.paused_s:.1f} s)", style="yellow")
    elif fig.pace_per_s is not None and fig.pace_per_s < 0.95 * fig.quota_per_s:
        line.append(f" (pace {fig.pace_per_s * per:.1f}/{unit})", style="yellow")
    line.append(" · ")
    styles = {"delinked": "green", "not_linked": "", "failed": "red", "retryable": "yellow"}
    # The rare status shows only once it occurs: the line stays short.
    shown = [(s, n) for s, n in fig.counts.items() if n or s != Status.DELINKED_UNCONFIRMED]
    for i, (status, n) in enumerate(shown):
        line.append(("  " if i else "") + f"{status} ")
        line.append(f"{n:,}", style=styles.get(status, ""))
    line.append(f" · throttled {fig.throttles:,} · retries {fig.retries:,}")
    return Group(top, line)


def log_fields(fig: Figures) -> dict[str, object]:
    return {
        "done": fig.done,
        "total": fig.total,
        "counts": fig.counts,
        "requests": fig.requests,
        "rate_per_s": round(fig.rate_per_s, 2),
        "quota_per_s": round(fig.quota_per_s, 2),
        "pace_per_s": round(fig.pace_per_s, 2) if fig.pace_per_s is not None else None,
        "throttled": fig.throttles,
        "retries": fig.retries,
        "elapsed_s": round(fig.elapsed_s, 1),
        "eta_s": round(fig.eta_s, 1) if fig.eta_s is not None else None,
    }


class Progress:
    """What `execute()` calls while it sends: `async with progress.live(journal, stats, pace):`."""

    def __init__(
        self,
        mode: Mode,
        *,
        quota_per_s: float,
        every_s: float = 10.0,
        refresh_per_s: float = 4.0,
        console: Console | None = None,
        quota_period_s: float = 1.0,
    ) -> None:
        self.mode = mode
        self.quota_per_s = quota_per_s
        self.quota_period_s = quota_period_s
        self.every_s = every_s
        self.refresh_s = 1.0 / refresh_per_s
        self.console = console or Console(stderr=True)

    @classmethod
    def choose(
        cls,
        *,
        quiet: bool,
        quota_per_s: float,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        quota_period_s: float = 1.0,
    ) -> Progress:
        """A display on a terminal, log lines elsewhere, nothing at all when quiet."""
        stream = stream or sys.stderr
        tty = stream.isatty()
        mode: Mode = "off" if quiet else "bar" if tty else "log"
        console = Console(file=stream, force_terminal=tty or None)
        return cls(
            mode,
            quota_per_s=quota_per_s,
            every_s=every_s,
            console=console,
            quota_period_s=quota_period_s,
        )

    @contextlib.asynccontextmanager
    async def live(
        self,
        journal: Journal,
        stats: RunStats,
        pace: Callable[[], PaceState | None] = lambda: None,
    ) -> AsyncIterator[None]:
        if self.mode == "off":
            yield
            return
        loop = asyncio.get_running_loop()

        def figures() -> Figures:
            return take_figures(
                journal, stats, self.quota_per_s, pace(), loop.time(), self.quota_period_s
            )

        if self.mode == "log":
            task = asyncio.create_task(self._log_every(figures))
            try:
                yield
            finally:
                await _cancel(task)
            return

        with (
            Live(
                render(figures()),
                console=self.console,
                auto_refresh=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as display,
            logs.echo_through(lambda line: display.console.print(Text.from_ansi(line))),
        ):
            task = asyncio.create_task(self._redraw(display, figures))
            try:
                yield
            finally:
                await _cancel(task)
                display.update(render(figures()), refresh=True)

    async def _redraw(self, display: Live, figures: Callable[[], Figures]) -> None:
        since_log_s = 0.0
        while True:
            await asyncio.sleep(self.refresh_s)
            fig = figures()
            display.update(render(fig), refresh=True)
            since_log_s += self.refresh_s
            if since_log_s >= self.every_s:
                since_log_s = 0.0
                # The terminal shows it; the run log keeps the history (debug: not echoed).
                log.debug("run.progress", **log_fields(fig))

    async def _log_every(self, figures: Callable[[], Figures]) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            log.info("run.progress", **log_fields(figures()))


async def _cancel(task: asyncio.Task[None]) -> None:
    """Stop a display task and wait for it: no task is left unawaited."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
