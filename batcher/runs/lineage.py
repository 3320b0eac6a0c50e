"""Runs after the first: resume an interrupted run, retry a run's failures, merge the answers.

A retry is a new run (a child) whose input is the parent's `retryable` (and with --all `failed`)
rows; `origin.parquet` in the child maps each of its rows to the row of the first run it came
from, so `report` can give one final answer per original input row.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import polars as pl
import structlog

from batcher.errors import BatcherError, InputError
from batcher.input import cloud
from batcher.input.files import Format, fingerprint_inputs
from batcher.input.source import dialect_of
from batcher.input.tables import sink_table, write_table
from batcher.job import Job, load_job
from batcher.results.journal import INTENTS_NAME, folded_path, unconfirmed_sends
from batcher.results.outcomes import ANSWER_COLUMNS, STATUSES, Status
from batcher.results.summary import RunResult
from batcher.runs.execute import execute
from batcher.runs.rundir import Manifest, RunDir, job_output_dir

log = structlog.get_logger("batcher.runs.lineage")


def read_manifest(run_dir: Path) -> Manifest:
    return RunDir(run_dir).read_manifest()


def job_of_run(run_dir: Path, manifest: Manifest) -> Job:
    """The job as it was when the run started, with the same input, output and API."""
    job = load_job(RunDir(run_dir).job_copy_path, as_path=Path(manifest.job_file))
    base_url = manifest.base_url
    job = job.with_overrides(
        input_path=manifest.input.pattern,
        output_dir=manifest.output_dir,
        base_url=base_url if base_url and base_url != job.api.base_url else None,
    )
    # The results go where the run's went: its bucket, from its local staging folder.
    return replace(job, output_url=manifest.output_url)


def _same_path(location: str) -> str:
    """A local path with `..` and symlinks resolved; an object's URL as it is."""
    return location if cloud.is_object_url(location) else os.path.realpath(location)


def _check_fingerprints(job: Job, manifest: Manifest) -> list[str]:
    """What changed in the input files since the run started (empty: nothing)."""
    # The same normalisation both ways (`..` folded, symlinks followed): only a real change of
    # content, or of which files there are, refuses a resume.
    before = {_same_path(f["path"]): f for f in manifest.input.files}
    now = {_same_path(f.path): f for f in fingerprint_inputs(job)}
    changes = [f"{p} is gone" for p in before if p not in now]
    changes += [f"{p} is new" for p in now if p not in before]
    for path, old in before.items():
        new = now.get(path)
        change = new.changes_since(old) if new is not None else None
        if change is not None:
            changes.append(change)
    return changes


def resume(
    run_dir: Path, *, force: bool = False, progress: Any = None, wait_for_lock: bool = False
) -> RunResult:
    """Carry on an interrupted run: confirmed pairs are not sent again."""
    run_dir = run_dir.resolve()
    manifest = read_manifest(run_dir)
    job = job_of_run(run_dir, manifest)
    changes = _check_fingerprints(job, manifest)
    if changes and not force:
        raise InputError(
            "The input changed since this run started: " + "; ".join(changes) + ".",
            hint=f"Resuming would mix two inputs. Start a new run, or pass --force to resume "
            f"anyway (answers are matched to rows by customer and program). Run: {run_dir}",
        )
    if changes:
        log.warning("run.resume_forced", changes=changes)
    return execute(job, run_dir=run_dir, progress=progress, wait_for_lock=wait_for_lock)


def newest_unfinished(job: Job) -> Path | None:
    """The newest run of `job` that did not finish (no summary, or stopped early)."""
    folder = job_output_dir(job)
    if not folder.is_dir():
        return None
    runs = [RunDir(p) for p in folder.iterdir() if p.is_dir() and RunDir(p).has_manifest()]
    for run in sorted(runs, key=_started, reverse=True):
        run_dir = run.path
        summary = run.read_run_summary()
        if summary is None or summary.stopped:
            return run_dir  # no (readable) summary: it never finished
        return None  # the newest run finished: nothing to resume
    return None


