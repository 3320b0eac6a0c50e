"""Runs that survive: SIGKILL then resume, clean interrupts, one run per job, retry and report.

The CLI runs as a subprocess against a simulator on a loopback port; the simulator's per-pair
counters say what really was sent, and what is still linked.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from batcher.results.journal import JOURNAL_NAME, read_journal
from batcher.simulator.server import SimulatorThread
from tests.conftest import (
    DEMO_ENV,
    REPO,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
    run_cli,
    start_cli,
    write_job,
    write_pairs,
)

PROGRAMS = ["partner-01", "partner-02", "partner-03", "partner-04"]
CONFIRMED = ("delinked", "delinked_unconfirmed", "not_linked", "failed")


def journal_lines(out: Path, job: str = "e2e") -> int:
    runs = sorted((out / job).glob("*/" + JOURNAL_NAME))
    if not runs:
        return 0
    with open(runs[-1], "rb") as f:
        return sum(1 for _ in f)


def wait_for_journal(
    out: Path, lines: int, proc: subprocess.Popen[str], limit_s: float = 60
) -> None:
    deadline = time.monotonic() + limit_s
    while journal_lines(out) < lines:
        assert proc.poll() is None, f"the run ended before {lines} outcomes: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def attempts_by_pair(sim: SimulatorThread) -> dict[tuple[str, str], int]:
    return {(p["mobile"], p["program"]): p["attempts"] for p in sim.snapshot()["pairs"]}


@pytest.mark.long
def test_sigkill_at_random_points_then_resume_loses_and_resends_nothing_confirmed(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(state={"customers": 30_000}))
    customers = 25_000
    rows = write_pairs(tmp_path / "pairs.csv", range(customers), PROGRAMS)
    assert rows == 100_000
    job = write_job(tmp_path, sim.base_url, api={"rate": "400/second", "customers_per_request": 50})
    out = tmp_path / "out"
    rng = random.Random(2026)
    kill_points = sorted(rng.sample(range(5_000, 95_000), 3))  # journalled outcomes at the kill
    confirmed_at_kills: list[tuple[set[tuple[str, str]], dict[tuple[str, str], int]]] = []

    proc = start_cli("run", str(job), "--quiet")
    for point in kill_points:
        wait_for_journal(out, point, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # also closes its pipes
        assert proc.returncode == -signal.SIGKILL
        journal = read_journal(only_run_dir(out) / JOURNAL_NAME)
        confirmed = journal.filter(pl.col("s").is_in(CONFIRMED))
        pairs = set(zip(confirmed["cu"].to_list(), confirmed["pr"].to_list(), strict=True))
        confirmed_at_kills.append((pairs, attempts_by_pair(sim)))
        proc = start_cli("run", str(job), "--resume", "--quiet")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stdout + stderr

    run_dir = only_run_dir(out)
    assert len([p for p in (out / "e2e").iterdir() if p.is_dir()]) == 1, "resumed in place"
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.height == rows
    assert outcomes["row"].n_unique() == rows
    # Every pair was linked: delinked, or (a 2004 after a request the kill cut off) unconfirmed.
    assert set(outcomes["status"].unique().to_list()) <= {"delinked", "delinked_unconfirmed"}
    final = attempts_by_pair(sim)
    resent_after_confirmation = [
        pair
        for pairs, attempts in confirmed_at_kills
        for pair in pairs
        if final[pair] != attempts[pair]
    ]
    assert resent_after_confirmation == []
    resent = sum(1 for n in final.values() if n > 1)
    lost = (
        rows - outcomes.filter(pl.col("status").is_in(["delinked", "delinked_unconfirmed"])).height
    )
    print(f"\nkill points {kill_points}: resent pairs {resent}, lost rows {lost}")
    assert lost == 0
    assert (
        sim.still_linked("mobile", [(mobile(i), p) for i in range(customers) for p in PROGRAMS])
        == []
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_finishes_in_flight_writes_files_and_says_how_to_resume(
    tmp_path: Path, simulator: Sim, sig: signal.Signals
) -> None:
    sim = simulator(clean_profile(latency={"fixed_ms": 20}))
    rows = write_pairs(tmp_path / "pairs.csv", range(1_000), PROGRAMS)  # 100 requests, 2 s
    job = write_job(tmp_path, sim.base_url, api={"rate": "50/second", "customers_per_request": 10})
    out = tmp_path / "out"

    proc = start_cli("run", str(job), "--quiet")
    wait_for_journal(out, 200, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 3, stderr
    assert "batcher resume" in stdout
    assert "Traceback" not in stderr
    run_dir = only_run_dir(out)
    summary = read_summary(run_dir)
    assert summary["stopped"] and signal.Signals(sig).name in summary["stopped"]
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.height == rows
    counts = summary["counts"]
    assert 0 < counts["delinked"] < rows and counts["retryable"] == rows - counts["delinked"]
    # What the server did equals what the files say: nothing in flight was lost.
    served = sum(p["delinked"] for p in sim.snapshot()["pairs"])
    assert served == counts["delinked"]

    resumed = run_cli("resume", str(run_dir), "--quiet")

    assert resumed.returncode == 0, resumed.stderr
    assert read_summary(run_dir)["counts"]["delinked"] == rows
    assert max(p["attempts"] for p in sim.snapshot()["pairs"]) == 1


def test_a_second_run_of_the_same_job_is_refused_while_the_first_lives(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(500), PROGRAMS)
    # 100 s if left alone: it outlives the second process's start on a loaded machine.
    job = write_job(tmp_path, sim.base_url, api={"rate": "5/second", "customers_per_request": 1})
    first = start_cli("run", str(job), "--quiet")
    try:
        wait_for_journal(tmp_path / "out", 10, first)
        second = run_cli("run", str(job), "--quiet")
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr
        assert "started" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


def test_a_lock_left_by_a_dead_process_is_taken_over(
    tmp_path: Path, simulator: Sim, batcher_state_dir: Path
) -> None:
    sim = simulator(clean_profile())
    rows = write_pairs(tmp_path / "pairs.csv", range(20), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)
    lock = batcher_state_dir / "locks" / "job-e2e.lock"
    lock.parent.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock.write_text(
        json.dumps(
            {"pid": int(dead.stdout), "run_id": "x", "started_at": "then", "released_at": None}
        )
    )

    result = run_cli("run", str(job), "--quiet")

    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    assert read_summary(run_dir)["counts"]["delinked"] == rows
    events = [json.loads(line) for line in (run_dir / "run.log.jsonl").read_text().splitlines()]
    taken = [e for e in events if e["event"] == "run.lock_taken_over"]
    assert taken and taken[0]["previous_pid"] == int(dead.stdout)


def test_resume_refuses_a_changed_input_unless_forced(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile(latency={"fixed_ms": 10}))
    write_pairs(tmp_path / "pairs.csv", range(500), PROGRAMS)  # 100 requests, 2.5 s
    job = write_job(tmp_path, sim.base_url, api={"rate": "40/second", "customers_per_request": 5})
    proc = start_cli("run", str(job), "--quiet")
    wait_for_journal(tmp_path / "out", 50, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    run_dir = only_run_dir(tmp_path / "out")
    with open(tmp_path / "pairs.csv", "a") as f:
        f.write(f"{mobile(5000)},partner-01,r1\n")

    refused = run_cli("resume", str(run_dir), "--quiet")
    assert refused.returncode == 2
    assert "input changed" in refused.stderr and "--force" in refused.stderr

    forced = run_cli("resume", str(run_dir), "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.height == 2_001
    assert max(p["attempts"] for p in sim.snapshot()["pairs"]) == 1


def test_retry_after_the_fault_is_gone_then_report_merges_one_row_per_input_row(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(faults={"item_transient": 0.4}, seed=5))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), PROGRAMS)
    (tmp_path / "pairs.csv").write_text(
        (tmp_path / "pairs.csv").read_text() + "not-a-mobile,partner-01,r0\n"
    )
    rows += 1
    job = write_job(tmp_path, sim.base_url, retry={"max_attempts": 1})
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 1
    parent = only_run_dir(tmp_path / "out")
    before = read_summary(parent)["counts"]
    assert before["retryable"] > 0 and before["rejected"] == 1

    sim.set_faults(None)
    retried = run_cli("retry", str(parent), "--quiet")

    assert retried.returncode == 0, retried.stderr
    child = only_run_dir(tmp_path / "out")
    assert child != parent
    child_summary = read_summary(child)
    assert child_summary["parent"] == parent.name
    assert child_summary["input"]["rows"] == before["retryable"]

    merged_path = tmp_path / "merged.parquet"
    report = run_cli("report", str(parent), "--out", str(merged_path))
    assert report.returncode == 0, report.stderr
    merged = pl.read_parquet(merged_path)
    assert merged.height == rows
    assert merged["row"].to_list() == list(range(1, rows + 1))
    final = dict(merged.group_by("status").len().iter_rows())
    assert final == {"delinked": rows - 1, "rejected": 1}
    assert set(merged["final_run"].unique().to_list()) == {parent.name, child.name}
    # The child's report gives the same answer as the parent's.
    again = run_cli("report", str(child), "--out", str(tmp_path / "merged.csv"))
    assert again.returncode == 0
    assert pl.read_csv(tmp_path / "merged.csv", infer_schema=False).height == rows


def test_a_second_interrupt_stops_at_once_and_the_journal_keeps_what_was_confirmed(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(latency={"fixed_ms": 300}))
    rows = write_pairs(tmp_path / "pairs.csv", range(200), PROGRAMS)  # 100 requests, 2.5 s
    job = write_job(tmp_path, sim.base_url, api={"rate": "40/second", "customers_per_request": 2})
    proc = start_cli("run", str(job), "--quiet")
    wait_for_journal(tmp_path / "out", 40, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    run_dir = only_run_dir(tmp_path / "out")
    assert "stopped at once" in read_summary(run_dir)["stopped"]
    journal = read_journal(run_dir / JOURNAL_NAME)
    served = {(p["mobile"], p["program"]) for p in sim.snapshot()["pairs"] if p["delinked"]}
    confirmed = set(zip(journal["cu"].to_list(), journal["pr"].to_list(), strict=True))
    assert confirmed <= served  # nothing called done that the server did not do
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.height == rows

    resumed = run_cli("resume", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    counts = read_summary(run_dir)["counts"]
    # Requests cut off in flight were processed, their answers lost: the resend hears 2004.
    assert counts["delinked"] + counts["delinked_unconfirmed"] == rows
    assert counts["delinked_unconfirmed"] <= 8 * 2 * len(PROGRAMS)  # at most 8 in flight


def test_runs_of_different_jobs_with_different_api_keys_may_run_at_once(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    procs = []
    for name in ("job-a", "job-b"):
        folder = tmp_path / name
        folder.mkdir()
        first = 0 if name == "job-a" else 300
        write_pairs(folder / "pairs.csv", range(first, first + 300), PROGRAMS)
        job = write_job(
            folder,
            sim.base_url,
            name=name,
            # One run per API key: job-b uses the simulator's OAuth client, another key.
            api={
                "rate": "20/second",
                "customers_per_request": 10,
                "auth": "basic" if name == "job-a" else "oauth",
            },
        )
        procs.append(start_cli("run", str(job), "--quiet"))
    for proc in procs:
        _stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert sim.still_linked("mobile", [(mobile(i), p) for i in range(600) for p in PROGRAMS]) == []


def test_a_retry_knows_which_pairs_the_parent_may_have_delinked(
    tmp_path: Path, simulator: Sim
) -> None:
    """Answers lost after the server processed the delink: the retry hears 2004 and says
    `delinked_unconfirmed`, naming the parent's lost attempt; never `not_linked`."""
    sim = simulator(clean_profile(faults={"disconnect_after": 0.5}, seed=9))
    rows = write_pairs(tmp_path / "pairs.csv", range(200), PROGRAMS)
    job = write_job(
        tmp_path, sim.base_url, api={"customers_per_request": 5}, retry={"max_attempts": 1}
    )
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 1
    parent = only_run_dir(tmp_path / "out")
    assert read_summary(parent)["counts"]["retryable"] > 0

    sim.set_faults(None)
    assert run_cli("retry", str(parent), "--quiet").returncode == 0

    merged_path = tmp_path / "merged.parquet"
    assert run_cli("report", str(parent), "--out", str(merged_path)).returncode == 0
    merged = pl.read_parquet(merged_path)
    # Every pair was linked at the start, so no row is "not linked".
    counts = dict(merged.group_by("status").len().iter_rows())
    assert set(counts) == {"delinked", "delinked_unconfirmed"}
    assert sum(counts.values()) == rows
    unconfirmed = merged.filter(pl.col("status") == "delinked_unconfirmed")
    assert unconfirmed["note"].str.contains("earlier attempt was lost").all()
    # ... the retry's own among them name the parent run's lost attempt.
    assert unconfirmed["note"].str.contains("an attempt in the parent run").any()
    assert sim.still_linked("mobile", [(mobile(i), p) for i in range(200) for p in PROGRAMS]) == []


