"""Requests of quota spent per scenario of issue 12, counted by the simulator (the server's truth).

    uv run python benchmarks/waste.py [--only outage-503,batch-limit,...] [--rate 1000/second]

Each scenario starts a simulator on a loopback port (in this process, its own thread), writes an
input and a job file, runs `batcher run` as a user would (a subprocess), and reads the
simulator's counters. Retry settings are the job file's defaults unless a scenario says so.

- outage-503: every request answered 503; 1,500 customers at 50 per request (30 planned
  requests); `give_up_after_seconds = 20`. Then the faults are lifted and `batcher resume`
  finishes the job: rows lost must be 0.
- outage-dropped: the same, but the server hangs up on every request without an answer.
- batch-limit: the server takes at most 10 customers per request (more: 400, code 1060);
  3,000 customers, `customers_per_request = 50`. Bound: 1.1 x 300 + 20 requests, <= 20 x 1060.
- random-503: 30% of requests answered 503 at random; 3,300 customers at 50 per request
  (66 planned). Bound: 1.25 x 66 / 0.7 requests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from batcher.simulator.profile import FaultSettings, Profile, profile_from_dict
from batcher.simulator.server import SimulatorThread

REPO = Path(__file__).resolve().parent.parent
ENV = {"CAPILLARY_USERNAME": "demo.till", "CAPILLARY_PASSWORD": "demo-password"}


@dataclass(frozen=True)
class Scenario:
    name: str
    customers: int
    profile: dict[str, Any]
    api: dict[str, Any]
    retry: dict[str, Any]
    bound: Callable[[int], float]  # planned requests -> most requests allowed
    resume: bool = False


SCENARIOS = [
    Scenario(
        "outage-503",
        1500,
        {"faults": {"server_error": 1.0, "server_error_statuses": [503]}},
        {},
        {"give_up_after_seconds": 20},
        lambda planned: planned,
        resume=True,
    ),
    Scenario(
        "outage-dropped",
        1500,
        {"faults": {"disconnect_before": 1.0}},
        {},
        {"give_up_after_seconds": 20},
        lambda planned: planned,
        resume=True,
    ),
    Scenario(
        "batch-limit",
        3000,
        {"max_customers_per_request": 10},
        {},
        {},
        lambda planned: 1.1 * math.ceil(3000 / 10) + 20,
    ),
    Scenario(
        "random-503",
        3300,
        {"faults": {"server_error": 0.3, "server_error_statuses": [503]}},
        {},
        {},
        lambda planned: 1.25 * planned / (1 - 0.3),
    ),
]


def _profile(extra: dict[str, Any], customers: int) -> Profile:
    data: dict[str, Any] = {"seed": 12, "state": {"customers": customers, "program_count": 1}}
    data.update(extra)
    return profile_from_dict(data)


def _toml(values: dict[str, Any]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_")}
    env.update(ENV)
    return subprocess.run(
        [sys.executable, "-m", "batcher.cli", *args, "--quiet", "--log-format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


def _counters(sim: SimulatorThread) -> dict[str, Any]:
    counters: dict[str, Any] = sim.snapshot(pairs=False)["counters"]
    return counters


def run_scenario(s: Scenario, rate: str, work: Path) -> dict[str, Any]:
    work.mkdir()
    mobiles = [f"9198{i:08d}" for i in range(s.customers)]
    pairs = pl.DataFrame({"mobile": mobiles, "partner_program_name": ["partner-01"] * s.customers})
    pairs.write_csv(work / "pairs.csv")
    api = {"rate": rate, "customers_per_request": 50, **s.api}
    job = work / "job.toml"
    job.write_text(
        f'name = "waste"\n[input]\npath = "pairs.csv"\n[api]\nbase_url = "BASE"\n{_toml(api)}'
        f'[retry]\n{_toml(s.retry)}[output]\ndir = "{work / "out"}"\n'
    )
    planned = math.ceil(s.customers / api["customers_per_request"])
    with SimulatorThread(_profile(s.profile, s.customers)) as sim:
        job.write_text(job.read_text().replace("BASE", sim.base_url))
        t0 = time.monotonic()
        result = _cli("run", str(job))
        elapsed_s = time.monotonic() - t0
        counters = _counters(sim)
        run_dir = next(p for p in (work / "out" / "waste").iterdir() if p.is_dir())
        summary = json.loads((run_dir / "summary.json").read_text())
        out: dict[str, Any] = {
            "scenario": s.name,
            "planned": planned,
            "requests": counters["delink_requests"],
            "bound": math.floor(s.bound(planned)),
            "answers_1060": _count_1060(s, counters),
            "exit": result.returncode,
            "seconds": round(elapsed_s, 1),
            "counts": summary["counts"],
            "learned": summary.get("learned_customers_per_request"),
            "stopped": summary.get("abort") or summary.get("stopped"),
        }
        if s.resume:
            sim.set_faults(FaultSettings())
            before = counters["delink_requests"]
            resumed = _cli("resume", str(run_dir))
            after = json.loads((run_dir / "summary.json").read_text())
            out["resume_requests"] = _counters(sim)["delink_requests"] - before
            out["resume_exit"] = resumed.returncode
            out["resume_counts"] = after["counts"]
            outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
            out["rows_lost"] = s.customers - outcomes.filter(pl.col("status") == "delinked").height
    return out


def _count_1060(s: Scenario, counters: dict[str, Any]) -> int | None:
    # The only 400 this profile answers is the batch limit's (code 1060).
    if "max_customers_per_request" not in s.profile:
        return None
    return int(counters["by_status"].get("400", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--rate", default="1000/second", help="the job's api.rate")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="batcher-waste-") as tmp:
        for s in chosen:
            figures = run_scenario(s, args.rate, Path(tmp) / s.name)
            ok = figures["requests"] <= figures["bound"]
            print(
                f"{s.name}: {figures['requests']} requests for {figures['planned']} planned "
                f"(bound {figures['bound']}: {'ok' if ok else 'OVER'})"
            )
            print("  " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
