"""Security (issue 7): secrets only from the environment, owner-only outputs, no escaping the
output folder, no plain http to a remote host. The secrets scan of a run's files and streams is
tests/present/test_logs.py (and tests/test_soak.py runs it on the soak)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from batcher.errors import JobError
from batcher.job import load_job
from tests.conftest import Sim, clean_profile, only_run_dir, run_cli, write_job, write_pairs


def _job(
    tmp_path: Path, *, name: str = "sec", top: str = "", api: str = "", base_url: str = "simulator"
) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(
        f'name = "{name}"\n{top}[input]\npath = "pairs.csv"\n'
        f'[api]\nbase_url = "{base_url}"\n{api}[output]\ndir = "{tmp_path / "out"}"\n'
    )
    return path


@pytest.mark.parametrize(
    ("top", "api"),
    [
        ("", 'password = "hunter2"\n'),
        ("", 'client_secret = "s"\n'),
        ("", 'api_key = "k"\n'),
        ("", 'token = "t"\n'),
        ('password = "hunter2"\n', ""),
    ],
)
def test_a_secret_in_a_job_file_is_refused_with_where_secrets_go(
    tmp_path: Path, top: str, api: str
) -> None:
    with pytest.raises(JobError) as e:
        load_job(_job(tmp_path, top=top, api=api))
    text = str(e.value) + " " + str(e.value.hint)
    assert "secret" in text and "environment" in text
    assert "CAPILLARY_" in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    "name",
    [
        "../escape",
        "..",
        "a/../../b",
        "/etc/passwd",
        "/tmp/abs",
        "a/b",
        "a\\b",
        ".hidden",
        "",
        "~root",
        "x" * 101,
        "nul\x00name",
    ],
)
def test_a_job_name_that_would_escape_the_output_folder_is_refused(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / "job.toml"
    safe = name.replace("\\", "\\\\").replace("\x00", "\\u0000")
    path.write_text(
        f'name = "{safe}"\n[input]\npath = "pairs.csv"\n[api]\nbase_url = "simulator"\n'
        f'[output]\ndir = "{tmp_path / "out"}"\n'
    )
    with pytest.raises(JobError, match="name"):
        load_job(path)


def test_cli_overrides_cannot_escape_the_output_folder_through_the_name(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("mobile,partner_program_name\n919800000001,partner-01\n")
    result = run_cli("validate", str(_job(tmp_path, name="../../escape")))
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://eu.api.capillarytech.example",
        "http://10.0.0.1:8080",
        "http://127.0.0.1.nip.io",
        "http://localhost.evil.example",
        "http://[::ffff:10.0.0.1]",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(JobError, match="http"):
        load_job(_job(tmp_path, base_url=url))


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_to_loopback_is_allowed(tmp_path: Path, url: str) -> None:
    assert load_job(_job(tmp_path, base_url=url)).api.base_url.startswith("http://")


def test_every_output_file_and_folder_is_owner_only(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(clean_profile())
    write_pairs(tmp_path / "pairs.csv", range(30), ["partner-01", "partner-02"])
    with open(tmp_path / "pairs.csv", "a") as f:
        f.write("not-a-mobile,partner-01,r1\n919899999999,partner-01,r1\n")
    job = write_job(tmp_path, sim.base_url)

    result = run_cli("run", str(job), "--quiet")
    assert result.returncode == 1, result.stderr  # one rejected, one failed
    run_dir = only_run_dir(tmp_path / "out")
    validated = run_cli("validate", str(job))
    assert validated.returncode == 0, validated.stderr

    out = tmp_path / "out"
    assert {"outcomes.parquet", "failures.csv", "rejects.csv", "summary.json", "run.log.jsonl"} <= {
        p.name for p in run_dir.iterdir()
    }
    loose = []
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose.append(f"{path.relative_to(tmp_path)} {oct(mode)}")
    assert loose == []
