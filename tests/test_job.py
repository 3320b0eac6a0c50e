"""Job files: every mistake is one clear paragraph naming file and key, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batcher.cli import main
from batcher.errors import JobError
from batcher.job import load_job
from tests.conftest import run_cli

GOOD = """
name = "t"
[input]
path = "in.csv"
[api]
base_url = "simulator"
"""


def write_job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    (tmp_path / "in.csv").write_text("mobile,partner_program_name\n919800000001,partner-01\n")
    return path


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, GOOD))
    assert job.input.identifier == "mobile"
    assert job.input.identifier_column == "mobile"
    assert job.input.program_column == "partner_program_name"
    assert job.api.customers_per_request == 50
    assert job.input_pattern() == tmp_path / "in.csv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "colour = 1\n", "'api.colour' is not a known key"),
        (GOOD + 'customers_per_request = "50"\n', "'api.customers_per_request' has the wrong"),
        (GOOD + "customers_per_request = 0\n", "'api.customers_per_request' has a bad value"),
        (GOOD + 'rate = "fast"\n', "'api.rate' has a bad value"),
        (GOOD + 'password = "hunter2"\n', "looks like a secret"),
        (GOOD + '[simulator]\nprofile = "missing.toml"\n', "names a file that does not exist"),
        ('name = "../x"\n' + GOOD.split("\n", 2)[2], "key 'name' has a bad value"),
    ],
)
def test_bad_job_is_one_paragraph_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    job = write_job(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert expected in result.output
    assert str(job) in result.output
    assert "Traceback" not in result.output


def test_bad_identifier_names_allowed_values(tmp_path: Path) -> None:
    text = GOOD.replace('path = "in.csv"', 'path = "in.csv"\nidentifier = "phone"')
    job = write_job(tmp_path, text)
    with pytest.raises(JobError, match=r"input.identifier.*mobile, email, externalId, id"):
        load_job(job)


def test_missing_job_file_is_exit_2_without_traceback(tmp_path: Path) -> None:
    proc = run_cli("validate", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_secret_key_points_at_the_environment(tmp_path: Path) -> None:
    proc = run_cli("validate", str(write_job(tmp_path, GOOD + 'client_secret = "x"\n')))
    assert proc.returncode == 2
    assert "CAPILLARY_" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:s3cr3t-pw@127.0.0.1:9", "user name or password"),
        ("https://ops@eu.api.capillarytech.com", "user name or password"),
        ("https://eu.api.capillarytech.com?key=s3cr3t-pw", "query"),
        ("https://eu.api.capillarytech.com/?", "query"),
        ("https://eu.api.capillarytech.com#s3cr3t-pw", "fragment"),
    ],
)
@pytest.mark.parametrize("where", ["job file", "--base-url"])
def test_base_url_with_userinfo_query_or_fragment_is_refused_and_nothing_written(
    tmp_path: Path, url: str, expected: str, where: str
) -> None:
    """A password in base_url would end in summary.json, job.toml and manifest.json: refuse it."""
    good = GOOD.replace('base_url = "simulator"', 'base_url = "http://127.0.0.1:9"')
    text = good.replace("http://127.0.0.1:9", url) if where == "job file" else good
    job = write_job(tmp_path, text + f'[output]\ndir = "{tmp_path / "out"}"\n')
    args = ["run", str(job)] + (["--base-url", url] if where == "--base-url" else [])

    result = CliRunner().invoke(
        main, args, env={"CAPILLARY_USERNAME": "u", "CAPILLARY_PASSWORD": "p"}
    )

    assert result.exit_code == 2, result.output
    assert "api.base_url" in result.output and expected in result.output
    assert "s3cr3t-pw" not in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()


def test_a_misspelt_section_lists_the_allowed_sections(tmp_path: Path) -> None:
    job = write_job(tmp_path, GOOD + "[retyr]\nmax_attempts = 3\n")

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 2
    assert "[retyr]" in result.output
    for section in ("[input]", "[api]", "[retry]", "[output]", "[simulator]"):
        assert section in result.output
    assert "did you mean [retry]" in result.output
    assert "Traceback" not in result.output


def test_give_up_after_seconds_defaults_to_ten_minutes_and_must_be_positive(
    tmp_path: Path,
) -> None:
    assert load_job(write_job(tmp_path, GOOD)).retry.give_up_after_s == 600.0
    job = load_job(write_job(tmp_path, GOOD + "[retry]\ngive_up_after_seconds = 20\n"))
    assert job.retry.give_up_after_s == 20.0
    with pytest.raises(JobError, match=r"retry.give_up_after_seconds.*positive number"):
        load_job(write_job(tmp_path, GOOD + "[retry]\ngive_up_after_seconds = 0\n"))
