"""send/sender.py: the loop itself, driven as execute drives it, against the simulator.

No private attribute is touched: a plan goes in, a `SendResult` and the journal come out, and
an event hook sees what happened. The simulator's counters are the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from batcher.job import Job, load_job
from batcher.plan import build_plan
from batcher.results.journal import Journal, read_journal
from batcher.send import events as ev
from batcher.send.auth import Authenticator, credentials_from_env
from batcher.send.sender import Sender, SendResult
from batcher.send.session import make_session
from tests.conftest import DEMO_ENV, mobile, write_job
from tests.simulator_support import profile, running

PROGRAMS = ["partner-01", "partner-02", "partner-03"]


def pairs_of(customers: int) -> pl.DataFrame:
    rows = [(mobile(i), p) for i in range(customers) for p in PROGRAMS]
    return pl.DataFrame(
        {
            "_key": range(len(rows)),
            "_customer": [c for c, _ in rows],
            "_program": [p for _, p in rows],
        },
        schema={"_key": pl.Int64, "_customer": pl.String, "_program": pl.String},
    )


async def send(
    tmp_path: Path, base_url: str, job: Job, pairs: pl.DataFrame, hooks: list[ev.Hook]
) -> tuple[SendResult, pl.DataFrame]:
    plan = build_plan(pairs, job.api.customers_per_request, job.api.programs_per_customer)
    journal = Journal(tmp_path / "journal.jsonl")
    sender = Sender(job, plan.iter_requests(job.input.identifier), journal, hooks=hooks)
    auth = Authenticator(credentials_from_env("basic", DEMO_ENV), base_url, refresh_margin_s=0)
    try:
        async with make_session(job) as session:
            result = await sender.run(session, base_url, auth)
    finally:
        journal.close()
    hooks.clear()
    return result, read_journal(journal.path)


async def test_every_pair_sent_is_journalled_once_as_the_server_answered(tmp_path: Path) -> None:
    heard: list[Any] = []
    async with running(profile(state={"customers": 60, "link_probability": 0.7})) as c:
        job = load_job(write_job(tmp_path, c.sim.base_url, api={"customers_per_request": 7}))
        result, journal = await send(tmp_path, c.sim.base_url, job, pairs_of(60), [heard.append])
        snap = await c.state()

    assert (result.stop_reason, result.abort) == (None, None)
    assert journal.height == 180 and journal.get_column("k").n_unique() == 180
    served = {(p["mobile"], p["program"]): p for p in snap["pairs"]}
    for customer, program, status in journal.select("cu", "pr", "s").iter_rows():
        pair = served.get((customer, program))
        assert status == ("delinked" if pair and pair["delinked"] else "not_linked")
        assert pair is None or pair["attempts"] == 1
    # The result's figures and the hook heard the same requests as the server.
    requests = snap["counters"]["delink_requests"]
    # Basic auth: a one-customer canary names the org first, then 59 customers 7 a request.
    assert requests == 1 + 9 == result.stats.requests
    assert sum(isinstance(e, ev.RequestSent) for e in heard) == requests
    assert [type(e) for e in heard if isinstance(e, ev.SendingStarted | ev.SendingEnded)] == [
        ev.SendingStarted,
        ev.SendingEnded,
    ]


async def test_a_stop_takes_no_new_work_and_journals_nothing_unsent(tmp_path: Path) -> None:
    async with running(profile(state={"customers": 200}, latency={"fixed_ms": 20})) as c:
        job = load_job(
            write_job(
                tmp_path, c.sim.base_url, api={"customers_per_request": 2, "max_in_flight": 2}
            )
        )
        stopper: list[Sender] = []

        def stop_after_three(event: object) -> None:
            answered = isinstance(event, ev.Answered)
            if answered and stopper and stopper[0].stats.requests >= 3:
                stopper[0].stop("asked to")

        plan = build_plan(pairs_of(200), 2, job.api.programs_per_customer)
        journal = Journal(tmp_path / "journal.jsonl")
        sender = Sender(job, plan.iter_requests("mobile"), journal, hooks=[stop_after_three])
        stopper.append(sender)
        auth = Authenticator(
            credentials_from_env("basic", DEMO_ENV), c.sim.base_url, refresh_margin_s=0
        )
        async with make_session(job) as session:
            result = await sender.run(session, c.sim.base_url, auth)
        journal.close()
        snap = await c.state()

    assert result.stop_reason == "asked to" and result.abort is None
    sent = snap["counters"]["delink_requests"]
    assert 3 <= sent <= 5  # the third answer, and at most the two in flight with it
    journalled = read_journal(tmp_path / "journal.jsonl")
    attempted = {(p["mobile"], p["program"]) for p in snap["pairs"] if p["attempts"]}
    assert set(zip(journalled["cu"], journalled["pr"], strict=True)) == attempted
    assert journalled.height == len(attempted) < 200 * len(PROGRAMS)
