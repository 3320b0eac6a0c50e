"""report.html: written by every run (not by validate), self-contained, escaped, and it renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batcher.present.report import render_report
from batcher.results.summary import RunSummary, from_json
from tests.conftest import Sim, clean_profile, only_run_dir, run_cli, write_job, write_pairs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def summary_of(**overrides: Any) -> RunSummary:
    base: dict[str, Any] = {
        "job": "demo",
        "run_id": "20260101T000000Z-abcd",
        "command": "run",
        "input": {"rows": 10},
        "counts": {"delinked": 7, "failed": 3},
        "codes": [{"status": "failed", "code": 8015, "message": "not found", "rows": 3}],
        "timeline": [{"second": s, "requests": 10 + s, "throttled": s % 2} for s in range(5)],
        "latency_ms": {"p50": 12.0, "p90": 30.5, "p99": 41.0, "max": 50.0},
        "quota_requests_per_second": 20.0,
        "settings": {"name": "demo", "api": {"rate": "20/second", "password": "hunter2"}},
        "exit_code": 1,
    }
    return from_json(RunSummary, {**base, **overrides})


def test_values_from_data_are_escaped() -> None:
    page = render_report(
        summary_of(
            job="<script>alert(1)</script>",
            codes=[{"status": "failed", "code": 1, "message": "<img src=x onerror=y>", "rows": 1}],
        )
    )
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "<img" not in page


def test_page_is_self_contained_and_shows_no_secret_settings() -> None:
    page = render_report(summary_of())
    assert not re.search(r"<script[^>]*\ssrc=|<link\b|<img\b|@import|url\(", page)
    # The only URL is the SVG namespace, which a browser never fetches.
    assert re.findall(r"https?://[^\s\"'<]+", page) == ["http://www.w3.org/2000/svg"]
    assert "hunter2" not in page and "api.rate" in page
    assert 'id="chart"' in page and page.count('class="requests"') == 5
    for part in ("p50", "p99", "8015", "not found", "delinked", "70.0%"):
        assert part in page


def test_every_run_writes_a_report_and_validate_does_not(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(30), ["partner-01", "partner-02"])
    job = write_job(tmp_path, sim.base_url)

    assert run_cli("validate", str(job)).returncode == 0
    validated = only_run_dir(tmp_path / "out")
    assert not (validated / "report.html").exists()
    result = run_cli("run", str(job))
    assert result.returncode == 0, result.stderr
    page = (only_run_dir(tmp_path / "out") / "report.html").read_text()
    assert "e2e" in page and 'id="chart"' in page and "60" in page


# --- a real browser ------------------------------------------------------------------------


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its own profile folder (two at once need two)."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1200,1600",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.long
@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)
def test_demo_report_renders_in_headless_chromium(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile(faults={"throttle": 0.05}))
    write_pairs(tmp_path / "pairs.csv", range(120), ["partner-01", "partner-02", "partner-03"])
    job = write_job(tmp_path, sim.base_url, api={"rate": "200/second", "customers_per_request": 2})
    assert run_cli("run", str(job)).returncode in (0, 1)
    report = only_run_dir(tmp_path / "out") / "report.html"

    # The chart's laid-out size, measured by the browser itself on a copy of the page.
    probe = tmp_path / "probe.html"
    probe.write_text(
        report.read_text().replace(
            "</body>",
            "<script>const r = document.getElementById('chart').getBoundingClientRect();"
            "document.body.setAttribute('data-chart', r.width + 'x' + r.height);</script></body>",
        )
    )
    shot = tmp_path / "report.png"
    with ThreadPoolExecutor(2) as pool:
        shooting = pool.submit(chromium, tmp_path / "shot", f"--screenshot={shot}", report.as_uri())
        dumping = pool.submit(chromium, tmp_path / "dom", "--dump-dom", probe.as_uri())
    assert shot.exists(), shooting.result().stderr
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 20, "the screenshot is (nearly) blank"

    dom = dumping.result().stdout
    found = re.search(r'data-chart="([0-9.]+)x([0-9.]+)"', dom)
    assert found, dom[:500]
    assert float(found.group(1)) > 100 and float(found.group(2)) > 100
