"""The end-of-run summary: one screen an operator can read at a glance."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from batcher.present.logs import mask_text
from batcher.present.progress import clock
from batcher.results.outcomes import STATUSES
from batcher.results.summary import RunSummary
from batcher.runs.rundir import RunDir

if TYPE_CHECKING:
    from batcher.runs.preflight import PlanPreview


def next_step(summary: RunSummary, run_dir: Path) -> str | None:
    """The exact command to run next when something is left to do."""
    counts = summary.counts
    if summary.stopped:
        return f"batcher resume {shlex.quote(str(run_dir))}"
    if counts.get("retryable") or counts.get("failed"):
        flag = " --all" if counts.get("failed") and not counts.get("retryable") else ""
        return f"batcher retry {shlex.quote(str(run_dir))}{flag}"
    return None


def org_text(org: dict[str, Any] | None) -> str | None:
    """Where a run acted, in one line: "org 51234 · till store.server (from the token)"."""
    if not org:
        return None
    expected = org.get("expected_org_id")
    if org.get("org_id") is None:
        if expected is None:
            return None
        return f"org not reported by the API (expected org {expected})"
    text = f"org {org['org_id']}"
    if org.get("till"):
        text += f" · till {org['till']}"
    if org.get("seen_in"):
        text += f" (from the {org['seen_in']})"
    if expected is not None:
        text += " · as expected" if org["org_id"] == expected else f" · expected org {expected}"
    return text


def print_plan_preview(preview: PlanPreview, console: Console) -> None:
    """What a run is about to do, shown before the confirmation question."""
    org = (
        f"org {preview.expect_org_id} expected (checked before anything else is sent)"
        if preview.expect_org_id is not None
        else "org not checked (set api.expect_org_id); the API names it in its first answer"
    )
    console.print(Text(f"{preview.job}: about to delink, at {preview.base_url} ({preview.auth})"))
    console.print(
        Text(
            f"  {preview.pairs:,} pairs · {preview.customers:,} customers · "
            f"{preview.requests:,} requests"
        )
    )
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("  program")
    table.add_column("pairs", justify="right")
    for program, n in preview.programs:
        table.add_row(Text("  " + program), f"{n:,}")
    if preview.more_programs:
        table.add_row(Text(f"  ... and {preview.more_programs:,} more programs"), "")
    console.print(table)
    console.print(Text(f"  {org}"))
    console.print(
        Text(
            f"  quota {preview.quota}: at least {clock(preview.expected_send_s)} (h:mm:ss) to send"
        )
    )


def quota_text(summary: RunSummary) -> str:
    """The pace against the quota, in the quota's own unit (per second or per minute).

    The share is of the busiest window of the quota's period, which is what the API counts;
    an average rate is shown only once the run sent for at least one period (over 20 ms,
    three requests would read as "150 per second").
    """
    quota_per_s = summary.quota_requests_per_second
    period_s = summary.quota_period_seconds or 1.0
    if not quota_per_s:
        return "no quota"
    unit = "minute" if period_s >= 60 else "second"
    quota = quota_per_s * period_s
    parts = [f"quota {quota:,.4g}/{unit}"]
    busiest = summary.quota_use.get("busiest_window_requests")
    if busiest is not None:
        parts.append(f"busiest {unit} {busiest:,} requests ({100 * busiest / quota:.0f}%)")
    if summary.send_seconds >= period_s:
        average = summary.achieved_requests_per_second * period_s
        parts.append(f"average {average:,.1f}/{unit}")
    return " · ".join(parts)


def print_run_summary(summary: RunSummary, run_dir: Path, console: Console) -> None:
    rows = summary.input.rows
    counts = summary.counts
    # Job names, API messages and paths are data: rendered as Text so `[` is never markup.
    table = Table(title=Text(f"{summary.job} · run {summary.run_id}"), title_justify="left")
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    for status in STATUSES:
        n = counts.get(status, 0)
        share = f"{100 * n / rows:.1f}%" if rows else "-"
        table.add_row(status, f"{n:,}", share)
    table.add_row("total", f"{sum(counts.values()):,}", "100%" if rows else "-", style="bold")
    console.print(table)

    codes = summary.codes
    if codes:
        ct = Table(title="top API codes", title_justify="left")
        ct.add_column("code", justify="right")
        ct.add_column("message")
        ct.add_column("status")
        ct.add_column("rows", justify="right")
        for c in codes[:8]:
            ct.add_row(
                str(c["code"]),
                Text(mask_text(str(c["message"] or ""))),
                Text(str(c["status"])),
                f"{c['rows']:,}",
            )
        console.print(ct)

    console.print(
        f"requests {summary.requests_sent:,} · throttled {summary.throttled:,}"
        f" · retries {summary.retries:,} · splits {summary.splits:,}"
        f" · {quota_text(summary)} · elapsed {summary.elapsed_seconds:.1f} s"
    )
    where = org_text(summary.org)
    if where:
        console.print(Text(where))
    unmatched = summary.unmatched_answers
    if unmatched:
        console.print(
            Text(
                f"{unmatched:,} customers in answers matched no customer sent: their requests' "
                "unanswered rows are retryable (see their note)"
            )
        )
    for warning in summary.warnings:
        console.print(Text(f"warning: {warning}"))
    if summary.abort:
        console.print(f"[bold red]Stopped:[/] {escape(summary.abort)}")
    elif summary.stopped:
        console.print(f"[bold yellow]Stopped:[/] {escape(summary.stopped)}")
    console.print(Text(f"files: {run_dir}"))
    names = [Path(p).name for p in summary.files.values() if p]
    report = RunDir(run_dir).report_path
    if report.exists():
        names.append(report.name)
    if names:
        console.print(Text("  " + ", ".join(names)))
    step = next_step(summary, run_dir)
    if step:
        console.print(f"next: [bold]{escape(step)}[/]")
    console.print(f"exit code {summary.exit_code}")
