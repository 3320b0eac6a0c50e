"""Hand-offs: the files batcher writes for people (failures, rejects) and reads back.

Each test is what an operator does: run a job against the simulator on a loopback port, open
the files, feed `failures.csv` back with `--input`, run `batcher retry`. The simulator's own
record of the program names it was sent is the truth for what went over the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

from batcher.cli import main
from batcher.runs.lock import holding, job_lock
from batcher.simulator.profile import Profile
from tests.conftest import DEMO_ENV, Sim, mobile, profile_with, read_summary, write_job

BOM = b"\xef\xbb\xbf"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=DEMO_ENV)


def run_dirs(out: Path, job: str = "e2e") -> list[Path]:
    folder = out / job
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def new_run(out: Path, before: list[Path]) -> Path:
    """The one run folder made since `before` (ids made in the same second sort at random)."""
    (made,) = set(run_dirs(out)) - set(before)
    return made


def sim_profile(programs: list[str], **sections: Any) -> Profile:
    """Every generated customer linked to every one of `programs`."""
    base = {"seed": 3, "state": {"customers": 500, "programs": programs, "link_probability": 1.0}}
    return profile_with(base, sections)


def write_csv(path: Path, header: list[str], rows: list[list[str]], sep: str, enc: str) -> None:
    lines = [sep.join(header)] + [sep.join(r) for r in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(enc))


def outcomes(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "outcomes.parquet")


def programs_sent(sim: Any) -> set[str]:
    return {p["program"] for p in sim.snapshot()["pairs"] if p["attempts"]}


# --- 3 and 4: encoding and separator survive failures.csv and retry ---------------------------


@pytest.mark.parametrize(
    ("encoding", "separator"), [("cp1252", ","), ("utf8", ";"), ("cp1252", ";")]
)
def test_failures_and_retry_send_what_the_input_said_whatever_its_encoding_and_separator(
    tmp_path: Path, simulator: Sim, encoding: str, separator: str
) -> None:
    programs = ["Café Club", "Bäckerei Müller"]
    sim = simulator(sim_profile(programs, faults={"item_transient": 0.5}))
    rows = [
        [mobile(i), p, city]
        for i in range(60)
        for p, city in zip(programs, ["Zürich", "São Paulo"], strict=True)
    ]
    write_csv(
        tmp_path / "pairs.csv",
        ["mobile", "partner_program_name", "city"],
        rows,
        separator,
        encoding,
    )
    extra = f'encoding = "{encoding}"\nseparator = "{separator}"\n'
    job = write_job(tmp_path, sim.base_url, retry={"max_attempts": 1})
    job.write_text(
        job.read_text().replace('identifier = "mobile"\n', f'identifier = "mobile"\n{extra}')
    )
    out = tmp_path / "out"

    first = cli("run", str(job), "--quiet")
    assert first.exit_code == 1, first.output
    (parent,) = run_dirs(out)
    retryable = read_summary(parent)["counts"]["retryable"]
    assert retryable > 0
    failures = (parent / "failures.csv").read_bytes()
    text = failures.decode(encoding)  # written in the input's encoding (or UTF-8 with a BOM)
    assert "Café Club" in text and "Zürich" in text
    assert text.splitlines()[0].lstrip("\ufeff").split(separator)[:3] == [
        "mobile",
        "partner_program_name",
        "city",
    ]

    sim.set_faults(None)
    retried = cli("retry", str(parent), "--quiet")

    assert retried.exit_code == 0, retried.output
    child = new_run(out, [parent])
    got = outcomes(child)
    assert got.height == retryable
    assert set(got["status"].to_list()) == {"delinked"}
    assert set(got["partner_program_name"].to_list()) <= set(programs)
    assert set(got["city"].to_list()) <= {"Zürich", "São Paulo"}
    assert programs_sent(sim) <= set(programs), "no mangled program name reached the API"

    again = cli("run", str(job), "--input", str(parent / "failures.csv"), "--quiet")

    assert again.exit_code == 0, again.output
    fed = outcomes(new_run(out, [parent, child]))
    assert fed.height == retryable
    assert not set(fed["status"].to_list()) - {"delinked", "not_linked"}
    assert set(fed["city"].to_list()) <= {"Zürich", "São Paulo"}
    assert programs_sent(sim) <= set(programs)


def test_a_retry_that_cannot_start_leaves_no_run_folder(tmp_path: Path, simulator: Sim) -> None:
    sim = simulator(sim_profile(["partner-01"], faults={"item_transient": 0.5}))
    rows = [[mobile(i), "partner-01"] for i in range(40)]
    write_csv(tmp_path / "pairs.csv", ["mobile", "partner_program_name"], rows, ";", "utf8")
    job = write_job(tmp_path, sim.base_url, retry={"max_attempts": 1})
    job.write_text(
        job.read_text().replace(
            'identifier = "mobile"\n', 'identifier = "mobile"\nseparator = ";"\n'
        )
    )
    assert cli("run", str(job), "--quiet").exit_code == 1
    out = tmp_path / "out"
    before = run_dirs(out)

    with holding([job_lock("e2e")], {"job": "e2e", "run_id": "another"}):
        refused = cli("retry", str(before[-1]), "--quiet")

    assert refused.exit_code == 2, refused.output
    assert run_dirs(out) == before, "nothing that looks like a run was left behind"
    listed = cli("runs", str(job))
    assert "unfinished" not in listed.output


# --- 5: the user's columns keep their names and values ----------------------------------------

USER_HEADER = ["mobile", "partner_program_name", "row", "note", "status", "code", "message"]


def user_rows() -> list[list[str]]:
    rows = [
        [mobile(i), "partner-01", f"r{i}", f"note {i}", "active", f"C{i}", f"hello {i}"]
        for i in range(40)
    ]
    rows.append(["not-a-mobile", "partner-01", "rX", "bad one", "inactive", "CX", "bye"])
    return rows


def read_back(path: Path) -> pl.DataFrame:
    """A CSV as a spreadsheet user would see it: UTF-8 with its BOM removed, all text."""
    return pl.read_csv(path.read_bytes().removeprefix(BOM), infer_schema=False)


def feed_back(job: Path, run_dir: Path, sim: Any) -> Path:
    """Feed a run's rejects to validate (they must come out the same) and, with the faults
    off, its failures to a new run, which must succeed; the new run's folder."""
    out = run_dir.parent.parent  # out/<job>/<run id>
    again = cli("validate", str(job), "--input", str(run_dir / "rejects.csv"))
    assert again.exit_code == 0, again.output
    check = new_run(out, [run_dir])
    first, second = read_back(run_dir / "rejects.csv"), read_back(check / "rejects.csv")
    assert second.drop("batcher_row").equals(first.drop("batcher_row"))

    sim.set_faults(None)
    before = run_dirs(out)
    fed = cli("run", str(job), "--input", str(run_dir / "failures.csv"), "--quiet")
    assert fed.exit_code == 0, fed.output
    return new_run(out, before)


