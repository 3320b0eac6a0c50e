"""The command line as a boundary: what one command leaves behind in the process that ran it,
and the installed `batcher` script end to end in a process of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

import batcher
from tests.conftest import (
    DEMO_ENV,
    Sim,
    clean_profile,
    invoke_cli,
    only_run_dir,
    read_summary,
    write_job,
    write_pairs,
)


def test_a_command_leaves_no_logging_configuration_behind(
    tmp_path: Path, simulator: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two commands (or a command, then a library call) in one process: the second sees none of
    the first's stream, format, level or bound fields (job, run_id)."""
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(5), ["partner-01"])
    job = write_job(tmp_path, sim.base_url)
    configured = structlog.is_configured()

    first = invoke_cli("run", str(job), "--log-format", "json")

    assert first.returncode == 0, first.stderr
    assert '"run.finished"' in first.stderr
    assert structlog.is_configured() == configured
    assert structlog.contextvars.get_contextvars() == {}

    quiet = invoke_cli("run", str(job), "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # not the first command's level or format

    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    try:
        result = batcher.run_job(job)  # the library's default: nothing on stderr
    finally:
        for key in DEMO_ENV:
            os.environ.pop(key, None)
    assert result.exit_code == 0
    assert capsys.readouterr().err == ""
    assert structlog.is_configured() == configured
    assert structlog.contextvars.get_contextvars() == {}


def test_a_command_in_this_process_puts_the_umask_back(tmp_path: Path) -> None:
    """The command makes its files owner-only through the umask; the caller's is restored."""
    before = os.umask(0o022)
    try:
        result = invoke_cli("validate", str(tmp_path / "nope.toml"))
        assert result.returncode == 2
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_the_installed_batcher_command_runs_a_job_end_to_end(
    tmp_path: Path, simulator: Sim
) -> None:
    """The console script (`batcher.cli:entry`, uvloop in its own process) as a scheduler
    starts it: a real process, exit code, summary on stdout, files on disk."""
    command = shutil.which("batcher", path=str(Path(sys.executable).parent))
    assert command, "the batcher console script is not installed next to this interpreter"
    sim = simulator(clean_profile())
    rows = write_pairs(tmp_path / "pairs.csv", range(30), ["partner-01", "partner-02"])
    job = write_job(tmp_path, sim.base_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    env.update(DEMO_ENV)

    done = subprocess.run(
        [command, "run", str(job), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "delinked" in done.stdout and "exit code 0" in done.stdout
    summary = read_summary(only_run_dir(tmp_path / "out"))
    assert summary["counts"]["delinked"] == rows
