"""Guardrails before sending: the size limit, and the question asked on a terminal.

Request counts are the simulator's own counters; the question is asked of a real process on a
pseudo-terminal, because whether a terminal is there is the point.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from batcher.cli import main
from batcher.errors import JobError
from batcher.job import SafetySettings, load_job
from tests.conftest import (
    DEMO_ENV,
    REPO,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
    write_job,
    write_pairs,
)

PROGRAMS = ["partner-01", "partner-02"]
JOB = """name = "t"
[input]
path = "in.csv"
[api]
base_url = "simulator"
"""


def test_safety_keys_default_and_are_checked(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("mobile,partner_program_name\n919800000001,partner-01\n")
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    job = load_job(path)
    assert job.api.expect_org_id is None
    assert job.safety == SafetySettings(0.9, 200, None) and job.safety.breaker_on
    path.write_text(
        JOB + "expect_org_id = 51234\n[safety]\nstop_if_failed_share = 1\n"
        "stop_after_pairs = 50\nmax_pairs = 1000\n"
    )
    job = load_job(path)
    assert job.api.expect_org_id == 51234
    assert job.safety == SafetySettings(1.0, 50, 1000) and not job.safety.breaker_on
    for bad, key in [
        ('expect_org_id = "51234"\n', "api.expect_org_id"),
        ("expect_org_id = 0\n", "api.expect_org_id"),
        ("[safety]\nstop_if_failed_share = 0\n", "safety.stop_if_failed_share"),
        ("[safety]\nstop_if_failed_share = 1.5\n", "safety.stop_if_failed_share"),
        ("[safety]\nstop_after_pairs = 0\n", "safety.stop_after_pairs"),
        ("[safety]\nmax_pairs = -1\n", "safety.max_pairs"),
        ("[safety]\nmax_errors = 1\n", "safety.max_errors"),
    ]:
        path.write_text(JOB + bad)
        with pytest.raises(JobError, match=f"'{key}'"):
            load_job(path)


def requests_seen(sim: object) -> int:
    counters = sim.snapshot(pairs=False)["counters"]  # type: ignore[attr-defined]
    return int(counters["requests"])


def test_max_pairs_refuses_a_larger_plan_before_anything_is_sent(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(60), PROGRAMS)  # 120 pairs
    job = write_job(tmp_path, sim.base_url, extra="[safety]\nmax_pairs = 100\n")

    refused = CliRunner().invoke(main, ["run", str(job)], env=DEMO_ENV)

    assert refused.exit_code == 2, refused.output
    assert "120 valid pairs" in refused.output and "(100)" in refused.output
    assert "--max-pairs 120" in refused.output and "Traceback" not in refused.output
    assert requests_seen(sim) == 0
    assert not (tmp_path / "out").exists()  # no run folder: nothing happened

    # The command line can lower the limit too, and raise it for one run.
    lowered = CliRunner().invoke(main, ["run", str(job), "--max-pairs", "50"], env=DEMO_ENV)
    assert lowered.exit_code == 2 and "(50)" in lowered.output
    raised = CliRunner().invoke(main, ["run", str(job), "--max-pairs", "120"], env=DEMO_ENV)
    assert raised.exit_code == 0, raised.output
    assert requests_seen(sim) > 0


class Terminal:
    """`batcher ...` in a subprocess whose stdin, stdout and stderr are a pseudo-terminal."""

    def __init__(self, *args: str, cwd: Path) -> None:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
        env.update(DEMO_ENV, TERM="xterm-256color", COLUMNS="140", LINES="40")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batcher.cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
        )
        os.close(slave)
        self.master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.text}"
            assert time.monotonic() < deadline, f"no {needle!r} on the terminal: {self.text}"
            time.sleep(0.05)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self, timeout_s: float = 60) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        os.close(self.master)
        return code


def test_on_a_terminal_run_shows_the_plan_and_waits_and_no_sends_nothing(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(60), PROGRAMS)
    (tmp_path / "pairs.csv").write_text(
        (tmp_path / "pairs.csv").read_text() + f"{mobile(60)},gold club,r1\n"
    )
    job = write_job(tmp_path, sim.base_url, api={"rate": "30/minute", "expect_org_id": 50001})

    term = Terminal("run", str(job), cwd=REPO)
    term.wait_for("This cannot be undone")
    time.sleep(0.5)  # it waits for the answer: nothing goes out meanwhile
    assert requests_seen(sim) == 0
    shown = term.text
    assert "121 pairs" in shown and "61 customers" in shown and "2 requests" in shown
    assert "partner-01" in shown and "60" in shown and "gold club" in shown
    assert "org 50001 expected" in shown
    assert "30/minute" in shown and "0:00:04" in shown  # 2 requests at 30 a minute
    term.type("n")

    assert term.finish() == 2, term.text
    assert "nothing was sent" in term.text
    assert requests_seen(sim) == 0
    assert not (tmp_path / "out").exists()


def test_on_a_terminal_yes_sends(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(20), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)

    term = Terminal("run", str(job), cwd=REPO)
    term.wait_for("This cannot be undone")
    term.type("y")
    assert term.finish() == 0, term.text
    assert requests_seen(sim) > 0


def test_on_a_terminal_the_embedded_simulator_is_not_asked(tmp_path: Path) -> None:
    """The README's demo command runs straight through: the embedded simulator is no org."""
    term = Terminal("run", "jobs/demo.toml", "--output", str(tmp_path / "out"), cwd=REPO)
    assert term.finish() == 1, term.text  # the demo has rejects and unknown customers on purpose
    assert "cannot be undone" not in term.text
    assert list((tmp_path / "out").rglob("summary.json"))


