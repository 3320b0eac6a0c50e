"""The result files, assembled from the validated rows and the journal a row range at a time.

A run's end writes `outcomes.parquet` (one row per input row), the failures file and the
counts, then folds the journal small (results/journal.py). None of it holds the whole journal:

1. The journal's lines (folded answers first, then the live log) are read a block at a time,
   numbered (`q`), and spilled to one file per range of rows their `k` (the row's _key when
   the line was written) falls in.
2. Each range of rows reads its own lines, checks that each names its row (below), keeps
   the last word per row and is assembled by `assemble_outcomes`, the function that once ran
   on everything, joining on the key: the answer a row gets is its own pair's, as before.
3. The parts are streamed into the result files and into the folded journal.

Step 2 is exact when every line's `k` is the key of the valid row holding that line's pair,
which holds unless a resume was forced over a changed input; that is checked range by range,
and when it fails the whole journal is assembled in memory, matched by pair, as before.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from batcher.input.tables import (
    FAILURE_VERDICT,
    CsvDialect,
    TableFormat,
    batcher_column,
    sink_table,
)
from batcher.results.journal import (
    INTENTS_NAME,
    JOURNAL_SCHEMA,
    PAIR,
    conform,
    folded_path,
    intent_chunks,
    journal_chunks,
    promote_folded,
    read_journal,
)
from batcher.results.outcomes import CONFIRMED, STATUSES, Status

WORK_DIR = ".assembly"  # scratch space of one assembly, removed when it ends (or at the next)
RANGE_ROWS = 250_000  # rows assembled at a time: bounds the memory, whatever the job's size
_FOLDED_SLICE = 2_000_000


@dataclass(frozen=True, slots=True)
class Assembly:
    """What the end of a run wrote, and the counts its summary reports."""

    counts: dict[str, int]
    codes: list[dict[str, Any]]
    outcomes_path: Path
    failures_path: Path


class _KeysDisagree(Exception):
    """A journal line's `k` is not the key of the row holding its pair (a forced resume)."""


