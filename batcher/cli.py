"""The command line: parse arguments, configure logging, call the library, map errors to exit codes.

Exit codes (for schedulers): 0 all rows delinked / not linked / duplicate; 1 finished with some
rows failed, retryable or rejected; 2 the job, input or credentials are unusable (nothing sent);
3 the run stopped early (authentication refused, interrupt).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from batcher.errors import BatcherError

if TYPE_CHECKING:
    from batcher.job import Quota
    from batcher.results.summary import RunResult
    from batcher.runs.preflight import PlanPreview

P = ParamSpec("P")
R = TypeVar("R")


def _friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a BatcherError into `Error: ...` and its exit code; real bugs keep their traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BatcherError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            # The send loop handles its own signals; this is Ctrl-C while loading or writing.
            click.echo(
                "Interrupted. If a run had started, `batcher runs JOB` shows it and "
                "`batcher resume RUN_DIR` carries it on.",
                err=True,
            )
            sys.exit(3)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Mass-delink loyalty customers from Capillary partner programs."""
    # Run folders hold customer data: files and folders we create are owner-only.
    os.umask(0o077)


_input_option = click.option(
    "--input",
    "input_path",
    metavar="PATH",
    help="Input file or glob, or an s3://, gs://, az:// or https:// URL (overrides input.path).",
)
_output_option = click.option(
    "--output",
    "output_dir",
    metavar="DIR",
    help="Output folder, or a bucket URL to upload the results to (overrides output.dir).",
)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_input_option
@_output_option
@_friendly_errors
def validate(job_file: str, input_path: str | None, output_dir: str | None) -> None:
    """Load, check and plan JOB_FILE's input; send nothing."""
    _validate(job_file, input_path, output_dir)


def _validate(job: str, input_path: str | None, output_dir: str | None) -> None:
    import batcher
    from batcher.runs.validate import print_summary

    result = batcher.validate_job(job, input=input_path, output=output_dir)
    print_summary(result.summary, result.run_dir)
    sys.exit(result.exit_code)


def _run_options(fn: Callable[P, R]) -> Callable[P, R]:
    """Options every command that sends shares: how it shows progress and logs."""
    fn = click.option(
        "--log-format",
        type=click.Choice(["auto", "console", "json"]),
        default="auto",
        show_default=True,
        help="Log lines on stderr: console for humans, json for aggregators "
        "(auto: json unless a tty).",
    )(fn)
    fn = click.option(
        "--progress-every",
        "progress_every_s",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="Off a terminal: log a run.progress line this often (on a terminal: a live bar).",
    )(fn)
    fn = click.option(
        "--wait",
        "wait_for_lock",
        is_flag=True,
        help="If another run of this job or with this API key is live, wait for it to end "
        "instead of failing (exit 2).",
    )(fn)
    return click.option("--quiet", is_flag=True, help="Print only the final summary.")(fn)


def _send(
    start: Callable[..., RunResult | None],
    *,
    quota: Quota,
    quiet: bool,
    progress_every_s: float,
    log_format: str,
) -> None:
    """Call the API's `start` with the display and logging options, print the summary, exit."""
    from rich.console import Console

    from batcher.present.console import print_run_summary
    from batcher.present.progress import Progress

    progress = Progress.choose(
        quiet=quiet,
        quota_per_s=quota.rate_per_s,
        quota_period_s=quota.period_s,
        every_s=progress_every_s,
    )
    result = start(
        progress=progress,
        progress_every_s=progress_every_s,
        log_format=log_format,
        log_level="warning" if quiet else "info",
    )
    if result is None:
        click.echo("Nothing to do: no rows with those statuses.")
        sys.exit(0)
    print_run_summary(result.summary, result.run_dir, Console())
    sys.exit(result.exit_code)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_input_option
@_output_option
@click.option("--base-url", metavar="URL", help="API host (overrides api.base_url).")
@click.option("--dry-run", is_flag=True, help="Validate and plan only (same as `validate`).")
@click.option(
    "--resume",
    "resume_newest",
    is_flag=True,
    help="Resume the newest unfinished run of this job instead of starting anew.",
)
@click.option("--force", is_flag=True, help="With --resume: resume even if the input changed.")
@click.option(
    "--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation on a terminal."
)
@click.option(
    "--max-pairs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Refuse (exit 2) a plan of more than N valid pairs (overrides safety.max_pairs).",
)
@_run_options
@_friendly_errors
def run(
    job_file: str,
    input_path: str | None,
    output_dir: str | None,
    base_url: str | None,
    dry_run: bool,
    resume_newest: bool,
    force: bool,
    assume_yes: bool,
    max_pairs: int | None,
    quiet: bool,
    wait_for_lock: bool,
    progress_every_s: float,
    log_format: str,
) -> None:
    """Delink every valid pair of JOB_FILE's input and write an outcome for every row.

    On a terminal it shows the plan and asks before sending (--yes skips the question);
    off a terminal (cron, Airflow) it never asks.
    """
    import batcher
    from batcher.job import load_job

    if dry_run:
        _validate(job_file, input_path, output_dir)
    job = load_job(job_file)
    # The embedded simulator is no org: nothing there is irreversible, so the demo never asks.
    embedded = job.api.is_simulator and base_url is None
    confirm = None if assume_yes or embedded or not sys.stdin.isatty() else _ask_before_sending
    _send(
        functools.partial(
            batcher.run_job,
            job,
            input=input_path,
            base_url=base_url,
            output=output_dir,
            resume=resume_newest,
            force=force,
            wait=wait_for_lock,
            max_pairs=max_pairs,
            confirm=None if resume_newest else confirm,
        ),
        quota=job.api.quota,
        quiet=quiet,
        progress_every_s=progress_every_s,
        log_format=log_format,
    )