def test_on_a_terminal_the_yes_flag_skips_the_question(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(20), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)

    term = Terminal("run", str(job), "--yes", cwd=REPO)
    assert term.finish() == 0, term.text
    assert "cannot be undone" not in term.text
    assert requests_seen(sim) > 0


def test_off_a_terminal_it_never_asks(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(20), PROGRAMS)
    job = write_job(tmp_path, sim.base_url)

    # Input is there to be read, but stdin is not a terminal: no question, no waiting.
    result = CliRunner().invoke(main, ["run", str(job)], env=DEMO_ENV, input="n\n")

    assert result.exit_code == 0, result.output
    assert "cannot be undone" not in result.output
    assert requests_seen(sim) > 0
    assert only_run_dir(tmp_path / "out")


def unknown_program_rows(path: Path, customers: int) -> int:
    lines = "".join(f"{mobile(i)},Gold Club\n" for i in range(customers))
    path.write_text("mobile,partner_program_name\n" + lines)
    return customers


def test_a_file_of_unknown_programs_stops_early(tmp_path: Path, simulator: Sim) -> None:
    """10,000 rows, 200 planned requests, every answer 2006: at most 20 requests."""
    sim = simulator(clean_profile())
    rows = unknown_program_rows(tmp_path / "pairs.csv", 10_000)
    job = write_job(tmp_path, sim.base_url)

    result = CliRunner().invoke(main, ["run", str(job)], env=DEMO_ENV)

    assert result.exit_code == 3, result.output
    assert requests_seen(sim) <= 20
    run_dir = only_run_dir(tmp_path / "out")
    summary = read_summary(run_dir)
    counts = summary["counts"]
    assert counts["failed"] >= 200 and counts["failed"] + counts["retryable"] == rows
    stop = summary["abort"]
    assert "% of the first" in stop and "2006 'Cannot find the partner program'" in stop
    assert "(program 'Gold Club')" in stop and "check the program names" in stop
    assert stop.endswith(f"resume with batcher resume {run_dir}")
    assert "2006" in result.output and "batcher resume" in result.output


def test_a_failed_share_of_one_never_stops(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    rows = unknown_program_rows(tmp_path / "pairs.csv", 300)
    job = write_job(tmp_path, sim.base_url, extra="[safety]\nstop_if_failed_share = 1.0\n")

    result = CliRunner().invoke(main, ["run", str(job)], env=DEMO_ENV)

    assert result.exit_code == 1, result.output
    assert read_summary(only_run_dir(tmp_path / "out"))["counts"]["failed"] == rows
