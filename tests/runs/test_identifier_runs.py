"""Runs whose answers name the customer differently from the request: the CLI against the
simulator that stores mobiles with a country code (the rules themselves: send/test_placing.py).

The simulator's counters are the truth: each pair processed once (never resent for a mismatch),
delinked where it was linked, not linked where it was not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from batcher.cli import main
from batcher.simulator.server import SimulatorThread
from tests.conftest import (
    DEMO_ENV,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
    write_job,
)

PROGRAMS = ["partner-01", "partner-02", "partner-03"]


def _forms(i: int) -> str:
    """Customer i's mobile as a hand-off writes it: national, trunk 0, or international."""
    national = mobile(i)[2:]  # the simulator's customer i is 91 + 98xxxxxxxx
    return [national, "0" + national, "+91 " + national][i % 3]


def _run(tmp_path: Path, sim: SimulatorThread, rows: list[tuple[str, str]], **job: Any) -> Any:
    pl.DataFrame(rows, schema=["mobile", "partner_program_name"], orient="row").write_csv(
        tmp_path / "pairs.csv"
    )
    extra = ""
    if "country_code" in job:
        extra = f'default_country_code = "{job.pop("country_code")}"\n'
    path = write_job(tmp_path, sim.base_url, **job)
    path.write_text(
        path.read_text().replace('identifier = "mobile"\n', f'identifier = "mobile"\n{extra}')
    )
    return CliRunner().invoke(main, ["run", str(path), "--quiet"], env=DEMO_ENV)


def _truth(sim: SimulatorThread) -> dict[tuple[str, str], dict[str, Any]]:
    """The server's pairs, by (stored mobile, program)."""
    return {(p["mobile"], p["program"]): p for p in sim.snapshot()["pairs"]}


@pytest.mark.parametrize("country_code", [None, "91"])
def test_mixed_forms_end_delinked_or_not_linked_with_no_resend(
    tmp_path: Path, simulator: Sim, country_code: str | None
) -> None:
    sim = simulator(
        clean_profile(default_country_code="91", state={"customers": 2000, "link_probability": 0.6})
    )
    customers = range(150)
    rows = [(_forms(i), p) for i in customers for p in PROGRAMS]
    if country_code:  # the same customers again in another form: duplicates, never sent
        rows += [("0" + mobile(i)[2:], "partner-01") for i in range(0, 150, 3)]
        rows += [(mobile(i), "partner-02") for i in range(1, 150, 3)]
    job = {"country_code": country_code} if country_code else {}
    result = _run(tmp_path, sim, rows, **job)

    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "out")
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    truth = _truth(sim)
    sent = outcomes.filter(pl.col("status") != "duplicate")
    assert sent.height == len(customers) * len(PROGRAMS)
    for i, (status, program, api_identifier) in enumerate(
        sent.select("status", "partner_program_name", "api_identifier").iter_rows()
    ):
        served = truth[(mobile(i // 3), program)]
        # Each pair was processed once (no resend for a mismatch), and the file says what the
        # server did: delinked where there was a link, not linked where there was none.
        assert served["attempts"] == 1
        assert status == ("delinked" if served["delinked"] else "not_linked")
        assert api_identifier == mobile(i // 3)
    summary = read_summary(run_dir)
    counters = sim.snapshot(pairs=False)["counters"]
    # The plan's requests, and Basic auth's canary: the first customer alone (not a resend).
    assert (
        counters["delink_requests"] == summary["requests_planned"] + 1 == summary["requests_sent"]
    )
    assert summary["unmatched_answers"] == 0
    assert sim.still_linked("mobile", [(mobile(i), p) for i in customers for p in PROGRAMS]) == []
    if country_code:
        dupes = outcomes.filter(pl.col("status") == "duplicate")
        assert dupes.height == 100
        assert set(dupes["sent_identifier"]) == {mobile(i) for i in range(150) if i % 3 != 2}
        assert dupes["duplicate_of"].head(2).to_list() == [1, 10]
        assert outcomes["sent_identifier"].head(3).to_list() == [mobile(0)] * 3
    else:
        assert outcomes["sent_identifier"].head(3).to_list() == [_forms(0)] * 3


def test_one_customer_requests_place_answers_that_name_only_the_id(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(
        clean_profile(answer_identifiers="id", state={"customers": 2000, "link_probability": 0.5})
    )
    rows = [(mobile(i), p) for i in range(20) for p in PROGRAMS[:2]]
    result = _run(tmp_path, sim, rows, api={"customers_per_request": 1})

    assert result.exit_code == 0, result.output
    outcomes = pl.read_parquet(only_run_dir(tmp_path / "out") / "outcomes.parquet")
    truth = _truth(sim)
    for m, program, status, cid in outcomes.select(
        "mobile", "partner_program_name", "status", "customer_id"
    ).iter_rows():
        assert truth[(m, program)]["attempts"] == 1
        assert status == ("delinked" if truth[(m, program)]["delinked"] else "not_linked")
        assert cid == truth[(m, program)]["id"]
    assert outcomes["api_identifier"].null_count() == outcomes.height  # none came back


def test_run_stops_early_when_most_answers_match_no_customer_sent(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(clean_profile(answer_identifiers="id"))
    rows = [(mobile(i), "partner-01") for i in range(2000)]
    result = _run(tmp_path, sim, rows, api={"customers_per_request": 10, "max_in_flight": 2})

    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "names customers differently" in text and "input.default_country_code" in text
    run_dir = only_run_dir(tmp_path / "out")
    summary = read_summary(run_dir)
    counters = sim.snapshot(pairs=False)["counters"]
    # 200 planned requests; it stops after 200 answered pairs (20 requests) and what was in flight.
    assert 20 <= counters["delink_requests"] == summary["requests_sent"] <= 24
    # Basic auth's canary carried one customer and got one back: placed one-for-one.
    assert summary["unmatched_answers"] == counters["customers"] - 1
    assert summary["counts"]["retryable"] == 1999 and summary["counts"]["delinked"] == 1
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    sent = outcomes.filter(pl.col("code").is_null() & pl.col("note").is_not_null())
    assert sent.height == counters["customers"] - 1
    assert sent["note"][0].startswith("the answer named no mobile (id 1000")
    # Nothing was sent twice: a mismatch is never resent.
    assert max(p["attempts"] for p in sim.snapshot()["pairs"]) == 1


def test_emails_answered_in_stored_case_are_placed(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile(stored_email_case="mixed"))
    pl.DataFrame(
        {
            "email": [f"customer{i}@example.com" for i in range(30)],
            "partner_program_name": "partner-01",
        }
    ).write_csv(tmp_path / "pairs.csv")
    path = write_job(tmp_path, sim.base_url)
    path.write_text(path.read_text().replace('identifier = "mobile"', 'identifier = "email"'))
    result = CliRunner().invoke(main, ["run", str(path), "--quiet"], env=DEMO_ENV)

    assert result.exit_code == 0, result.output
    outcomes = pl.read_parquet(only_run_dir(tmp_path / "out") / "outcomes.parquet")
    assert set(outcomes["status"]) == {"delinked"}
    assert outcomes["api_identifier"][7] == "Customer7@Example.com"
    assert outcomes["sent_identifier"][7] == "customer7@example.com"