def _started(run: RunDir) -> tuple[str, str, str]:
    """Newest-first key: the id's second, then the manifest's millisecond, then the id.

    Run ids are precise to the second only, so two runs of a job started in one second (a
    scheduler's retry, a script calling the API twice) would otherwise sort at random.
    """
    try:
        created = run.read_manifest().created_at
    except BatcherError:
        created = ""
    return (run.run_id[:16], created, run.run_id)


def _root_rows(run_dir: Path, outcomes: pl.DataFrame) -> pl.DataFrame:
    """For each row of a run: the run id and row (and file) of the first run it came from."""
    origin = RunDir(run_dir).origin_path
    if origin.is_file():
        return pl.read_parquet(origin)
    file_col = (
        pl.col("source_file") if "source_file" in outcomes.columns else pl.lit(None, pl.String)
    )
    return outcomes.select(
        "row",
        pl.col("row").alias("root_row"),
        file_col.alias("root_source_file"),
        pl.lit(run_dir.name).alias("root_run"),
    )


def retry(
    parent_dir: Path,
    *,
    include_failed: bool = False,
    progress: Any = None,
    wait_for_lock: bool = False,
) -> RunResult | None:
    """A child run of `parent_dir` over its retryable (and with --all, failed) rows."""
    parent_dir = parent_dir.resolve()
    parent_run = RunDir(parent_dir)
    manifest = parent_run.read_manifest()
    outcomes_path = parent_run.outcomes_path
    if not outcomes_path.is_file():
        raise BatcherError(
            f"Run {parent_dir.name} has no outcomes yet: it never finished.",
            hint=f"Resume it first: batcher resume {parent_dir}",
        )
    job = job_of_run(parent_dir, manifest)
    outcomes = pl.read_parquet(outcomes_path)
    wanted = [Status.RETRYABLE.value] + ([Status.FAILED.value] if include_failed else [])
    picked = outcomes.filter(pl.col("status").is_in(wanted))
    if picked.height == 0:
        log.info("retry.nothing_to_do", parent=parent_dir.name, statuses=wanted)
        return None
    columns = manifest.input.columns
    # The child's input has the parent input's own column names (a user's `status` column is
    # `input_status` in outcomes.parquet), in the job's separator and encoding: the same job
    # reads it exactly as it read the parent's input.
    as_written = manifest.input.columns_as_written or columns
    fmt = cast(Format, manifest.input.format)
    roots = _root_rows(parent_dir, outcomes)
    picked = picked.join(roots, on="row", how="left", maintain_order="left")
    child_run = RunDir.create(job)
    run_dir = child_run.path
    try:
        input_path = child_run.retry_input_path(fmt)
        sheet = manifest.input.sheet
        write_table(
            picked.select(pl.col(c).alias(n) for c, n in zip(columns, as_written, strict=True)),
            input_path,
            fmt,
            sheet=sheet,
            dialect=dialect_of(job),
            for_people=False,
        )
        picked.select(
            pl.int_range(1, picked.height + 1, dtype=pl.Int64).alias("row"),
            "root_row",
            "root_source_file",
            "root_run",
        ).write_parquet(child_run.origin_path)
        child = job.with_overrides(input_path=str(input_path))
        if sheet is not None:  # the child's workbook has that one sheet, by name
            child = replace(child, input=replace(child.input, sheet=sheet))
        log.info("retry.started", parent=parent_dir.name, rows=picked.height, statuses=wanted)
        return execute(
            replace(child),
            run_dir=run_dir,
            parent=parent_dir.name,
            progress=progress,
            maybe_sent=unconfirmed_sends(parent_run.journal_path),
            wait_for_lock=wait_for_lock,
        )
    except BaseException:
        _discard_if_never_started(child_run)
        raise


def _discard_if_never_started(folder: RunDir) -> None:
    """A retry that failed before sending leaves no folder that `runs` would list."""
    journal = folder.journal_path
    sent = [journal, journal.with_name(INTENTS_NAME), folded_path(journal)]
    if any(p.is_file() and p.stat().st_size for p in sent):
        return  # something was sent: the folder is a run, to resume
    shutil.rmtree(folder.path, ignore_errors=True)


