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

import structlog
import structlog.testing

from batcher.simulator.serve import RequestLog
from batcher.simulator.server import SimulatorThread
from tests.conftest import mobile, run_cli
from tests.simulator_support import basic, body, profile

REPO = Path(__file__).resolve().parents[2]


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
    done = run_cli("simulate", "--profile", str(bad))
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


def _requests(log: RequestLog, n: int, status: str = "200") -> None:
    for i in range(n):
        log({"method": "POST", "path": "/x", "status": status, "request_id": f"r{i}", "note": ""})


def test_the_request_log_samples_a_few_lines_a_second_and_summarises_them_all() -> None:
    now = [100.0]
    with structlog.testing.capture_logs() as events:
        log = RequestLog(structlog.get_logger(), sampled_per_s=5, clock=lambda: now[0])
        _requests(log, 90)
        _requests(log, 10, status="429")
        now[0] += 1.0
        _requests(log, 3)
        log.summarise()
        log.summarise()  # nothing since: no line
    lines = [e for e in events if e["event"] == "simulator.request"]
    summaries = [e for e in events if e["event"] == "simulator.requests"]
    assert len(lines) == 5 + 3
    assert len(summaries) == 1
    assert summaries[0]["requests"] == 103
    assert summaries[0]["by_status"] == {"200": 93, "429": 10}
    assert summaries[0]["not_logged"] == 95
    assert summaries[0]["per_second"] == 103.0


def test_the_request_log_logs_every_line_when_asked() -> None:
    with structlog.testing.capture_logs() as events:
        log = RequestLog(structlog.get_logger(), every_request=True)
        _requests(log, 50)
    assert [e["event"] for e in events] == ["simulator.request"] * 50
