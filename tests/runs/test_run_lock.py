"""One run per job and one run per API key on this machine, whatever the working directory.

The lock is between processes, so the first run is a real process (or the test itself holding
the lock); the second runs in-process. The simulator's counters say what was really sent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batcher.cli import main
from batcher.runs.lock import api_key_lock, holding, job_lock
from tests.conftest import (
    DEMO_ENV,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
    start_cli,
    write_job,
    write_pairs,
)

PROGRAMS = ["partner-01", "partner-02"]


def wait_until_sending(job_dir: Path, proc: subprocess.Popen[str], limit_s: float = 60) -> None:
    """Until the run's journal holds an answer: it holds its locks and is sending."""
    deadline = time.monotonic() + limit_s
    while not any(p.stat().st_size for p in job_dir.glob("*/journal.jsonl")):
        assert proc.poll() is None, f"the first run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the first run never started sending"
        time.sleep(0.02)


def slow_job(folder: Path, base_url: str, name: str, first: int, **kw: object) -> Path:
    """A job of 400 pairs at 5 requests/s of 2 customers: 20 s if left alone (it is stopped)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_pairs(folder / "pairs.csv", range(first, first + 200), PROGRAMS)
    return write_job(
        folder,
        base_url,
        name=name,
        api={"rate": "5/second", "customers_per_request": 2, **kw},
    )


def cli(*args: str) -> Result:
    """`batcher ...` in-process, with the simulator's demo credentials."""
    return CliRunner().invoke(main, list(args), env=DEMO_ENV)


def test_two_runs_of_one_job_from_different_directories_do_not_both_send(
    tmp_path: Path, simulator: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default output.dir is relative to the working directory; the lock is not."""
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(200), PROGRAMS)
    job = tmp_path / "job.toml"
    job.write_text(
        'name = "e2e"\n[input]\npath = "pairs.csv"\n'
        f'[api]\nbase_url = "{sim.base_url}"\nrate = "5/second"\ncustomers_per_request = 2\n'
    )
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    first = start_cli("run", str(job), "--quiet", cwd=here)
    try:
        wait_until_sending(here / "output" / "e2e", first)
        monkeypatch.chdir(there)
        second = cli("run", str(job), "--quiet")
        assert second.exit_code == 2, second.output
        assert "job e2e" in second.output and f"pid {first.pid}" in second.output
        assert "started 20" in second.output and "Traceback" not in second.output
        assert not (there / "output").exists(), "the refused run left nothing behind"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    attempts = [p["attempts"] for p in sim.snapshot()["pairs"]]
    assert max(attempts) == 1, "no pair was sent by both runs"


def test_a_job_with_the_same_api_key_fails_fast_one_with_another_key_runs(
    tmp_path: Path, simulator: Sim, batcher_state_dir: Path
) -> None:
    """Same base URL and user name: one quota, one run. Another client key: its own quota."""
    sim = simulator(clean_profile())
    job_a = slow_job(tmp_path / "a", sim.base_url, "job-a", 0)
    job_b = slow_job(tmp_path / "b", sim.base_url, "job-b", 1000, rate="1000/second")
    job_c = slow_job(tmp_path / "c", sim.base_url, "job-c", 2000, rate="1000/second", auth="oauth")
    first = start_cli("run", str(job_a), "--quiet")
    try:
        wait_until_sending(tmp_path / "a" / "out" / "job-a", first)
        second = cli("run", str(job_b), "--quiet")
        other_key = cli("run", str(job_c), "--quiet")

        assert second.exit_code == 2, second.output
        assert "API key" in second.output
        assert "job job-a" in second.output and f"pid {first.pid}" in second.output
        assert "started 20" in second.output and "Traceback" not in second.output
        assert not (tmp_path / "b" / "out").exists(), "the refused run left nothing behind"
        # The lock files name the key by a hash: no user name, client key, password or md5.
        locks = "".join(p.read_text() for p in batcher_state_dir.rglob("*.lock"))
        assert "job-a" in locks
        for secret in ("demo.till", "demo-password", "demo-key", "demo-secret", "e4a5b8"):
            assert secret not in locks
        assert other_key.exit_code == 0, other_key.output
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    sent = {p["mobile"] for p in sim.snapshot()["pairs"]}
    assert not sent & {mobile(i) for i in range(1000, 1200)}, "job-b sent nothing"
    assert {mobile(i) for i in range(2000, 2200)} <= sent, "job-c sent everything"


def test_with_wait_a_run_starts_when_the_lock_is_released(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    job = slow_job(tmp_path / "b", sim.base_url, "job-b", 1000, rate="1000/second")
    log_path = tmp_path / "second.log"
    locks = [job_lock("job-b"), api_key_lock(sim.base_url, "basic", DEMO_ENV["CAPILLARY_USERNAME"])]
    with holding(locks, {"job": "job-b", "run_id": "held-by-the-test"}), open(log_path, "w") as log:
        second = start_cli("run", str(job), "--wait", "--log-format", "json", stderr=log)
        deadline = time.monotonic() + 60
        while "run.waiting_for_lock" not in log_path.read_text():
            assert second.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not (tmp_path / "b" / "out").exists(), "waiting, not running"
        assert sim.snapshot(pairs=False)["counters"]["requests"] == 0
        released_at = time.time()
    second.communicate(timeout=120)

    assert second.returncode == 0, log_path.read_text()
    assert "held-by-the-test" in log_path.read_text()
    summary = read_summary(only_run_dir(tmp_path / "b" / "out", "job-b"))
    assert summary["counts"]["delinked"] == 400
    started = datetime.fromisoformat(summary["started_at"].replace("Z", "+00:00"))
    assert started.timestamp() >= released_at - 0.01


def test_a_killed_holder_leaves_both_locks_free(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    job_a = slow_job(tmp_path / "a", sim.base_url, "job-a", 0)
    job_b = slow_job(tmp_path / "b", sim.base_url, "job-b", 1000, rate="1000/second")
    first = start_cli("run", str(job_a), "--quiet")
    wait_until_sending(tmp_path / "a" / "out" / "job-a", first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    (tmp_path / "tiny.csv").write_text(f"mobile,partner_program_name\n{mobile(5000)},partner-01\n")

    other_job = cli("run", str(job_b), "--quiet")
    same_job = cli("run", str(job_a), "--input", str(tmp_path / "tiny.csv"), "--quiet")

    assert other_job.exit_code == 0, other_job.output
    assert same_job.exit_code == 0, same_job.output
    run_dir = only_run_dir(tmp_path / "b" / "out", "job-b")
    events = [json.loads(line) for line in (run_dir / "run.log.jsonl").read_text().splitlines()]
    taken = [e for e in events if e["event"] == "run.lock_taken_over"]
    assert [e["previous_pid"] for e in taken] == [first.pid]
    assert "API key" in taken[0]["lock"] and taken[0]["previous_job"] == "job-a"