def _ask_before_sending(preview: PlanPreview) -> bool:
    """Show the plan on the terminal and ask whether to send it (default: no)."""
    from rich.console import Console

    from batcher.present.console import print_plan_preview

    print_plan_preview(preview, Console(stderr=True, highlight=False))
    try:
        return click.confirm(
            f"Delink {preview.pairs:,} pairs with {preview.requests:,} requests? "
            "This cannot be undone",
            default=False,
            err=True,
        )
    except click.Abort:  # Ctrl-C or end of input at the question: the answer is no
        click.echo("", err=True)
        return False


def _quota_of_run(run_dir: Path) -> Quota:
    """The quota of the job a run folder belongs to, for the progress display."""
    from batcher.runs.lineage import job_of_run, read_manifest

    return job_of_run(run_dir.resolve(), read_manifest(run_dir.resolve())).api.quota


@main.command(name="resume")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Resume even if the input files changed.")
@_run_options
@_friendly_errors
def resume_command(
    run_dir: Path,
    force: bool,
    quiet: bool,
    wait_for_lock: bool,
    progress_every_s: float,
    log_format: str,
) -> None:
    """Carry on an interrupted run; pairs with a confirmed outcome are not sent again."""
    import batcher

    _send(
        functools.partial(batcher.resume_run, run_dir, force=force, wait=wait_for_lock),
        quota=_quota_of_run(run_dir),
        quiet=quiet,
        progress_every_s=progress_every_s,
        log_format=log_format,
    )


@main.command(name="retry")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--all",
    "include_failed",
    is_flag=True,
    help="Retry `failed` rows too, not only `retryable` ones.",
)
@_run_options
@_friendly_errors
def retry_command(
    run_dir: Path,
    include_failed: bool,
    quiet: bool,
    wait_for_lock: bool,
    progress_every_s: float,
    log_format: str,
) -> None:
    """A new run of RUN_DIR's job over its retryable (with --all, also failed) rows."""
    import batcher

    _send(
        functools.partial(
            batcher.retry_run, run_dir, include_failed=include_failed, wait=wait_for_lock
        ),
        quota=_quota_of_run(run_dir),
        quiet=quiet,
        progress_every_s=progress_every_s,
        log_format=log_format,
    )


@main.command(name="report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the merged outcomes here (.parquet, .csv or .xlsx).",
)
@_friendly_errors
def report_command(run_dir: Path, out_path: Path | None) -> None:
    """The latest status of every original row across a run and all its retries."""
    from rich.console import Console
    from rich.table import Table

    from batcher.runs.lineage import merged_report_lazy, report_counts, write_merged

    merged, used = merged_report_lazy(run_dir)
    counts = report_counts(merged)
    table = Table(
        title=f"final status of {sum(counts.values()):,} rows across runs {', '.join(used)}",
        title_justify="left",
    )
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, n in counts.items():
        table.add_row(status, f"{n:,}")
    Console().print(table)
    if out_path is not None:
        written = write_merged(merged, out_path.resolve())
        click.echo(f"merged outcomes: {written}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to bind (0: any).")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Simulator profile TOML (default: the built-in demo profile).",
)
@click.option(
    "--log-every-request",
    is_flag=True,
    help="A log line for every request (default: a few a second, and a summary each second).",
)
@_friendly_errors
def simulate(host: str, port: int, profile_path: str | None, log_every_request: bool) -> None:
    """Serve the Capillary simulator for rehearsals from another shell."""
    from batcher.simulator.serve import serve_forever

    serve_forever(
        host=host, port=port, profile_path=profile_path, log_every_request=log_every_request
    )


@main.command()
@click.argument("job", required=False)
@_output_option
@_friendly_errors
def runs(job: str | None, output_dir: str | None) -> None:
    """List past runs of JOB (a job file or a job name; all jobs if omitted), newest first."""
    from rich.console import Console

    from batcher.runs.history import list_all_runs, list_runs, print_runs

    if job is not None and (job.endswith(".toml") or Path(job).is_file()):
        from batcher.job import load_job
        from batcher.runs.rundir import job_output_dir

        loaded = load_job(job).with_overrides(output_dir=output_dir)
        found = list_runs(job_output_dir(loaded))
        where = job_output_dir(loaded)
    else:
        base = Path(output_dir or "output").resolve()
        where = base / job if job else base
        found = list_runs(where) if job else list_all_runs(base)
    if not found:
        raise BatcherError(
            f"No runs found under {where}.",
            hint="Pass the job file (its output.dir is used) or --output DIR.",
        )
    print_runs(found, Console())


def entry() -> None:
    """The `batcher` console script: this process is batcher's own, so it may use uvloop."""
    from batcher.eventloop import claim_process

    claim_process()
    main()


if __name__ == "__main__":
    entry()
