"""Progress: a live display on a terminal, run.progress log lines off one, nothing with --quiet."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from batcher.present.progress import Progress, eta_s, render, take_figures
from batcher.send.stats import RunStats
from tests.conftest import DEMO_ENV, REPO, Sim, clean_profile, run_cli, write_job, write_pairs


def slow_job(tmp_path: Path, base_url: str, customers: int = 60) -> Path:
    """About two seconds of sending: one customer per request at 30 requests/s."""
    write_pairs(tmp_path / "pairs.csv", range(customers), ["partner-01"])
    return write_job(tmp_path, base_url, api={"rate": "30/second", "customers_per_request": 1})


def test_render_shows_done_total_rate_counts_and_eta() -> None:
    journal = SimpleNamespace(counts=Counter({"delinked": 8, "failed": 2}))  # as Journal.counts
    stats = RunStats(pairs_total=100, requests=12, throttles=2, retries=3)
    stats.started_at -= 5.0
    console = Console(file=io.StringIO(), width=140, record=True)
    console.print(render(take_figures(journal, stats, quota_per_s=50.0)))  # type: ignore[arg-type]
    text = console.export_text()
    assert "10/100 pairs 10%" in text
    assert "of 50.0/s quota" in text
    assert "delinked 8" in text and "failed 2" in text
    assert "throttled 2" in text and "retries 3" in text
    assert "ETA 0:00:45" in text


def test_eta_is_the_quota_before_any_answer_and_never_faster_than_it() -> None:
    # 1,000 pairs in 100 requests at 2 requests/s: 50 s before anything is answered.
    assert eta_s(0, 1000, 100, 0.0, 2.0) == 50.0
    # Half done in 10 s: 10 s more at that pace, but the quota needs 25 s for 50 requests.
    assert eta_s(500, 1000, 100, 10.0, 2.0) == 25.0
    # Half done in 100 s (throttled, retried): the pace so far is the slower, so it wins.
    assert eta_s(500, 1000, 100, 100.0, 2.0) == 100.0
    assert eta_s(1000, 1000, 100, 100.0, 2.0) == 0.0
    assert eta_s(0, 1000, 0, 0.0, 2.0) is None  # nothing to go by


def test_choose_picks_bar_on_a_terminal_log_off_one_and_nothing_when_quiet() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert Progress.choose(quiet=False, quota_per_s=1, stream=tty).mode == "bar"
            assert Progress.choose(quiet=True, quota_per_s=1, stream=tty).mode == "off"
    finally:
        os.close(master)
        os.close(slave)
    assert Progress.choose(quiet=False, quota_per_s=1, stream=io.StringIO()).mode == "log"


def test_run_on_a_terminal_shows_the_live_bar(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    job = slow_job(tmp_path, sim.base_url)
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    env.update(DEMO_ENV, TERM="xterm-256color", COLUMNS="140", LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "batcher.cli", "run", str(job), "--progress-every", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=REPO,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=60)
    reader.join(timeout=5)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")

    assert proc.returncode == 0, terminal
    assert "60/60 pairs 100%" in terminal
    assert "req/s" in terminal and "quota" in terminal
    assert "\x1b[" in terminal  # the display redraws in place
    # The display replaces the progress log lines on a terminal.
    assert '"run.progress"' not in terminal and "run.progress" not in terminal
    assert b"delinked" in stdout  # the final summary


def test_run_piped_to_a_file_logs_progress_lines_and_draws_no_bar(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    job = slow_job(tmp_path, sim.base_url)

    result = run_cli("run", str(job), "--progress-every", "1")

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "run.progress"]
    assert len(progress) >= 1, result.stderr
    first = progress[0]
    assert first["total"] == 60 and 0 <= first["done"] <= 60
    assert {"rate_per_s", "quota_per_s", "counts", "throttled", "retries", "eta_s"} <= set(first)
    assert first["job"] == "e2e" and first["run_id"]
    assert "\x1b[" not in result.stderr and "━" not in result.stderr


def test_quiet_prints_only_the_final_summary(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    job = slow_job(tmp_path, sim.base_url, customers=20)

    result = run_cli("run", str(job), "--quiet", "--progress-every", "0.2")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "delinked" in result.stdout and "exit code 0" in result.stdout
