"""The streamed assembly gives exactly the files the in-memory one gave; the journal folds small.

The reference below is the assembly as it was before it streamed (the whole journal read at
once, one join over every row), kept here verbatim. A fault-laden run, its resume and a retry
run through the CLI in-process; at each assembly the journal is copied aside, and the reference
assembles it again: the files must be equal, and the folded journal must say what the live one
said.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

import batcher.runs.execute as execute_module
from batcher.cli import main
from batcher.input.tables import write_table
from batcher.results.assemble import Assembly, assemble_run
from batcher.results.journal import (
    FOLDED_NAME,
    INTENTS_NAME,
    JOURNAL_NAME,
    JOURNAL_SCHEMA,
    read_intents,
    read_journal,
)
from batcher.results.outcomes import CONFIRMED, STATUSES
from batcher.runs.lineage import merged_report
from tests.conftest import DEMO_ENV, Sim, clean_profile, mobile, only_run_dir, write_job

PROGRAMS = ["partner-01", "partner-02", "partner-03"]


# --- the reference: the in-memory assembly, as it was -----------------------------------------


def reference_journal(folder: Path) -> pl.DataFrame:
    """read_journal as it was (all lines at once, last word per pair), after the folded answers
    of an earlier fold, which come first."""
    parts = []
    folded = folder / FOLDED_NAME
    if folded.is_file():
        parts.append(pl.read_parquet(folded).filter(pl.col("s").is_not_null()))
    path = folder / JOURNAL_NAME
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        parts.append(pl.read_ndjson(data[: data.rfind(b"\n") + 1], schema=JOURNAL_SCHEMA))
    if not parts:
        return pl.DataFrame(schema=JOURNAL_SCHEMA)
    frame = pl.concat(
        [p.select(pl.col(c).cast(t) for c, t in JOURNAL_SCHEMA.items()) for p in parts]
    )
    return frame.unique(subset=["cu", "pr"], keep="last", maintain_order=True)


def reference_intents(folder: Path) -> set[tuple[str, str]]:
    import json

    pairs: set[tuple[str, str]] = set()
    folded = folder / FOLDED_NAME
    if folded.is_file():
        kept = pl.read_parquet(folded).filter(pl.col("s").is_null())
        pairs |= set(zip(kept["cu"].to_list(), kept["pr"].to_list(), strict=True))
    path = folder / INTENTS_NAME
    if path.is_file():
        for line in path.read_text().splitlines():
            pairs.update((str(c), str(p)) for c, p in json.loads(line))
    return pairs


def reference_assemble_outcomes(
    rows: pl.DataFrame, journal: pl.DataFrame, columns: list[str], unsent: str | None
) -> pl.DataFrame:
    valid = pl.col("status") == "valid"
    joined = rows.join(
        journal.drop("k"),
        left_on=[pl.when(valid).then(pl.col("_customer")), pl.when(valid).then(pl.col("_program"))],
        right_on=["cu", "pr"],
        how="left",
        maintain_order="left",
    )
    return joined.select(
        "row",
        *(["source_file"] if "source_file" in rows.columns else []),
        *(["sheet"] if "sheet" in rows.columns else []),
        *columns,
        pl.when(valid)
        .then(pl.col("s").fill_null("retryable"))
        .otherwise(pl.col("status"))
        .alias("status"),
        pl.col("c").alias("code"),
        pl.when(valid)
        .then(pl.col("m").fill_null(unsent or "not sent: no answer was recorded"))
        .otherwise(pl.col("message"))
        .alias("message"),
        pl.col("_customer").alias("sent_identifier"),
        pl.col("cid").alias("customer_id"),
        pl.col("ai").alias("api_identifier"),
        pl.col("rid").alias("request_id"),
        pl.col("a").fill_null(0).alias("attempts"),
        pl.col("t").alias("finished_at"),
        pl.col("n").alias("note"),
        "reason",
        "duplicate_of",
    )


def reference_files(
    rows: pl.DataFrame,
    journal: pl.DataFrame,
    columns: list[str],
    fmt: Any,
    unsent: str | None,
    out: Path,
    *,
    original_names: dict[str, str] | None = None,
    dialect: Any = None,
    sheet: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    outcomes = reference_assemble_outcomes(rows, journal, columns, unsent)
    outcomes.write_parquet(out / "outcomes.parquet")
    failures = outcomes.filter(pl.col("status").is_in(["failed", "retryable"]))
    # The input's columns under their own names, then batcher's verdict (a hand-off file).
    names = original_names or {}
    write_table(
        failures.select(
            *(pl.col(c).alias(names.get(c, c)) for c in columns),
            *(pl.col(c).alias(f"batcher_{c}") for c in ("status", "code", "message")),
        ),
        out / f"failures.{fmt}",
        fmt,
        sheet=sheet,
        dialect=dialect,
    )
    counts = {s: 0 for s in STATUSES}
    for status, n in outcomes.group_by("status").len().iter_rows():
        counts[str(status)] = int(n)
    codes = (
        outcomes.filter(pl.col("code").is_not_null()).group_by("status", "code", "message").len()
    )
    return {"counts": counts, "codes": sorted(codes.iter_rows(), key=repr)}


# --- the fault-laden family of runs --------------------------------------------------------


def write_input(path: Path) -> int:
    lines = ["mobile,partner_program_name,region"]
    # Customers 0-179; the simulator knows 0-149 (the rest fail 8015), some links are absent.
    lines += [f"{mobile(i)},{p},r{i % 4}" for i in range(180) for p in PROGRAMS]
    lines += [f"{mobile(3)},partner-99,rX"]  # unknown program: failed 2006
    lines += ["9.198E+11,partner-01,rX", "abc,partner-02,rX", ",partner-01,rX"]  # rejected
    lines += [f"+{mobile(5)},partner-01,rD", f"{mobile(7)},partner-03,rD"]  # duplicates
    lines += ["=cmd(),partner-01,=x"]  # a formula cell, rejected
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


@pytest.fixture
def assemblies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Every assembly a command makes: what the reference makes of the same journal, and
    what the streamed one returned (run a few rows at a time, so that ranges are many)."""
    seen: list[dict[str, Any]] = []

    def spy(
        journal_path: Path,
        rows: pl.DataFrame | Path,
        columns: list[str],
        fmt: Any,
        unsent: str | None = None,
        **paths: Any,
    ) -> Assembly:
        run_dir = journal_path.parent
        frame = pl.read_parquet(rows) if isinstance(rows, Path) else rows  # parked by the run
        aside = tmp_path / f"aside-{len(seen)}"
        aside.mkdir()
        for name in (JOURNAL_NAME, INTENTS_NAME, FOLDED_NAME):
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, aside / name)
        journal = reference_journal(aside)
        expected = reference_files(frame, journal, columns, fmt, unsent, aside, **paths)
        confirmed = journal.filter(pl.col("s").is_in(CONFIRMED))
        expected["journal"] = journal
        expected["open_intents"] = reference_intents(aside) - set(
            zip(confirmed["cu"].to_list(), confirmed["pr"].to_list(), strict=True)
        )
        got = assemble_run(journal_path, rows, columns, fmt, unsent, **paths, range_rows=37)
        # What the streamed assembly left, taken now: a resume rewrites the same folder.
        made = aside / "made"
        made.mkdir()
        for name in ("outcomes.parquet", f"failures.{fmt}"):
            shutil.copy(run_dir / name, made / name)
        seen.append(
            {
                "run_dir": run_dir,
                "aside": aside,
                "fmt": fmt,
                "expected": expected,
                "got": got,
                "journal": read_journal(run_dir / JOURNAL_NAME),
                "open_intents": read_intents(run_dir / JOURNAL_NAME),
                "left": sorted(p.name for p in run_dir.iterdir()),
            }
        )
        return got

    monkeypatch.setattr(execute_module, "assemble_run", spy)
    return seen


