"""`batcher simulate` as a user runs it, and the SimulatorThread that CLI tests run against."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from batcher.simulator.server import SimulatorThread
from tests.conftest import mobile
from tests.simulator_support import basic, body, profile

REPO = Path(__file__).resolve().parent.parent


def _batcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "batcher.cli", *args]


def _post(url: str, payload: object) -> tuple[int, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={**basic(), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def test_simulate_with_a_bad_profile_exits_2_with_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[quota]\nwindow = 'rolling'\n")
    done = subprocess.run(
        _batcher("simulate", "--profile", str(bad)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "Error: Simulator profile" in done.stderr
    assert "quota.window" in done.stderr
    assert "Traceback" not in done.stderr


def test_simulate_port_0_serves_logs_each_request_and_stops_cleanly_on_sigint() -> None:
    proc = subprocess.Popen(
        _batcher("simulate", "--port", "0", "--profile", "jobs/simulator/clean.toml"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, line
        url = found.group(0)
        status, answer = _post(
            url + "/v2/partnerProgram/deLinkCustomer", body((mobile(1), ["partner-01"]))
        )
        assert status == 200
        assert isinstance(answer, dict)
        assert "customersPartnerUpdates" in answer
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in out
    assert "simulator.request" in out
    assert "simulator.stopped" in out


def test_simulator_thread_serves_snapshots_and_changes_faults() -> None:
    with SimulatorThread(profile(faults={"server_error": 1.0})) as sim:
        url = sim.base_url + "/v2/partnerProgram/deLinkCustomer"
        try:
            _post(url, body((mobile(1), ["partner-01"])))
        except urllib.error.HTTPError as e:
            assert e.code >= 500
        sim.set_faults(None)
        status, _ = _post(url, body((mobile(1), ["partner-01"])))
        assert status == 200
        snap = sim.snapshot()
        assert snap["pairs"][0]["delinked"] == 1
        assert sim.still_linked(
            "mobile", [(mobile(1), "partner-01"), (mobile(1), "partner-02")]
        ) == [(mobile(1), "partner-02")]
