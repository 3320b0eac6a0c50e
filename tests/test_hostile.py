"""Hostile inputs (issue 7): each file of tests/data/hostile gives exactly its expected verdict.

`expected.json` holds, per file, the exit code and either the error text or the exact valid,
rejected and duplicate counts with their reasons. Names starting with "@" are inputs git cannot
hold (a directory, a glob matching nothing, a symlink loop, an unreadable file): the test makes
them. No verdict may come with a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from batcher.cli import main

HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"
EXPECTED: dict[str, dict[str, Any]] = json.loads((HOSTILE / "expected.json").read_text())


def _input_path(name: str, tmp_path: Path) -> str:
    if name == "@directory":
        (tmp_path / "pairs.csv").mkdir()
        return str(tmp_path / "pairs.csv")
    if name == "@glob_matching_nothing":
        return str(tmp_path / "nothing-*.csv")
    if name == "@symlink_loop":
        os.symlink(tmp_path / "loop.csv", tmp_path / "loop.csv")
        return str(tmp_path / "loop.csv")
    if name == "@unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads a file whatever its mode")
        path = tmp_path / "locked.csv"
        path.write_text("mobile,partner_program_name\n919800000001,partner-01\n")
        path.chmod(0)
        return str(path)
    return str(HOSTILE / name)


def _validate(name: str, tmp_path: Path) -> tuple[int, str, Path]:
    expected = EXPECTED[name]
    out = tmp_path / "out"
    job = tmp_path / "job.toml"
    job.write_text(
        f'name = "hostile"\n[input]\npath = "{_input_path(name, tmp_path)}"\n'
        f'identifier = "{expected.get("identifier", "mobile")}"\n'
        f'[api]\nbase_url = "simulator"\n[output]\ndir = "{out}"\n'
    )
    result = CliRunner().invoke(main, ["validate", str(job)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the test fails with it
    return result.exit_code, result.output, out / "hostile"


def test_the_corpus_has_every_kind_of_file_issue_7_lists() -> None:
    on_disk = {p.name for p in HOSTILE.iterdir()} - {"expected.json"}
    listed = {n for n in EXPECTED if not n.startswith("@")}
    assert on_disk == listed
    assert len(EXPECTED) >= 25


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_input_gives_exactly_its_expected_verdict(name: str, tmp_path: Path) -> None:
    expected = EXPECTED[name]
    code, output, job_out = _validate(name, tmp_path)

    assert "Traceback" not in output
    assert code == expected["exit"], output
    if code != 0:
        assert output.startswith("Error: "), output
        assert expected["error"] in " ".join(output.split()), output
        assert not job_out.exists() or not any(job_out.iterdir()), "no run folder on an error"
        return
    (run_dir,) = job_out.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["input"]["rows"] == expected["rows"]
    assert summary["counts"] == expected["counts"]
    assert summary["reasons"] == expected["reasons"]


def test_formula_looking_values_are_neutralised_in_rejects_csv(tmp_path: Path) -> None:
    code, _, job_out = _validate("formula.csv", tmp_path)
    assert code == 0
    (run_dir,) = job_out.iterdir()
    rejects = pl.read_csv(run_dir / "rejects.csv", infer_schema=False)
    risky = ("=", "+", "-", "@")
    for column in rejects.columns:
        for value in rejects[column].drop_nulls().to_list():
            assert not value.startswith(risky) or value.lstrip("+-").isdigit(), (column, value)
    assert "'=cmd|' /C calc'!A0" in rejects["mobile"].to_list()
    assert "'@SUM(1+1)" in rejects["mobile"].to_list()
    assert "'-2+3" in rejects["region"].to_list()
