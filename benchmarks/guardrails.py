"""Requests the API sees in each guardrail scenario, counted by the simulator (README, Safety).

    uv run python benchmarks/guardrails.py

Each scenario runs `batcher run` in-process against the simulator on a loopback port and prints
its exit code and the delink requests the server counted (all requests: the OAuth token too).
300 customers x 1 program is 6 planned requests; the unknown-program file is 10,000 rows, 200
planned requests.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batcher.cli import main
from batcher.simulator.server import SimulatorThread
from tests.conftest import DEMO_ENV, clean_profile, mobile, write_job, write_pairs


def scenario(
    name: str,
    profile: dict[str, Any],
    rows: Callable[[Path], object],
    api: dict[str, Any],
    args: tuple[str, ...] = (),
) -> None:
    with tempfile.TemporaryDirectory() as folder, SimulatorThread(clean_profile(**profile)) as sim:
        where = Path(folder)
        rows(where / "pairs.csv")
        job = write_job(where, sim.base_url, api=api)
        result = CliRunner().invoke(main, ["run", str(job), "--quiet", *args], env=DEMO_ENV)
        counters = sim.snapshot(pairs=False)["counters"]
        print(
            f"{name:<40} exit {result.exit_code} · delink requests "
            f"{counters['delink_requests']:>3} · all requests {counters['requests']:>3}"
        )


def small(path: Path) -> None:
    write_pairs(path, range(300), ["partner-01"])


def unknown_program(path: Path) -> None:
    lines = "".join(f"{mobile(i)},Gold Club\n" for i in range(10_000))
    path.write_text("mobile,partner_program_name\n" + lines)


def main_() -> None:
    wrong = {"org_id": 100}
    expect = {"expect_org_id": 200}
    scenario("OAuth token of org 100, expected 200", wrong, small, {"auth": "oauth", **expect})
    scenario("Basic canary of org 100, expected 200", wrong, small, {"auth": "basic", **expect})
    scenario("Basic, the expected org", {"org_id": 200}, small, {"auth": "basic", **expect})
    scenario("Basic, no org_id header", {"org_headers": False}, small, {"auth": "basic", **expect})
    scenario("10,000 rows of an unknown program", {}, unknown_program, {"auth": "basic"})
    scenario("--max-pairs 100, 300 pairs", {}, small, {"auth": "basic"}, ("--max-pairs", "100"))


if __name__ == "__main__":
    main_()
