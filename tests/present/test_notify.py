"""[notify]: one Apprise message per run, to a real JSON webhook on loopback; secrets stay out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import batcher
from batcher.present import notify
from tests.conftest import DEMO_ENV, Sim, clean_profile, write_job, write_pairs
from tests.loopback import Receiver

PROGRAMS = ["partner-01", "partner-02"]
TOKEN = "hook-s3cret-7f1d"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setattr(notify, "BACKOFF_S", 0.01)


def notify_section(receiver: Receiver, on: list[str] | None = None) -> str:
    text = f'[notify]\nurls = ["json://127.0.0.1:{receiver.port}/hook/${{HOOK_TOKEN}}"]\n'
    return text + (f"on = {json.dumps(on)}\n" if on is not None else "")


def fields(body: bytes) -> dict[str, str]:
    message = json.loads(body)["message"]
    return dict(line.split(": ", 1) for line in message.splitlines())


def test_a_run_sends_exactly_one_message_with_its_counts(
    tmp_path: Path, simulator: Sim, receiver: Receiver
) -> None:
    sim = simulator(clean_profile(state={"customers": 8, "program_count": 2}))
    write_pairs(tmp_path / "pairs.csv", range(10), PROGRAMS)
    job = write_job(tmp_path, sim.base_url, extra=notify_section(receiver))

    result = batcher.run_job(job)

    assert result.exit_code == 1
    assert len(receiver.requests) == 1
    sent = receiver.requests[0]
    assert sent.method == "POST" and sent.path == f"/hook/{TOKEN}"  # ${HOOK_TOKEN} expanded
    got = fields(sent.body)
    assert got["job"] == "e2e" and got["run"] == result.run_id and got["event"] == "finished"
    assert got["exit code"] == "1" and got["folder"] == str(result.run_dir)
    assert int(got["delinked"]) == 16 and int(got["failed"]) == 4
    assert result.summary.org is not None and got["org"] == str(result.summary.org["org_id"])
    assert "elapsed seconds" in got
    # The secret reached the webhook and nothing else: job copy, manifest, summary, log.
    assert "${HOOK_TOKEN}" in (result.run_dir / "job.toml").read_text()
    for path in result.run_dir.iterdir():
        if path.suffix in (".json", ".jsonl", ".toml", ".html", ".csv"):
            assert TOKEN not in path.read_text(), path.name


def test_an_undeliverable_message_is_retried_and_changes_nothing(
    tmp_path: Path, simulator: Sim, receiver: Receiver
) -> None:
    receiver.status = 500
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(tmp_path, sim.base_url, extra=notify_section(receiver))

    result = batcher.run_job(job)

    assert result.exit_code == 0 and result.counts["delinked"] == 10
    assert len(receiver.requests) == notify.ATTEMPTS
    log = (result.run_dir / "run.log.jsonl").read_text()
    assert log.count('"notify.failed"') == notify.ATTEMPTS and TOKEN not in log


def test_a_run_that_fails_to_start_says_so_and_still_raises(
    tmp_path: Path, receiver: Receiver
) -> None:
    job = write_job(tmp_path, "simulator", input_path="missing.csv", extra=notify_section(receiver))

    with pytest.raises(batcher.InputError):
        batcher.run_job(job)

    assert len(receiver.requests) == 1
    got = fields(receiver.requests[0].body)
    assert got["event"] == "failed" and got["exit code"] == "2" and "missing.csv" in got["error"]


def test_events_not_listed_in_on_send_nothing(
    tmp_path: Path, simulator: Sim, receiver: Receiver
) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(5), PROGRAMS)
    job = write_job(tmp_path, sim.base_url, extra=notify_section(receiver, on=["failed"]))

    assert batcher.run_job(job).exit_code == 0
    assert receiver.requests == []


def test_a_missing_variable_skips_the_url_and_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOOK_TOKEN")
    with pytest.raises(notify.MissingVariable, match="HOOK_TOKEN"):
        notify.expand("json://127.0.0.1:1/${HOOK_TOKEN}")


def test_notify_keys_are_checked_like_every_other_key(tmp_path: Path) -> None:
    job = write_job(tmp_path, "simulator", extra='[notify]\non = ["done"]\n')
    with pytest.raises(batcher.JobError, match=r"notify\.on.*finished"):
        batcher.validate_job(job)
