"""Logs and outputs: masked mobiles and emails, no secret anywhere a run writes or prints."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
import structlog

from batcher.present import logs
from batcher.send.contract import basic_header
from tests.conftest import Sim, clean_profile, only_run_dir, run_cli, write_job

PASSWORD = "demo-password"
PASSWORD_MD5 = hashlib.md5(PASSWORD.encode()).hexdigest()
CLIENT_SECRET = "demo-secret"
BASIC_HEADER = basic_header("demo.till", PASSWORD_MD5).removeprefix("Basic ")
# The simulator's token format (batcher/simulator/server.py): a JWT-looking header, claims, sha256.
TOKEN_RE = re.compile(r"eyJhbGciOiJIUzI1NiJ9\.[A-Za-z0-9_-]+\.[0-9a-f]{64}")
UNMASKED_MOBILE_RE = re.compile(r"(?<![0-9])9198[0-9]{8}(?![0-9])")
UNMASKED_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]{2,}@example\.com")


def test_mask_text_masks_mobiles_and_emails() -> None:
    assert logs.mask_text("919800000012") == "91******0012"
    assert logs.mask_text("+919800000012") == "91******0012"
    assert logs.mask_text("john.doe@example.com") == "j***@example.com"
    assert logs.mask_text("row 12 of 3000") == "row 12 of 3000"


def test_privacy_filter_drops_secret_keys_blanks_secret_values_masks_nested() -> None:
    event = {
        "event": "request.sent",
        "request_id": "abc-919800000012",
        "Authorization": "Basic xyz",
        "password": "p",
        "headers": {"X-CAP-API-OAUTH-TOKEN": "t", "Accept": "application/json"},
        "note": "customer 919800000012 (john@example.com) said s3cret-value",
        "items": [{"mobile": "919800000099"}],
    }
    out = logs.PrivacyFilter(["s3cret-value"])(None, "info", dict(event))
    assert "Authorization" not in out and "password" not in out
    assert out["headers"] == {"Accept": "application/json"}
    assert out["note"] == "customer 91******0012 (j***@example.com) said <redacted>"
    assert out["items"] == [{"mobile": "91******0099"}]
    assert out["request_id"] == "abc-919800000012"  # ours, not a customer's


def test_every_event_carries_job_and_run_id_and_reaches_the_run_log(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(log_format="json", stream=stream)
    logs.bind(job="j", run_id="r1")
    logs.open_run_log(tmp_path / "run.log.jsonl", ["topsecret"])
    try:
        structlog.get_logger("t").info("request.retry", request_id="q1", detail="topsecret 9198")
    finally:
        logs.close_run_log()
        structlog.contextvars.clear_contextvars()
    for line in (stream.getvalue(), (tmp_path / "run.log.jsonl").read_text()):
        event = json.loads(line.strip().splitlines()[-1])
        assert (event["job"], event["run_id"], event["request_id"]) == ("j", "r1", "q1")
        assert "topsecret" not in line


def _scan_texts(run_dir: Path, stdout: str, stderr: str) -> dict[str, str]:
    """Every file of the run as text (Parquet decoded too: its pages may be compressed)."""
    texts = {"stdout": stdout, "stderr": stderr}
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        texts[path.name] = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".parquet":
            texts[path.name + " (decoded)"] = pl.read_parquet(path).write_csv()
    return texts


@pytest.mark.parametrize("auth", ["basic", "oauth"])
def test_no_secret_or_unmasked_pii_in_any_output(tmp_path: Path, simulator: Sim, auth: str) -> None:
    # A short token life so the run refreshes at least once: more tokens to leak.
    sim = simulator(clean_profile(auth={"token_ttl_seconds": 1}))
    lines = ["mobile,partner_program_name,email"]
    lines += [f"9198{i:08d},partner-01,customer{i}@example.com" for i in range(40)]
    lines += ["919899999999,partner-01,nobody@example.com"]  # unknown customer: 8015
    lines += ["9.198E+11,partner-01,x@example.com"]  # rejected
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    job = write_job(
        tmp_path,
        sim.base_url,
        api={"auth": auth, "rate": "40/second", "customers_per_request": 2},
    )

    result = run_cli("run", str(job), "--log-format", "json")

    assert result.returncode == 1, result.stderr  # one failed, one rejected
    run_dir = only_run_dir(tmp_path / "out")
    assert (run_dir / "run.log.jsonl").stat().st_size > 0
    snapshot = sim.snapshot(pairs=False)
    tokens = list(getattr(sim.simulator, "_tokens", {}))
    if auth == "oauth":
        assert snapshot["counters"]["tokens_issued"] >= 1
    forbidden = [PASSWORD, PASSWORD_MD5, CLIENT_SECRET, BASIC_HEADER, *tokens]
    for name, text in _scan_texts(run_dir, result.stdout, result.stderr).items():
        for secret in forbidden:
            assert secret not in text, f"{name} holds a secret"
        assert not TOKEN_RE.search(text), f"{name} holds a token"
    # Logs never name a customer: the identifiers of the input appear only masked.
    for name, text in (
        ("stderr", result.stderr),
        ("run.log.jsonl", (run_dir / "run.log.jsonl").read_text()),
    ):
        assert not UNMASKED_MOBILE_RE.search(text), name
        assert not UNMASKED_EMAIL_RE.search(text), name
