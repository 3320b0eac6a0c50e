"""`report.html`: one self-contained page per run for the people who asked for the delink.

Nothing is fetched when the page is viewed: the style is inline and the chart is an SVG drawn here.
Every value that comes from data (job names, API messages, paths) is HTML-escaped, and settings
pass the same secret-key scrub as the logs.
"""

from __future__ import annotations

import copy
import html
from pathlib import Path
from typing import Any

from batcher.atomic import write_atomic
from batcher.present import logs
from batcher.present.console import org_text, quota_text
from batcher.results.outcomes import STATUSES
from batcher.results.summary import RunSummary

CHART_W, CHART_H = 1000, 260
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 16, 40

STATUS_COLOURS = {
    "delinked": "#2e7d32",
    "delinked_unconfirmed": "#81c784",
    "not_linked": "#607d8b",
    "failed": "#c62828",
    "retryable": "#ef6c00",
    "rejected": "#6a1b9a",
    "duplicate": "#9e9e9e",
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 24px auto; max-width: 1060px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #666; } .bad { color: #c62828; } .warn { color: #ef6c00; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: left;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.card b { display: block; font-size: 20px; }
.share { display: inline-block; height: 10px; border-radius: 2px; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value: Any, digits: int = 0) -> str:
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return esc(value)


def chart_svg(timeline: list[dict[str, Any]], quota_per_s: float) -> str:
    """Requests/s (bars) and throttled answers/s (red bars) per second, with the quota line."""
    seconds = [int(p.get("second", 0)) for p in timeline]
    span = (max(seconds) + 1) if seconds else 1
    top = max([int(p.get("requests", 0)) for p in timeline] + [quota_per_s, 1.0])
    top *= 1.1
    plot_w = CHART_W - PAD_L - PAD_R
    plot_h = CHART_H - PAD_T - PAD_B
    bar_w = plot_w / span

    def y(v: float) -> float:
        return PAD_T + plot_h - plot_h * v / top

    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}"'
        f' viewBox="0 0 {CHART_W} {CHART_H}" role="img"'
        ' aria-label="requests per second and throttled answers over time">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="#fafafa"'
        ' stroke="#ddd"/>',
    ]
    for i in range(5):  # horizontal grid with labels
        v = top * i / 4
        parts.append(
            f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}"'
            ' stroke="#eee"/>'
            f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>'
        )
    for p in timeline:
        x = PAD_L + int(p.get("second", 0)) * bar_w
        req = int(p.get("requests", 0))
        thr = int(p.get("throttled", 0))
        w = max(bar_w * 0.8, 1.0)
        parts.append(
            f'<rect class="requests" x="{x:.1f}" y="{y(req):.1f}" width="{w:.1f}"'
            f' height="{y(0) - y(req):.1f}" fill="#1e88e5"><title>second {p.get("second")}:'
            f" {req} requests, {thr} throttled</title></rect>"
        )
        if thr:
            parts.append(
                f'<rect class="throttled" x="{x:.1f}" y="{y(thr):.1f}" width="{w:.1f}"'
                f' height="{y(0) - y(thr):.1f}" fill="#e53935"/>'
            )
    if quota_per_s:
        parts.append(
            f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y(quota_per_s):.1f}"'
            f' y2="{y(quota_per_s):.1f}" stroke="#333" stroke-dasharray="6 4"/>'
            f'<text x="{PAD_L + plot_w - 4}" y="{y(quota_per_s) - 4:.1f}" text-anchor="end">'
            f"quota {quota_per_s:.1f}/s</text>"
        )
    ticks = max(1, span // 10)
    for s in range(0, span, ticks):
        x = PAD_L + (s + 0.4) * bar_w
        parts.append(f'<text x="{x:.1f}" y="{PAD_T + plot_h + 14}" text-anchor="middle">{s}</text>')
    parts.append(
        f'<text x="{PAD_L + plot_w / 2:.1f}" y="{CHART_H - 6}" text-anchor="middle">'
        "seconds since the first request · blue: requests/s · red: throttled answers/s</text>"
        "</svg>"
    )
    return "".join(parts)


def _flatten(settings: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def render_report(summary: RunSummary) -> str:
    """The whole page as a string."""
    counts = summary.counts
    rows = summary.input.rows or sum(counts.values())
    quota = summary.quota_requests_per_second
    settings = copy.deepcopy(summary.settings)
    logs.scrub_secrets(settings)

    out: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>batcher · {esc(summary.job)} · {esc(summary.run_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{esc(summary.job)} <span class='muted'>run {esc(summary.run_id)}</span></h1>",
        f"<p class='muted'>{esc(summary.command)} · started"
        f" {esc(summary.started_at)} · finished {esc(summary.finished_at)}"
        + (f" · resumed from {esc(summary.parent)}" if summary.parent else "")
        + f" · exit code {esc(summary.exit_code)}</p>",
    ]
    where = org_text(summary.org)
    if where:
        out.append(f"<p id='org'><b>Where:</b> {esc(where)}</p>")
    if summary.abort:
        out.append(f"<p class='bad'><b>Stopped:</b> {esc(summary.abort)}</p>")
    elif summary.stopped:
        out.append(f"<p class='warn'><b>Stopped:</b> {esc(summary.stopped)}</p>")

    cards = [
        ("rows", _number(rows)),
        ("delinked", _number(counts.get("delinked", 0))),
        ("requests", _number(summary.requests_sent)),
        ("throttled", _number(summary.throttled)),
        ("retries", _number(summary.retries)),
        ("splits", _number(summary.splits)),
        ("pace vs quota", esc(quota_text(summary))),
        ("elapsed", f"{summary.elapsed_seconds:.1f} s"),
    ]
    out.append("<h2>Summary</h2><div class='cards'>")
    out += [f"<div class='card'><b>{v}</b>{esc(k)}</div>" for k, v in cards]
    out.append("</div>")

    out.append("<h2>Requests and throttles over time</h2>")
    out.append(chart_svg(list(summary.timeline), quota))

    out.append("<h2>Outcomes by status</h2><table><tr><th>status</th><th class='n'>rows</th>")
    out.append("<th class='n'>share</th><th></th></tr>")
    for status in STATUSES:
        n = int(counts.get(status, 0))
        share = n / rows if rows else 0.0
        colour = STATUS_COLOURS.get(status, "#999")
        out.append(
            f"<tr><td>{esc(status)}</td><td class='n'>{n:,}</td>"
            f"<td class='n'>{100 * share:.1f}%</td><td><span class='share' style='width:"
            f"{max(1, round(300 * share)) if n else 0}px;background:{colour}'></span></td></tr>"
        )
    out.append("</table>")

    codes = summary.codes
    out.append("<h2>Outcomes by API code</h2>")
    if codes:
        out.append(
            "<table><tr><th class='n'>code</th><th>message</th><th>status</th>"
            "<th class='n'>rows</th></tr>"
        )
        for c in codes:
            out.append(
                f"<tr><td class='n'>{esc(c.get('code'))}</td>"
                f"<td>{esc(logs.mask_text(str(c.get('message') or '')))}</td>"
                f"<td>{esc(c.get('status'))}</td><td class='n'>{_number(c.get('rows'))}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append("<p class='muted'>No answers from the API.</p>")
    if summary.reasons:
        out.append("<h2>Rejected rows by reason</h2><table>")
        for reason, n in summary.reasons.items():
            out.append(f"<tr><td>{esc(reason)}</td><td class='n'>{_number(n)}</td></tr>")
        out.append("</table>")

    latency = summary.latency_ms
    out.append("<h2>Latency (ms)</h2>")
    if latency:
        out.append("<table><tr>" + "".join(f"<th class='n'>{esc(k)}</th>" for k in latency))
        out.append("</tr><tr>")
        out.append("".join(f"<td class='n'>{_number(v, 1)}</td>" for v in latency.values()))
        out.append("</tr></table>")
    else:
        out.append("<p class='muted'>No requests were answered.</p>")

    by_status = summary.responses_by_status
    if by_status:
        out.append("<h2>HTTP answers</h2><table>")
        for status, n in by_status.items():
            out.append(f"<tr><td>HTTP {esc(status)}</td><td class='n'>{_number(n)}</td></tr>")
        out.append("</table>")

    out.append("<h2>Job settings</h2><table>")
    for key, value in _flatten(settings):
        out.append(f"<tr><td><code>{esc(key)}</code></td><td>{esc(value)}</td></tr>")
    out.append("</table>")

    files = summary.files
    if files:
        out.append("<h2>Files</h2><table>")
        for name, path in files.items():
            if path:
                out.append(f"<tr><td>{esc(name)}</td><td><code>{esc(path)}</code></td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def write_report(summary: RunSummary, path: Path) -> Path:
    """Write the run's report.html (owner-only, like everything in a run folder)."""
    write_atomic(path, render_report(summary))
    return path