@pytest.mark.parametrize("point", ["assembly", "fold", "fold-promoted"])
def test_a_kill_during_assembly_or_folding_then_resume_resends_nothing_and_folds(
    tmp_path: Path, simulator: Sim, point: str
) -> None:
    """Every pair was answered before the kill: the resume sends nothing, writes every file."""
    sim = simulator(clean_profile(state={"link_probability": 0.8}))
    rows = write_pairs(tmp_path / "pairs.csv", range(300), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    killed = subprocess.run(
        [sys.executable, "-m", "tests.crash_at", point, "run", str(job), "--quiet"],
        capture_output=True,
        text=True,
        env={**env, **DEMO_ENV},
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = only_run_dir(tmp_path / "out")
    assert not (run_dir / "summary.json").exists()
    left = {p.name for p in run_dir.iterdir()}
    live, folded = JOURNAL_NAME in left, "journal.parquet" in left
    assert (live, folded) == {
        "assembly": (True, False),
        "fold": (True, False),
        "fold-promoted": (True, True),
    }[point]
    attempts = attempts_by_pair(sim)
    assert sum(attempts.values()) == rows

    resumed = run_cli("run", str(job), "--resume", "--quiet")

    assert resumed.returncode == 0, resumed.stderr
    assert attempts_by_pair(sim) == attempts, "nothing answered was sent again"
    assert only_run_dir(tmp_path / "out") == run_dir
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.height == rows and outcomes["row"].n_unique() == rows
    served = {(p["mobile"], p["program"]): p["delinked"] for p in sim.snapshot()["pairs"]}
    for m, program, status in outcomes.select(
        "mobile", "partner_program_name", "status"
    ).iter_rows():
        assert status == ("delinked" if served[(m, program)] else "not_linked")
    left = {p.name for p in run_dir.iterdir()}
    assert "journal.parquet" in left
    assert not {JOURNAL_NAME, "intents.jsonl", ".assembly", ".rows.parquet"} & left