def check(assembly: dict[str, Any]) -> None:
    aside, fmt = assembly["aside"], assembly["fmt"]
    expected, got = assembly["expected"], assembly["got"]
    made = aside / "made"
    assert_frame_equal(
        pl.read_parquet(made / "outcomes.parquet"), pl.read_parquet(aside / "outcomes.parquet")
    )
    name = f"failures.{fmt}"
    assert (made / name).read_bytes() == (aside / name).read_bytes()
    assert got.counts == expected["counts"]
    codes = [(c["status"], c["code"], c["message"], c["rows"]) for c in got.codes]
    assert len(expected["codes"]) <= 20, "the summary's table keeps 20: all of them here"
    assert sorted(codes, key=repr) == expected["codes"]
    # Folded: the same last word per pair, the same open intents, and no live log left.
    assert FOLDED_NAME in assembly["left"]
    assert not {JOURNAL_NAME, INTENTS_NAME, ".assembly", ".rows.parquet"} & set(assembly["left"])
    by_pair = ["cu", "pr"]
    assert_frame_equal(assembly["journal"].sort(by_pair), expected["journal"].sort(by_pair))
    assert assembly["open_intents"] == expected["open_intents"]


def test_streamed_assembly_gives_the_in_memory_files_through_a_resume_and_a_retry(
    tmp_path: Path, simulator: Sim, assemblies: list[dict[str, Any]]
) -> None:
    sim = simulator(
        clean_profile(
            seed=11,
            state={"customers": 150, "link_probability": 0.7},
            faults={"item_transient": 0.25, "server_error": 0.1, "disconnect_after": 0.05},
        )
    )
    rows = write_input(tmp_path / "pairs.csv")
    job = write_job(
        tmp_path, sim.base_url, api={"customers_per_request": 7}, retry={"max_attempts": 1}
    )
    runner = CliRunner()

    first = runner.invoke(main, ["run", str(job), "--quiet"], env=DEMO_ENV)
    assert first.exit_code == 1, first.output
    run_dir = only_run_dir(tmp_path / "out")
    resumed = runner.invoke(main, ["resume", str(run_dir), "--quiet"], env=DEMO_ENV)
    assert resumed.exit_code == 1, resumed.output
    retried = runner.invoke(main, ["retry", str(run_dir), "--all", "--quiet"], env=DEMO_ENV)
    assert retried.exit_code in (0, 1), retried.output

    assert len(assemblies) == 3
    statuses: set[str] = set()
    for assembly in assemblies:
        check(assembly)
        outcomes = pl.read_parquet(assembly["aside"] / "made" / "outcomes.parquet")
        statuses |= set(outcomes["status"].to_list())
    assert pl.read_parquet(run_dir / "outcomes.parquet").height == rows
    assert statuses == set(STATUSES), "the family holds every status"
    # report --out streams the family into its file: the same as the merged frame, written whole.
    for name in ("merged.parquet", "merged.csv"):
        report = runner.invoke(main, ["report", str(run_dir), "--out", str(tmp_path / name)])
        assert report.exit_code == 0, report.output
    merged, _ = merged_report(run_dir)
    assert merged.height == rows
    assert_frame_equal(pl.read_parquet(tmp_path / "merged.parquet"), merged)
    write_table(merged, tmp_path / "whole.csv", "csv", sheet="report")
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    # The resume appended to a folded journal: it re-read the fold, and folded both.
    assert assemblies[1]["run_dir"] == run_dir and (assemblies[1]["aside"] / FOLDED_NAME).exists()
