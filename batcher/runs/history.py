"""Past runs of a job, read back from their folders: `<output>/<job name>/<run id>/`.

A run folder with a summary.json finished; one without is unfinished (still running, or killed)
and is listed as such rather than hidden, because that is the one an operator must look at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batcher.errors import BatcherError
from batcher.results.outcomes import STATUSES
from batcher.results.summary import ValidateSummary
from batcher.runs.rundir import Manifest, RunDir

_RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]+$")  # see rundir.new_run_id


@dataclass(frozen=True, slots=True)
class PastRun:
    job: str
    run_id: str
    path: Path
    finished: bool
    command: str | None
    started_at: str | None
    duration_s: float | None
    counts: dict[str, int]
    exit_code: int | None
    parent: str | None


def _duration_s(started_at: str | None, finished_at: str | None) -> float | None:
    try:
        start = datetime.fromisoformat(str(started_at).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(finished_at).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (end - start).total_seconds()


def read_run(path: Path, job: str | None = None) -> PastRun | None:
    """One run folder as a PastRun; None when the folder is not a run (or is validate's)."""
    folder = RunDir(path)
    summary = folder.read_summary()
    try:
        manifest: Manifest | None = folder.read_manifest()
    except BatcherError:
        manifest = None
    if summary is None and manifest is None and not _RUN_ID_RE.match(path.name):
        return None
    if isinstance(summary, ValidateSummary):
        return None  # validate's folder: a plan, not a run
    if summary is not None:
        return PastRun(
            job=summary.job or job or path.parent.name,
            run_id=summary.run_id or path.name,
            path=path,
            finished=True,
            command=summary.command,
            started_at=summary.started_at or (manifest.created_at if manifest else None),
            duration_s=summary.elapsed_seconds
            or _duration_s(summary.started_at, summary.finished_at),
            counts={s: int(summary.counts.get(s, 0)) for s in STATUSES},
            exit_code=summary.exit_code,
            parent=summary.parent or (manifest.parent if manifest else None),
        )
    return PastRun(
        job=(manifest.job if manifest else None) or job or path.parent.name,
        run_id=(manifest.run_id if manifest else None) or path.name,
        path=path,
        finished=False,
        command=None,
        started_at=manifest.created_at if manifest else None,
        duration_s=None,
        counts={s: 0 for s in STATUSES},
        exit_code=None,
        parent=manifest.parent if manifest else None,
    )


def list_runs(job_dir: Path) -> list[PastRun]:
    """The runs under one job's folder, newest first (run ids sort by start time)."""
    if not job_dir.is_dir():
        return []
    runs = [read_run(p, job_dir.name) for p in job_dir.iterdir() if p.is_dir()]
    return sorted((r for r in runs if r is not None), key=_newest_first, reverse=True)


def list_all_runs(output_dir: Path) -> list[PastRun]:
    """The runs of every job under an output folder, newest first."""
    if not output_dir.is_dir():
        return []
    runs = [r for d in output_dir.iterdir() if d.is_dir() for r in list_runs(d)]
    return sorted(runs, key=_newest_first, reverse=True)


def _newest_first(run: PastRun) -> tuple[str, str, str]:
    """Sort key: the id's second, then the start to the millisecond (ids are unique within a
    second but do not order two runs started in the same one), then the id."""
    return (run.run_id[:16], run.started_at or "", run.run_id)


def format_counts(counts: dict[str, int]) -> str:
    """`delinked 2,604 · failed 5`: the statuses that occurred, in status order."""
    return " · ".join(f"{s} {n:,}" for s, n in counts.items() if n) or "-"


# Below this width the table would have to cut run ids: each run is printed as two lines.
_TABLE_MIN_WIDTH = 140


def print_runs(runs: list[PastRun], console: Any) -> None:
    """Past runs (console: a rich Console): a table, or on a narrow console two lines per run,
    so that a run id (what `resume`, `retry` and `report` take) is never cut."""
    from rich.table import Table
    from rich.text import Text

    if console.width < _TABLE_MIN_WIDTH:
        _print_runs_narrow(runs, console)
        return
    table = Table(title_justify="left")
    for name in ("job", "run id", "command", "started", "duration", "counts", "exit", "parent"):
        table.add_column(
            name,
            justify="right" if name in ("duration", "exit") else "left",
            no_wrap=name in ("run id", "parent"),
        )
    for r in runs:
        table.add_row(
            Text(r.job),
            Text(r.run_id),
            Text(r.command or "-"),
            Text(r.started_at or "-"),
            Text(_duration_text(r)),
            Text(format_counts(r.counts)) if r.finished else Text("unfinished", style="yellow"),
            Text(str(r.exit_code) if r.exit_code is not None else "-"),
            Text(r.parent or "-"),
        )
    console.print(table)


def _duration_text(r: PastRun) -> str:
    return f"{r.duration_s:.1f} s" if r.duration_s is not None else "-"


def _print_runs_narrow(runs: list[PastRun], console: Any) -> None:
    from rich.text import Text

    jobs = {r.job for r in runs}
    for r in runs:
        head = Text()
        if len(jobs) > 1:
            head.append(f"{r.job} ")
        head.append(r.run_id, style="bold")
        head.append(f"  {r.command or '-'} · started {r.started_at or '-'} · {_duration_text(r)}")
        head.append(f" · exit {r.exit_code if r.exit_code is not None else '-'}")
        body = Text("  ")
        if r.finished:
            body.append(format_counts(r.counts))
        else:
            body.append("unfinished", style="yellow")
        if r.parent:
            body.append(f" · parent {r.parent}")
        console.print(head)
        console.print(body)