def assemble_outcomes(
    rows: pl.DataFrame,
    journal: pl.DataFrame,
    columns: list[str],
    unsent: str | None = None,
    *,
    by_key: bool = False,
) -> pl.DataFrame:
    """One outcome per input row: journalled answers for sent rows, validation for the rest.

    A valid row with no journal entry was never answered: it is `retryable` with the message
    `unsent`, never lost.
    Journal lines are matched by pair (customer, program), so that a resume whose input was
    changed (with --force) still gives each row the answer its own pair got. `by_key`: match
    them by `k` instead, for a journal already checked to name each line's row by its key
    (see _check_keys): the same rows, for a join on one integer instead of two strings.
    """
    valid = pl.col("status") == "valid"
    answers = journal.select(*JOURNAL_SCHEMA)
    if by_key:
        joined = rows.join(
            answers.drop(PAIR), left_on="_key", right_on="k", how="left", maintain_order="left"
        )
    else:
        # Only valid rows were sent: a duplicate shares its pair with the row it repeats, but
        # not that row's answer (null keys never match).
        joined = rows.join(
            answers.drop("k"),
            left_on=[
                pl.when(valid).then(pl.col("_customer")),
                pl.when(valid).then(pl.col("_program")),
            ],
            right_on=["cu", "pr"],
            how="left",
            maintain_order="left",
        )
    out = joined.select(
        "row",
        *(["source_file"] if "source_file" in rows.columns else []),
        *(["sheet"] if "sheet" in rows.columns else []),  # an Excel input's sheet
        *columns,
        pl.when(valid)
        .then(pl.col("s").fill_null(Status.RETRYABLE.value))
        .otherwise(pl.col("status"))
        .alias("status"),
        pl.col("c").alias("code"),
        pl.when(valid)
        .then(pl.col("m").fill_null(unsent or "not sent: no answer was recorded"))
        .otherwise(pl.col("message"))
        .alias("message"),
        # The identifier as normalised: what was sent (for a duplicate, what made it one).
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
    return out


def summarise_counts(outcomes: pl.DataFrame) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for status, n in outcomes.group_by("status").len().iter_rows():
        counts[str(status)] = int(n)
    return counts


def _codes(outcomes: pl.DataFrame) -> pl.DataFrame:
    return outcomes.filter(pl.col("code").is_not_null()).group_by("status", "code", "message").len()


def _top_codes(grouped: pl.DataFrame, limit: int) -> list[dict[str, Any]]:
    # Every column in the sort: ties come out in one order, however the rows were grouped.
    ordered = grouped.sort(
        ["len", "code", "status", "message"],
        descending=[True, False, False, False],
        nulls_last=True,
    ).head(limit)
    return [
        {"status": s, "code": c, "message": m, "rows": int(n)} for s, c, m, n in ordered.iter_rows()
    ]


def codes_table(outcomes: pl.DataFrame, limit: int = 20) -> list[dict[str, Any]]:
    """Counts by (status, API code, message), most frequent first."""
    return _top_codes(_codes(outcomes), limit)


def failure_columns(
    columns: list[str], original_names: dict[str, str] | None = None
) -> list[pl.Expr]:
    """The failures file: the input's columns under their own names (a user's `status` is
    `input_status` in outcomes), then batcher's verdict as `batcher_status`, `batcher_code`,
    `batcher_message` (the mark of a file fed back as input)."""
    names = original_names or {}
    return [
        *(pl.col(c).alias(names.get(c, c)) for c in columns),
        *(pl.col(c).alias(batcher_column(c)) for c in FAILURE_VERDICT),
    ]


# --- the streamed assembly -------------------------------------------------------------------


def assemble_run(
    journal_path: Path,
    rows: pl.DataFrame | Path,
    columns: list[str],
    fmt: TableFormat,
    unsent: str | None = None,
    *,
    outcomes_path: Path,
    failures_path: Path,
    sheet: str | None = None,
    range_rows: int = RANGE_ROWS,
    original_names: dict[str, str] | None = None,
    dialect: CsvDialect | None = None,
) -> Assembly:
    """Write the outcomes and failures files from `rows` (Source.rows, or the Parquet file a
    parked Source wrote) and the journal at `journal_path`, then fold the journal; memory is
    bounded by `range_rows`, not by the job's size. A parked rows file is removed at the end."""
    work = journal_path.with_name(WORK_DIR)
    table = _Rows(rows)
    shutil.rmtree(work, ignore_errors=True)  # a killed assembly's leftovers
    work.mkdir(mode=0o700)
    try:
        parts = _Parts(work, original_names=original_names)
        try:
            _assemble_by_range(table, journal_path, work, columns, unsent, parts, range_rows)
        except _KeysDisagree:
            parts = _Parts(work, "whole", original_names=original_names)
            journal = read_journal(journal_path)
            whole = table.whole()
            parts.add(whole, journal, assemble_outcomes(whole, journal, columns, unsent), columns)
        sink_table(pl.scan_parquet(parts.outcomes), outcomes_path, "parquet")
        sink_table(
            pl.scan_parquet(parts.failures), failures_path, fmt, sheet=sheet, dialect=dialect
        )
        _fold(journal_path, work, parts)
        codes = (
            pl.concat(parts.codes).group_by("status", "code", "message").agg(pl.col("len").sum())
        )
        counts = {s: parts.counts.get(s, 0) for s in STATUSES}
        if isinstance(rows, Path):
            rows.unlink()
        return Assembly(counts, _top_codes(codes, 20), outcomes_path, failures_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Rows:
    """The validated rows, in memory or parked in a Parquet file, read a range at a time."""

    def __init__(self, rows: pl.DataFrame | Path) -> None:
        self._rows = rows
        if isinstance(rows, pl.DataFrame):
            self.height = rows.height
        else:
            self.height = int(pl.scan_parquet(rows).select(pl.len()).collect().item())

    def slice(self, start: int, length: int) -> pl.DataFrame:
        if isinstance(self._rows, pl.DataFrame):
            return self._rows.slice(start, length)
        return pl.scan_parquet(self._rows).slice(start, length).collect()

    def whole(self) -> pl.DataFrame:
        rows = self._rows
        return rows if isinstance(rows, pl.DataFrame) else pl.read_parquet(rows)


class _Parts:
    """The per-range pieces of the result files and of the folded journal, on disk."""

    def __init__(
        self, work: Path, label: str = "range", *, original_names: dict[str, str] | None = None
    ) -> None:
        self.work, self.label = work, label
        self.original_names = original_names
        self.outcomes: list[Path] = []
        self.failures: list[Path] = []
        self.answers: list[Path] = []
        self.codes: list[pl.DataFrame] = []
        self.counts: Counter[str] = Counter()
        self.confirmed: list[pl.Series] = []

    def add(
        self, rows: pl.DataFrame, answers: pl.DataFrame, out: pl.DataFrame, columns: list[str]
    ) -> None:
        n = len(self.outcomes)
        self.outcomes.append(self._write(out, f"{self.label}-{n:05d}-outcomes"))
        failed = out.filter(pl.col("status").is_in([Status.FAILED.value, Status.RETRYABLE.value]))
        self.failures.append(
            self._write(
                failed.select(failure_columns(columns, self.original_names)),
                f"{self.label}-{n:05d}-failures",
            )
        )
        self.answers.append(
            self._write(answers.select(*JOURNAL_SCHEMA), f"{self.label}-{n:05d}-answers")
        )
        self.codes.append(_codes(out))
        self.counts.update(summarise_counts(out))
        settled = answers.filter(pl.col("s").is_in(CONFIRMED))
        self.confirmed.append(settled.select(_pair_hash()).to_series())

    def _write(self, frame: pl.DataFrame, stem: str) -> Path:
        path = self.work / f"{stem}.parquet"
        frame.write_parquet(path, compression="lz4", statistics=True)
        return path


def _pair_hash() -> pl.Expr:
    return pl.struct(*PAIR).hash().alias("h")


def _spill_journal(
    journal_path: Path, work: Path, range_rows: int
) -> tuple[dict[int, list[Path]], int]:
    """The journal's lines on disk, one file per (block read, range of rows its `k` falls in),
    with each line's order in `q`; and how many lines there were."""
    spilled: dict[int, list[Path]] = {}
    seq = 0
    for number, block in enumerate(_journal_blocks(journal_path)):
        if block.height == 0:
            continue
        block = block.with_columns(
            q=pl.int_range(seq, seq + block.height, dtype=pl.Int64),
            r=(pl.col("k") // range_rows).fill_null(-1),  # -1: no key, never in a range
        )
        seq += block.height
        for (r,), part in block.partition_by("r", as_dict=True, include_key=False).items():
            path = work / f"spill-{r}-{number:05d}.parquet"
            part.write_parquet(path, compression="lz4")
            spilled.setdefault(int(r), []).append(path)
    return spilled, seq


def _journal_blocks(journal_path: Path) -> Iterator[pl.DataFrame]:
    """Folded answers (oldest words), then the live lines, a bounded block at a time."""
    folded = folded_path(journal_path)
    if folded.is_file():
        scan = pl.scan_parquet(folded).filter(pl.col("s").is_not_null())
        total = scan.select(pl.len()).collect().item()
        for start in range(0, total, _FOLDED_SLICE):
            yield conform(scan.slice(start, _FOLDED_SLICE).collect())
    yield from journal_chunks(journal_path)


def _assemble_by_range(
    rows: _Rows,
    journal_path: Path,
    work: Path,
    columns: list[str],
    unsent: str | None,
    parts: _Parts,
    range_rows: int,
) -> None:
    spilled, lines_total = _spill_journal(journal_path, work, range_rows)
    lines_seen = 0
    empty = pl.DataFrame(schema={**JOURNAL_SCHEMA, "q": pl.Int64})
    for number, lo in enumerate(range(0, max(rows.height, 1), range_rows)):
        chunk = rows.slice(lo, range_rows)
        hi = lo + chunk.height
        keys = chunk.get_column("_key")
        if chunk.height and (keys[0] != lo or keys[-1] != hi - 1):
            raise _KeysDisagree  # rows are always numbered 0..N-1 in order; be sure
        files = spilled.get(number, [])
        lines = pl.concat([pl.read_parquet(f) for f in files]) if files else empty
        lines_seen += lines.height
        _check_keys(chunk, lines)
        # The last word per row, which (checked above) is the last word per pair.
        answers = lines.sort("q").filter(pl.col("k").is_last_distinct())
        out = assemble_outcomes(chunk, answers, columns, unsent, by_key=True)
        parts.add(chunk, answers, out, columns)
    if lines_seen != lines_total:
        raise _KeysDisagree  # some lines' keys fall outside the rows (or are missing)


def _check_keys(chunk: pl.DataFrame, lines: pl.DataFrame) -> None:
    """Every line's k must name the valid row of its own pair, or ranges would mismatch."""
    if lines.height == 0:
        return
    owners = lines.select("k", *PAIR).join(
        chunk.select("_key", "_customer", "_program", "status"),
        left_on="k",
        right_on="_key",
        how="left",
    )
    agree = owners.select(
        (
            (pl.col("cu") == pl.col("_customer"))
            & (pl.col("pr") == pl.col("_program"))
            & (pl.col("status") == "valid")
        )
        .fill_null(False)
        .all()
    ).item()
    if not agree:
        raise _KeysDisagree


def _fold(journal_path: Path, work: Path, parts: _Parts) -> None:
    """journal.jsonl + intents.jsonl (+ an earlier fold) -> journal.parquet, zstd."""
    intents = _open_intents(journal_path, parts.confirmed)
    intents_path = work / "intents.parquet"
    intents.write_parquet(intents_path, compression="lz4")
    tmp = work / "journal.parquet"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    pl.scan_parquet([*parts.answers, intents_path]).sink_parquet(
        tmp, compression="zstd", statistics=True
    )
    _fsync_file(tmp)
    promote_folded(tmp, journal_path)


def _open_intents(journal_path: Path, confirmed: list[pl.Series]) -> pl.DataFrame:
    """Intended pairs without a confirmed answer, as intent rows (null status) of the fold.

    Compared by a 64-bit hash of the pair against the sorted hashes of the confirmed ones: a
    collision (odds below one in a million even at 10M pairs) could only drop an intent, which
    makes a later "not linked" read as not linked, never as an unconfirmed delink.
    """
    settled = pl.Series("h", [], dtype=pl.UInt64)
    if confirmed:
        # One copy at a time (8 bytes a confirmed pair): the parts go as soon as they are joined.
        settled = pl.concat(confirmed, rechunk=True)
        confirmed.clear()
        settled.sort(in_place=True)
    kept: list[pl.DataFrame] = []
    for block in _intent_blocks(journal_path):
        hashed = block.select(*PAIR, _pair_hash())
        if settled.len():
            at = settled.search_sorted(hashed.get_column("h")).clip(0, settled.len() - 1)
            done = settled.gather(at) == hashed.get_column("h")
            hashed = hashed.filter(~done)
        kept.append(hashed.select(PAIR).unique())
    pairs = (
        pl.concat(kept).unique(maintain_order=True)
        if kept
        else pl.DataFrame(schema={"cu": pl.String, "pr": pl.String})
    )
    return pairs.select(
        pl.lit(None, pl.Int64).alias("k"),
        *PAIR,
        *(pl.lit(None, t).alias(c) for c, t in JOURNAL_SCHEMA.items() if c not in ("k", *PAIR)),
    )


def _intent_blocks(journal_path: Path) -> Iterator[pl.DataFrame]:
    folded = folded_path(journal_path)
    if folded.is_file():
        yield pl.scan_parquet(folded).filter(pl.col("s").is_null()).select(PAIR).collect()
    yield from intent_chunks(journal_path.with_name(INTENTS_NAME))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
