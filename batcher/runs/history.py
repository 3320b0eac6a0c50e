"""Past runs of a job, read back from their folders: `<output>/<job name>/<run id>/`.

A run folder with a summary.json finished; one without is unfinished (still running, or killed)
and is listed as such rather than hidden, because that is the one an operator must look at.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batcher.results.outcomes import STATUSES

SUMMARY_NAME = "summary.json"
MANIFEST_NAME = "manifest.json"
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _duration_s(started_at: Any, finished_at: Any) -> float | None:
    try:
        start = datetime.fromisoformat(str(started_at).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(finished_at).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (end - start).total_seconds()


def read_run(path: Path, job: str | None = None) -> PastRun | None:
    """One run folder as a PastRun; None when the folder is not a run (or is validate's)."""
    summary = _read_json(path / SUMMARY_NAME)
    manifest = _read_json(path / MANIFEST_NAME) or {}
    if summary is None and not manifest and not _RUN_ID_RE.match(path.name):
        return None
    if summary is not None and summary.get("command") not in (None, "run", "resume", "retry"):
        return None  # validate's folder: a plan, not a run
    info = summary or manifest
    counts = (summary or {}).get("counts") or {}
    return PastRun(
        job=str(info.get("job") or job or path.parent.name),
        run_id=str(info.get("run_id") or path.name),
        path=path,
        finished=summary is not None,
        command=(summary or {}).get("command"),
        started_at=(summary or {}).get("started_at") or manifest.get("created_at"),
        duration_s=(
            summary.get("elapsed_seconds")
            if summary and summary.get("elapsed_seconds") is not None
            else _duration_s(summary.get("started_at"), summary.get("finished_at"))
            if summary
            else None
        ),
        counts={s: int(counts.get(s, 0)) for s in STATUSES},
        exit_code=(summary or {}).get("exit_code"),
        parent=(summary or {}).get("parent") or manifest.get("parent"),
    )


def list_runs(job_dir: Path) -> list[PastRun]:
    """The runs under one job's folder, newest first (run ids sort by start time)."""
    if not job_dir.is_dir():
        return []
    runs = [read_run(p, job_dir.name) for p in job_dir.iterdir() if p.is_dir()]
    return sorted((r for r in runs if r is not None), key=lambda r: r.run_id, reverse=True)


def list_all_runs(output_dir: Path) -> list[PastRun]:
    """The runs of every job under an output folder, newest first."""
    if not output_dir.is_dir():
        return []
    runs = [r for d in output_dir.iterdir() if d.is_dir() for r in list_runs(d)]
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def format_counts(counts: dict[str, int]) -> str:
    """`delinked 2,604 · failed 5`: the statuses that occurred, in status order."""
    return " · ".join(f"{s} {n:,}" for s, n in counts.items() if n) or "-"


def print_runs(runs: list[PastRun], console: Any) -> None:
    """A table of past runs (console: a rich Console)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title_justify="left")
    for name in ("job", "run id", "command", "started", "duration", "counts", "exit", "parent"):
        table.add_column(name, justify="right" if name in ("duration", "exit") else "left")
    for r in runs:
        table.add_row(
            Text(r.job),
            Text(r.run_id),
            Text(r.command or "-"),
            Text(r.started_at or "-"),
            Text(f"{r.duration_s:.1f} s" if r.duration_s is not None else "-"),
            Text(format_counts(r.counts)) if r.finished else Text("unfinished", style="yellow"),
            Text(str(r.exit_code) if r.exit_code is not None else "-"),
            Text(r.parent or "-"),
        )
    console.print(table)