def test_user_columns_named_like_batcher_columns_keep_their_names_and_values(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(sim_profile(["partner-01"], faults={"item_transient": 0.5}))
    write_csv(tmp_path / "pairs.csv", USER_HEADER, user_rows(), ",", "utf8")
    job = write_job(tmp_path, sim.base_url, retry={"max_attempts": 1})
    assert cli("run", str(job), "--quiet").exit_code == 1
    (run_dir,) = run_dirs(tmp_path / "out")
    original = read_back(tmp_path / "pairs.csv")

    failures = read_back(run_dir / "failures.csv")
    assert failures.columns == [*USER_HEADER, "batcher_status", "batcher_code", "batcher_message"]
    assert failures.height > 0
    assert failures.select(USER_HEADER).join(original, on=USER_HEADER, how="anti").height == 0
    assert set(failures["batcher_status"].to_list()) == {"retryable"}

    rejects = read_back(run_dir / "rejects.csv")
    assert rejects.columns == [
        "batcher_row",
        *USER_HEADER,
        "batcher_status",
        "batcher_reason",
        "batcher_message",
        "batcher_duplicate_of",
    ]
    assert rejects.row(0, named=True) | {} == {
        "batcher_row": "41",
        **dict(zip(USER_HEADER, user_rows()[-1], strict=True)),
        "batcher_status": "rejected",
        "batcher_reason": "invalid_mobile",
        "batcher_message": rejects["batcher_message"][0],
        "batcher_duplicate_of": None,
    }
    # outcomes.parquet has its own status, code, message: the user's are renamed there.
    assert {"input_status", "input_code", "input_message", "input_row", "input_note"} <= set(
        outcomes(run_dir).columns
    )

    # Fed back as it is: batcher's verdict columns go, the user's stay, values unchanged.
    # Rejects fed back (as a user would after fixing nothing) come out the same.
    child = feed_back(job, run_dir, sim)
    summary = read_summary(child)
    assert summary["input"]["columns"] == USER_HEADER
    assert any("batcher" in n for n in summary["input"]["notes"])
    got = outcomes(child).select(
        "mobile", "partner_program_name", *(pl.col(f"input_{c}").alias(c) for c in USER_HEADER[2:])
    )
    assert got.join(original, on=USER_HEADER, how="anti").height == 0
    assert got.height == failures.height


def test_a_user_file_ending_in_status_code_message_keeps_them(tmp_path: Path) -> None:
    """Only batcher's own column names mark a fed-back file, never a user's column order."""
    header = ["mobile", "partner_program_name", "status", "code", "message"]
    write_csv(tmp_path / "pairs.csv", header, [[mobile(1), "p", "gold", "7", "hi"]], ",", "utf8")
    job = write_job(tmp_path, "simulator")

    result = cli("validate", str(job))

    assert result.exit_code == 0, result.output
    summary = read_summary(run_dirs(tmp_path / "out")[-1])
    assert summary["input"]["columns"] == header
    assert not any("dropped" in n for n in summary["input"]["notes"])


# --- 6: CSV for people, read back unchanged ----------------------------------------------------

TRICKY = ["=1+2", "-abc", "'=x", "''@y", "+49 30 1234", "@home", "plain", "Zürich", "'", 'a,b"c']


def test_csv_outputs_open_in_a_spreadsheet_and_read_back_unchanged(
    tmp_path: Path, simulator: Sim
) -> None:
    sim = simulator(sim_profile(["partner-01"], faults={"item_transient": 1.0}))
    frame = pl.DataFrame(
        {
            "mobile": [mobile(i) for i in range(len(TRICKY))] + ["bad"],
            "partner_program_name": ["partner-01"] * (len(TRICKY) + 1),
            "remark": [*TRICKY, "=HYPERLINK(1)"],
        }
    )
    frame.write_csv(tmp_path / "pairs.csv")
    job = write_job(tmp_path, sim.base_url, retry={"max_attempts": 1})
    assert cli("run", str(job), "--quiet").exit_code == 1
    (run_dir,) = run_dirs(tmp_path / "out")

    for name in ("failures.csv", "rejects.csv"):
        raw = (run_dir / name).read_bytes()
        assert raw.startswith(BOM), f"{name}: a spreadsheet needs the BOM to see UTF-8"
    failures = read_back(run_dir / "failures.csv")
    # Formula-looking cells carry the spreadsheet's text marker; nothing else is touched.
    shown = dict(zip(failures["mobile"].to_list(), failures["remark"].to_list(), strict=True))
    assert shown[mobile(0)] == "'=1+2" and shown[mobile(6)] == "plain"
    assert shown[mobile(4)] == "+49 30 1234" and shown[mobile(7)] == "Zürich"
    assert read_back(run_dir / "rejects.csv")["remark"].to_list() == ["'=HYPERLINK(1)"]

    # Rejects fed back (as a user would after fixing nothing) come out the same.
    back = outcomes(feed_back(job, run_dir, sim))
    assert back["remark"].to_list() == TRICKY, "batcher reads its own CSV back unchanged"

    merged = tmp_path / "merged.csv"
    assert cli("report", str(run_dir), "--out", str(merged)).exit_code == 0
    assert merged.read_bytes().startswith(BOM)


# --- 7: blank lines are not rows ---------------------------------------------------------------


def test_blank_lines_are_skipped_counted_and_keep_the_row_numbers_a_person_sees(
    tmp_path: Path,
) -> None:
    lines = [
        "mobile,partner_program_name,region",
        f"{mobile(1)},p1,a",  # row 1
        "",  # a blank line mid-file
        f"{mobile(2)},p1,b",  # row 3: a spreadsheet shows it on its line 4
        ",,",  # a row of empty cells
        "12,p1,c",  # row 5: too short a mobile, rejected
        "",  # Excel's CRLF CRLF at the end
    ]
    (tmp_path / "pairs.csv").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    job = write_job(tmp_path, "simulator")

    result = cli("validate", str(job))

    assert result.exit_code == 0, result.output
    run_dir = run_dirs(tmp_path / "out")[-1]
    summary = read_summary(run_dir)
    assert summary["counts"] == {"valid": 2, "rejected": 1, "duplicate": 0}
    assert summary["reasons"] == {"invalid_mobile": 1}
    assert summary["input"]["rows"] == 3
    assert summary["input"]["blank_lines_skipped"] == 3
    rejects = read_back(run_dir / "rejects.csv")
    assert rejects["batcher_row"].to_list() == ["5"]


# --- 8: resume through `..` or a symlink -------------------------------------------------------


@pytest.mark.parametrize("input_path", ["../data/pairs.csv", "linked/pairs.csv"])
def test_resume_accepts_an_input_reached_through_dotdot_or_a_symlink(
    tmp_path: Path, simulator: Sim, input_path: str
) -> None:
    sim = simulator(sim_profile(["partner-01"]))
    (tmp_path / "data").mkdir()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "linked").symlink_to(tmp_path / "data")
    rows = [[mobile(i), "partner-01"] for i in range(30)]
    write_csv(
        tmp_path / "data" / "pairs.csv", ["mobile", "partner_program_name"], rows, ",", "utf8"
    )
    job = write_job(tmp_path / "jobs", sim.base_url, input_path=input_path)
    # The API refuses the credentials: the run stops before anything is delinked (exit 3).
    wrong = {**DEMO_ENV, "CAPILLARY_PASSWORD": "not-the-password"}
    stopped = CliRunner().invoke(main, ["run", str(job), "--quiet"], env=wrong)
    assert stopped.exit_code == 3, stopped.output
    (run_dir,) = run_dirs(tmp_path / "jobs" / "out")

    resumed = cli("resume", str(run_dir), "--quiet")

    assert resumed.exit_code == 0, resumed.output
    assert read_summary(run_dir)["counts"]["delinked"] == 30
