"""National mobiles: the job's default_country_code, the simulator that resolves them, validate's
warning. (Matching answers that name the customer differently: send/test_placing.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.cli import main
from batcher.errors import JobError
from batcher.input.source import NationalMobiles, validate_rows
from batcher.job import load_job
from batcher.simulator.state import resolve_mobile
from tests.conftest import only_run_dir
from tests.simulator_support import body, profile, running

JOB = """
name = "t"
[input]
path = "in.csv"
{input}
[api]
base_url = "simulator"
"""


def _job(tmp_path: Path, input_keys: str = "", rows: list[str] | None = None) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(JOB.format(input=input_keys))
    lines = rows if rows is not None else ["919800000001"]
    (tmp_path / "in.csv").write_text(
        "mobile,partner_program_name\n" + "".join(f"{m},partner-01\n" for m in lines)
    )
    return path


def _validate(mobiles: list[str], national: NationalMobiles | None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "_key": list(range(len(mobiles))),
            "row": list(range(1, len(mobiles) + 1)),
            "source_file": ["in.csv"] * len(mobiles),
            "mobile": mobiles,
            "partner_program_name": ["partner-01"] * len(mobiles),
        },
        schema_overrides={"_key": pl.Int64, "row": pl.Int64},
    )
    return validate_rows(frame, "mobile", "mobile", "partner_program_name", national)


# --- the job keys -----------------------------------------------------------------------------


def test_country_code_and_national_length_are_read_with_defaults(tmp_path: Path) -> None:
    assert load_job(_job(tmp_path)).input.default_country_code is None
    job = load_job(_job(tmp_path, 'default_country_code = "91"\nnational_mobile_digits = 9'))
    assert job.input.default_country_code == "91"
    assert job.input.national_mobile_digits == 9
    assert job.settings_for_display()["input"]["default_country_code"] == "91"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('default_country_code = "+91"', "'input.default_country_code' has a bad value"),
        ("default_country_code = 91", "'input.default_country_code' has the wrong type"),
        ('default_country_code = "091"', "'input.default_country_code' has a bad value"),
        ("national_mobile_digits = 20", "'input.national_mobile_digits' has a bad value"),
        (
            'identifier = "email"\ndefault_country_code = "91"',
            "'input.default_country_code' applies to mobiles only",
        ),
    ],
)
def test_bad_country_code_keys_are_one_paragraph_exit_2(
    tmp_path: Path, keys: str, expected: str
) -> None:
    with pytest.raises(JobError, match=expected):
        load_job(_job(tmp_path, keys))
    result = CliRunner().invoke(main, ["validate", str(_job(tmp_path, keys))])
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


# --- normalisation ----------------------------------------------------------------------------


def test_every_form_of_one_mobile_is_one_customer_with_the_country_code() -> None:
    forms = ["9800000001", "09800000001", "+91 98000 00001", "919800000001", "(0)98000-00001"]
    rows = _validate([*forms, "9800000002"], NationalMobiles("91"))
    assert rows["_customer"].to_list() == ["919800000001"] * 5 + ["919800000002"]
    assert rows["status"].to_list() == ["valid", *["duplicate"] * 4, "valid"]
    assert rows["duplicate_of"].to_list() == [None, 1, 1, 1, 1, None]
    # The user's column is left as written.
    assert rows["mobile"].to_list()[:5] == forms


def test_without_a_country_code_mobiles_are_sent_as_written() -> None:
    rows = _validate(["9800000001", "09800000001", "+91 98000 00001"], None)
    assert rows["_customer"].to_list() == ["9800000001", "09800000001", "919800000001"]
    assert rows["status"].to_list() == ["valid"] * 3


def test_only_national_lengths_are_completed() -> None:
    # 9 and 12 digits are not national at length 10; a 10-digit number starting with 0 is a
    # trunk 0 and 9 digits, not a national number; 13 digits with a trunk 0 are too long.
    mobiles = ["980000001", "919800000001", "0980000000", "0919800000001", "8800000001"]
    rows = _validate(mobiles, NationalMobiles("44", digits=10))
    assert rows["_customer"].to_list() == [
        "980000001",
        "919800000001",
        "0980000000",
        "0919800000001",
        "448800000001",
    ]


def test_completion_comes_before_the_length_check() -> None:
    # 7 national digits are too short to send, but 1234 + 7 digits are fine.
    rows = _validate(["5550001", "05550001"], NationalMobiles("1234", digits=7))
    assert rows["_customer"].to_list() == ["12345550001", "12345550001"]
    assert rows["status"].to_list() == ["valid", "duplicate"]


@settings(max_examples=60, deadline=None)
@given(
    national=st.integers(10**9, 10**10 - 1).map(str),
    style=st.sampled_from(["{n}", "0{n}", "+91 {n}", "91{n}", "+91-{a}-{b}", "0 {a} {b}"]),
)
def test_property_any_spelling_sends_country_code_and_national_number(
    national: str, style: str
) -> None:
    written = style.format(n=national, a=national[:5], b=national[5:])
    rows = _validate([written], NationalMobiles("91"))
    assert rows["_customer"].to_list() == ["91" + national]
    # The simulator resolves the same spellings (digits only) to the same stored form.
    digits = "".join(c for c in written if c.isdigit())
    assert resolve_mobile(digits, "91", 10) == "91" + national


def test_run_sends_the_full_form_and_keeps_both_in_outcomes(tmp_path: Path) -> None:
    """Through the CLI and the embedded simulator: one send per customer, both forms recorded."""
    profile_path = tmp_path / "sim.toml"
    profile_path.write_text("seed = 1\n[state]\ncustomers = 10\nprogram_count = 2\n")
    job = _job(
        tmp_path,
        'default_country_code = "91"\n',
        rows=["9800000001", "09800000001", "+91 98000 00002"],
    )
    job.write_text(
        job.read_text() + f'[output]\ndir = "{tmp_path / "out"}"\n'
        f'[simulator]\nprofile = "{profile_path.name}"\n'
    )
    result = CliRunner().invoke(main, ["run", str(job), "--quiet"])
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "out", "t")
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes["mobile"].to_list() == ["9800000001", "09800000001", "+91 98000 00002"]
    assert outcomes["sent_identifier"].to_list() == ["919800000001"] * 2 + ["919800000002"]
    assert outcomes["status"].to_list() == ["delinked", "duplicate", "delinked"]
    assert outcomes["api_identifier"].to_list() == ["919800000001", None, "919800000002"]
    summary = json.loads((run_dir / "summary.json").read_text())
    # One send per customer: Basic auth's canary (one customer alone), then the other.
    assert summary["requests_sent"] == 2


# --- the simulator ----------------------------------------------------------------------------


async def test_simulator_resolves_national_mobiles_and_answers_the_stored_form() -> None:
    prof = profile(default_country_code="91")
    async with running(prof) as client:
        status, _, answer = await client.delink(
            body(("9800000001", ["partner-01"]), ("09800000002", ["partner-01"]))
        )
        assert status == 200
        customers = answer["customersPartnerUpdates"]
        assert [c["customer"]["mobile"] for c in customers] == ["919800000001", "919800000002"]
        assert [c["customer"]["id"] for c in customers] == [10000001, 10000002]
        codes = [c["partnerProgramUpdates"][0]["updateStatus"]["code"] for c in customers]
        assert codes == [200, 200]
        # The same customer in full form is the same pair on the server: now not linked.
        _, _, again = await client.delink(body(("919800000001", ["partner-01"])))
        item = again["customersPartnerUpdates"][0]["partnerProgramUpdates"][0]
        assert item["updateStatus"]["code"] == 2004
        state = await client.state()
        pair = next(p for p in state["pairs"] if p["id"] == 10000001)
        assert (pair["attempts"], pair["delinked"]) == (2, 1)


async def test_simulator_without_a_country_code_does_not_know_national_mobiles() -> None:
    async with running(profile()) as client:
        _, _, answer = await client.delink(body(("9800000001", ["partner-01"])))
        assert answer["customersPartnerUpdates"][0]["customer"]["status"]["code"] == 8015


async def test_simulator_answers_emails_in_stored_case() -> None:
    prof = profile(stored_email_case="mixed")
    async with running(prof) as client:
        _, _, answer = await client.delink(
            body(("CUSTOMER3@example.COM", ["partner-01"]), identifier="email")
        )
        customer = answer["customersPartnerUpdates"][0]["customer"]
        assert customer["email"] == "Customer3@Example.com"
        assert customer["status"]["code"] == 1000


def test_simulator_profile_refuses_a_bad_country_code() -> None:
    with pytest.raises(JobError, match="default_country_code"):
        profile(default_country_code="+91")


# --- validate's warning -----------------------------------------------------------------------


def test_validate_warns_when_mobiles_look_national_and_no_country_code(tmp_path: Path) -> None:
    national = [f"98{i:08d}" for i in range(1234)] + ["09800000001"]
    job = _job(tmp_path, rows=[*national, "919800000001"])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["validate", str(job), "--output", str(out)])
    assert result.exit_code == 0, result.output
    expected = (
        "1,235 mobiles look national (10 digits); the API will complete them with the org's "
        "country code: set input.default_country_code to send them in full"
    )
    assert expected in " ".join(result.output.split())
    run_dir = only_run_dir(out, "t")
    assert json.loads((run_dir / "summary.json").read_text())["warnings"] == [expected]


def test_validate_does_not_warn_with_a_country_code_or_full_numbers(tmp_path: Path) -> None:
    for keys, rows in (('default_country_code = "91"', ["9800000001"]), ("", ["919800000001"])):
        out = tmp_path / "out"
        job = _job(tmp_path, keys, rows=rows)
        result = CliRunner().invoke(main, ["validate", str(job), "--output", str(out)])
        assert result.exit_code == 0, result.output
        assert "national" not in result.output


def test_run_repeats_validates_warning_about_national_mobiles(tmp_path: Path) -> None:
    job = _job(tmp_path, rows=["9800000001", "919800000002"])
    job.write_text(job.read_text() + f'[output]\ndir = "{tmp_path / "out"}"\n')
    result = CliRunner().invoke(main, ["run", str(job), "--quiet"])
    text = " ".join(result.output.split())
    assert "warning: 1 mobile looks national (10 digits)" in text
    summary = json.loads((only_run_dir(tmp_path / "out", "t") / "summary.json").read_text())
    assert summary["warnings"][0].startswith("1 mobile looks national (10 digits); the API")
