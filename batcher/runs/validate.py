"""`batcher validate`: load, check and plan the input, write what was found, send nothing."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from batcher.input.source import Source, count_national_mobiles, exact_customer_key, load_source
from batcher.input.tables import REJECT_VERDICT, batcher_column, sink_table
from batcher.job import Job
from batcher.plan import Plan, PlanFigures, plan_figures
from batcher.present.progress import clock
from batcher.results.outcomes import utc_now
from batcher.results.summary import InputFacts, PlanSummary, ValidateSummary
from batcher.runs.rundir import RunDir, write_json
from batcher.runs.upload import check_output, upload_results_or_log

PREVIEW_REQUESTS = 5


def reject_columns(source: Source) -> list[pl.Expr]:
    """Columns of the rejects file: batcher_row (batcher_source_file for globs, batcher_sheet
    for workbooks), the input's columns under their own names, then batcher's verdict (see
    tables.BATCHER_COLUMNS)."""
    head = ["row", "source_file"] if source.is_glob else ["row"]
    if source.sheet is not None:
        head.append("sheet")
    return [
        *(pl.col(c).alias(batcher_column(c)) for c in head),
        *source.as_written(),
        *(pl.col(c).alias(batcher_column(c)) for c in REJECT_VERDICT),
    ]


def write_rejects(source: Source, folder: RunDir) -> Path | None:
    """Write rejected and duplicate rows (same format as the input); None when there are none."""
    counts = source.counts()
    if counts["rejected"] + counts["duplicate"] == 0:
        return None
    # Streamed from the parked chunks: an input of millions of bad rows is never held.
    return sink_table(
        source.not_valid().select(reject_columns(source)),
        folder.rejects_path(source.format),
        source.format,
        sheet=source.sheet,
        dialect=source.dialect,
    )


def write_plan_preview(
    plan: Plan,
    figures: PlanFigures,
    job: Job,
    folder: RunDir,
    count: int = PREVIEW_REQUESTS,
) -> Path:
    """The plan's size, the time it takes at the quota, and its first `count` request bodies
    exactly as they would be sent."""
    identifier = job.input.identifier
    bodies = [r.body(identifier) for r in itertools.islice(plan.iter_requests(identifier), count)]
    send_s = job.api.quota.seconds_for(figures.requests)
    path = folder.plan_preview_path
    write_json(
        path,
        {
            "pairs": figures.pairs,
            "customers": figures.customers,
            "requests_planned": figures.requests,
            "quota": str(job.api.quota),
            "expected_send_seconds": round(send_s, 1),
            "expected_send_time": clock(send_s),
            "first_requests": bodies,
        },
    )
    return path


def input_warnings(job: Job, source: Source) -> list[str]:
    """What in a valid input will likely go wrong at the API, one sentence each."""
    warnings = []
    if source.identifier == "mobile" and job.input.default_country_code is None:
        digits = job.input.national_mobile_digits
        national = count_national_mobiles(source, digits)
        if national:
            warnings.append(
                f"{national:,} mobile{'s look' if national > 1 else ' looks'} national "
                f"({digits} digits); the API will complete them with the org's country code: "
                "set input.default_country_code to send them in full"
            )
    return warnings


def input_file_facts(source: Source) -> list[dict[str, Any]]:
    """The input files as summary.json and manifest.json list them."""
    return [f.to_json() for f in source.files]


def plan_summary(job: Job, run_id: str, source: Source, plan: PlanFigures) -> PlanSummary:
    """The validate part of summary.json (a run's summary starts from it)."""
    counted = PlanSummary(
        job=job.name,
        run_id=run_id,
        settings=job.settings_for_display(),
        input=InputFacts(
            format=source.format,
            files=input_file_facts(source),
            rows=source.row_count,
            blank_lines_skipped=source.blank_lines,
            # As named in the input file (outcomes.parquet renames a few: see the notes).
            columns=[source.original_names.get(c, c) for c in source.columns],
            notes=source.notes,
        ),
        counts=source.counts(),
        reasons=source.reason_counts(),
        warnings=input_warnings(job, source),
    )
    return with_plan(counted, job, plan)


def with_plan(summary: PlanSummary, job: Job, plan: PlanFigures) -> PlanSummary:
    """`summary` with the plan's figures (a run counts its rows before it plans their pairs)."""
    return dataclasses.replace(
        summary,
        pairs=plan.pairs,
        customers=plan.customers,
        requests_planned=plan.requests,
        expected_send_seconds=round(job.api.quota.seconds_for(plan.requests), 1),
    )


def print_summary(summary: ValidateSummary, run_dir: Path, console: Console | None = None) -> None:
    """A short human summary: what the file holds and what would be sent."""
    console = console or Console(highlight=False, soft_wrap=True)
    inp = summary.input
    files = inp.files
    what = files[0]["path"] if len(files) == 1 else f"{len(files)} files"
    console.print(f"[bold]{summary.job}[/bold]: {inp.rows:,} rows read from {what}")
    for note in inp.notes:
        console.print(f"  note: {note}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("rows")
    table.add_column("count", justify="right")
    counts = summary.counts
    table.add_row("valid", f"{counts['valid']:,}")
    table.add_row("rejected", f"{counts['rejected']:,}")
    for reason, n in summary.reasons.items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("duplicate", f"{counts['duplicate']:,}")
    console.print(table)
    for warning in summary.warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}")
    api = summary.settings["api"]
    console.print(
        f"Plan: {summary.customers:,} customers in {summary.requests_planned:,} requests "
        f"(at most {api['customers_per_request']} customers each); "
        f"at the quota of {api['rate']} sending takes at least "
        f"{clock(summary.expected_send_seconds)} (h:mm:ss). Nothing was sent."
    )
    console.print(f"Written to {run_dir}")


def validate(job: Job) -> tuple[RunDir, ValidateSummary, int]:
    """Load, check and plan the job's input; write rejects, plan preview and summary; upload
    them to a bucket output dir. The exit code: 1 when that upload failed."""
    started_at = utc_now()
    # Load first: an unusable input raises InputError before any run folder exists.
    check_output(job)  # an output bucket that cannot be reached: refused before any work
    source = load_source(job, keep_rows=False)  # rejects, counts and pairs: nothing else
    # Nothing is sent, so the full plan is not built: its figures are counted, and the preview
    # is the plan of the first customers (tests/test_plan.py checks both against build_plan).
    figures, head = plan_figures(
        source.pairs(),
        job.api.customers_per_request,
        job.api.programs_per_customer,
        preview_requests=PREVIEW_REQUESTS,
        customer_key=exact_customer_key(source.identifier),
    )
    folder = RunDir.create(job)
    rejects = write_rejects(source, folder)
    counted = plan_summary(job, folder.run_id, source, figures)
    # A big input's scratch rows are dropped before the files below are fsynced: deleted, their
    # pages are never written (they made the preview's fsync wait 1.4 s at 10M rows).
    source.release()
    preview = write_plan_preview(head, figures, job, folder)
    summary = ValidateSummary(
        **counted.plan_fields(),
        started_at=started_at,
        finished_at=utc_now(),
        outputs={"rejects": rejects.name if rejects else None, "plan_preview": preview.name},
    )
    folder.write_summary(summary)
    # With a bucket output dir, the data team finds the rejects there too.
    return folder, summary, 0 if upload_results_or_log(job, folder.path) else 1
