"""Shared fixtures: the simulator on a loopback port, job files on disk, the CLI in this process
or in a real one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import polars as pl
import pytest
import structlog

from batcher.simulator.profile import Profile, profile_from_dict
from batcher.simulator.server import SimulatorThread

REPO = Path(__file__).resolve().parent.parent
# The `simulator` fixture: call it with a profile, get a running SimulatorThread.
Sim = Callable[[Profile], SimulatorThread]
DEMO_ENV = {
    "CAPILLARY_USERNAME": "demo.till",
    "CAPILLARY_PASSWORD": "demo-password",
    "CAPILLARY_CLIENT_KEY": "demo-key",
    "CAPILLARY_CLIENT_SECRET": "demo-secret",
}


def mobile(i: int) -> str:
    """The mobile of the simulator's generated customer i."""
    return f"9198{i:08d}"


def clean_profile(**sections: Any) -> Profile:
    """A well-behaved profile (no faults, no latency, no quota) with the given TOML sections."""
    return profile_with({"seed": 7, "state": {"customers": 100_000, "program_count": 5}}, sections)


def profile_with(base: dict[str, Any], sections: dict[str, Any]) -> Profile:
    """`base` (TOML-shaped) with `sections` laid over it, a table's keys merged."""
    data = dict(base)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return profile_from_dict(data)


@pytest.fixture(autouse=True)
def batcher_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test's own state folder (run locks): never the user's, never another test's."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("BATCHER_STATE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def alone_if_paced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A test marked `paced` measures a pace against the wall clock: with several workers
    (xdist), it runs while no other test does; every other test holds the lock shared.

    A starved event loop wakes late and a starved simulator answers in bursts, so a soak on the
    other core is enough to move an achieved rate or a throttle count out of its bounds."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    paced = request.node.get_closest_marker("paced") is not None
    # The workers' temporary folders share this parent for the whole session.
    lock_path = tmp_path_factory.getbasetemp().parent / "paced.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if paced else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def fresh_logging() -> None:
    """Each test starts with structlog as a new process has it: unconfigured, nothing bound.

    A test that configured it (structlog.testing.capture_logs leaves it "configured" with the
    defaults) must not decide where the next test's events go, on stdout or into its run log."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def simulator() -> Iterator[Callable[[Profile], SimulatorThread]]:
    """Start simulators on loopback ports; all are stopped after the test."""
    started: list[SimulatorThread] = []

    def start(profile: Profile) -> SimulatorThread:
        sim = SimulatorThread(profile)
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def write_pairs(path: Path, customers: range, programs: list[str], *, extra: bool = True) -> int:
    """Write a CSV or Parquet of (mobile, program) pairs; returns the number of rows."""
    data = {
        "mobile": [mobile(i) for i in customers for _ in programs],
        "partner_program_name": [p for _ in customers for p in programs],
    }
    if extra:
        data["region"] = [f"r{i % 7}" for i in customers for _ in programs]
    frame = pl.DataFrame(data)
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return frame.height


def write_job(
    directory: Path,
    base_url: str,
    *,
    input_path: str = "pairs.csv",
    name: str = "e2e",
    api: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """A job file pointing at `base_url`, with fast retries unless told otherwise."""
    api_values = {"rate": "1000/second", "max_in_flight": 8, "timeout_seconds": 5, **(api or {})}
    retry_values = {
        "max_attempts": 6,
        "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        **(retry or {}),
    }

    def toml(values: Mapping[str, Any]) -> str:
        return "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())

    text = (
        f'name = "{name}"\n[input]\npath = "{input_path}"\nidentifier = "mobile"\n'
        f'[api]\nbase_url = "{base_url}"\n{toml(api_values)}\n'
        f"[retry]\n{toml(retry_values)}\n"
        f'[output]\ndir = "{directory / "out"}"\n{extra}'
    )
    path = directory / "job.toml"
    path.write_text(text)
    return path


def start_cli(
    *args: str, cwd: Path | None = None, stderr: IO[str] | None = None
) -> subprocess.Popen[str]:
    """Start `batcher ...` in a subprocess and return at once (for signals, kills and locks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    env.update(DEMO_ENV)
    return subprocess.Popen(
        [sys.executable, "-m", "batcher.cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd or REPO,
    )


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 240,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `batcher ...` as an operator (or a scheduler) would: its exit code, stdout, stderr.

    In this process through click's CliRunner by default (no interpreter start and imports per
    command); `process=True` starts a real `python -m batcher.cli`, for what only a process has.
    `env` replaces the demo credentials; CAPILLARY_* variables of the caller are never seen.
    """
    if process:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
        full_env.update(env if env is not None else DEMO_ENV)
        return subprocess.run(
            [sys.executable, "-m", "batcher.cli", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or REPO,
            timeout=timeout,
            check=False,
        )
    return invoke_cli(*args, env=env, cwd=cwd)


def invoke_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`batcher ...` in this process, answered as a process would: an uncaught exception is exit
    1 with its traceback on stderr (so "no Traceback" assertions keep their meaning), and the
    process-wide umask the command sets is put back afterwards."""
    from click.testing import CliRunner

    from batcher.cli import main

    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CAPILLARY_")}
    overrides.update(env if env is not None else DEMO_ENV)
    umask = os.umask(0o077)
    os.umask(umask)
    try:
        with contextlib.chdir(cwd or REPO):
            result = CliRunner().invoke(main, list(args), env=overrides, prog_name="batcher")
    finally:
        os.umask(umask)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["batcher", *args], result.exit_code, result.stdout, stderr)


def only_run_dir(out: Path, job: str = "e2e") -> Path:
    """The newest run folder of a job.

    A run id sorts by its start to the second only (then a random suffix), and two in-process
    runs often start within one second: the manifest's created_at (to the millisecond) breaks
    the tie."""
    runs = [p for p in (out / job).iterdir() if p.is_dir()]
    assert runs, f"no run folder under {out / job}"

    def started(run_dir: Path) -> tuple[str, str, str]:
        manifest = run_dir / "manifest.json"
        created = (
            json.loads(manifest.read_text()).get("created_at", "") if manifest.is_file() else ""
        )
        return run_dir.name.split("-")[0], str(created), run_dir.name

    return max(runs, key=started)


def read_summary(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The paced tests first, then the soak, the other long tests, the rest (each group in its
    own order).

    xdist's worksteal hands each worker an equal, contiguous share of this list, the first
    worker its head: the paced test runs at once (the other workers wait only for it), then the
    soak and the long tests start early and overlap the rest of the suite instead of running
    alone at its end; a worker that runs out steals half of the longest queue."""

    def group(item: pytest.Item) -> int:
        for rank, marker in enumerate(("paced", "soak", "long")):
            if item.get_closest_marker(marker) is not None:
                return rank
        return 3

    items.sort(key=group)