def _runs_of(job_dir: Path) -> dict[str, Manifest]:
    runs = {}
    for d in job_dir.iterdir():
        if d.is_dir() and RunDir(d).has_manifest():
            runs[d.name] = RunDir(d).read_manifest()
    return runs


def _with_answer_columns(outcomes: pl.LazyFrame) -> pl.LazyFrame:
    """Outcomes written before a column was added (api_identifier) get it, empty."""
    names = outcomes.collect_schema().names()
    missing = [c for c in ANSWER_COLUMNS if c not in names]
    return outcomes.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in missing)


def merged_report(run_dir: Path) -> tuple[pl.DataFrame, list[str]]:
    """The latest answer for every row of the first run of `run_dir`'s family, and the runs used."""
    merged, used = merged_report_lazy(run_dir)
    return merged.collect(), used


def merged_report_lazy(run_dir: Path) -> tuple[pl.LazyFrame, list[str]]:
    """`merged_report` as a query over the runs' outcome files, for counting and writing it
    without holding the family's outcomes in memory (the root's rows stream; each retry's,
    usually few, are joined on)."""
    run_dir = run_dir.resolve()
    runs = _runs_of(run_dir.parent)
    root = run_dir.name
    while root in runs and runs[root].parent in runs:
        root = str(runs[root].parent)
    family = [root]
    changed = True
    while changed:  # every run whose ancestry leads to the root
        changed = False
        for rid, m in runs.items():
            if rid not in family and m.parent in family:
                family.append(rid)
                changed = True
    # Later answers win: the root first, then its descendants by creation time (run ids start
    # with the second only, so two runs of one second need the manifest's milliseconds).
    family[1:] = sorted(family[1:], key=lambda rid: (runs[rid].created_at, rid))
    root_outcomes = RunDir(run_dir).sibling(root).outcomes_path
    if not root_outcomes.is_file():
        raise BatcherError(
            f"Run {root} has no outcomes yet: it never finished.",
            hint=f"Resume it first: batcher resume {run_dir.parent / root}",
        )
    merged = _with_answer_columns(pl.scan_parquet(root_outcomes)).with_columns(
        pl.lit(root).alias("final_run")
    )
    key_file = "source_file" in merged.collect_schema().names()
    used = [root]
    for rid in family[1:]:
        path = RunDir(run_dir).sibling(rid).outcomes_path
        if not path.is_file():
            continue
        child = _with_answer_columns(pl.scan_parquet(path))
        child_names = child.collect_schema().names()
        keys = ["row", *(["source_file"] if "source_file" in child_names else [])]
        roots = _root_rows(path.parent, child.select(keys).collect()).lazy()
        mapped = child.join(roots, on="row", how="inner").select(
            pl.col("root_row").alias("row"),
            *([pl.col("root_source_file").alias("source_file")] if key_file else []),
            *(pl.col(c).alias(f"{c}__new") for c in ANSWER_COLUMNS),
        )
        on = ["row", "source_file"] if key_file else ["row"]
        merged = merged.join(mapped, on=on, how="left", nulls_equal=True, maintain_order="left")
        has_new = pl.col("status__new").is_not_null()
        merged = merged.with_columns(
            *(
                pl.when(has_new).then(pl.col(f"{c}__new")).otherwise(pl.col(c)).alias(c)
                for c in ANSWER_COLUMNS
            ),
            pl.when(has_new).then(pl.lit(rid)).otherwise(pl.col("final_run")).alias("final_run"),
        ).drop([f"{c}__new" for c in ANSWER_COLUMNS])
        used.append(rid)
    return merged, used


def report_counts(merged: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    counted = merged.lazy().group_by("status").len().collect(engine="streaming")
    got = dict(counted.iter_rows())
    return {s: int(got.get(s, 0)) for s in STATUSES}


def write_merged(merged: pl.DataFrame | pl.LazyFrame, out: Path) -> Path:
    suffix = out.suffix.lower()
    fmt: Format = "csv" if suffix == ".csv" else "xlsx" if suffix == ".xlsx" else "parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(merged, pl.LazyFrame) and fmt != "xlsx":
        return sink_table(merged, out, fmt)  # streamed: a family of big runs is never held
    return write_table(merged, out, fmt, sheet="report")
