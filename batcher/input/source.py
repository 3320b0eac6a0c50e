"""The input: read CSV/Parquet lazily with polars, then normalise and validate every row.

Every input row survives into `Source.rows` with a status (valid, rejected, duplicate), so that
valid + rejected + duplicate == rows read, always. Validation is vectorised polars expressions:
no Python runs per row.
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import polars as pl

from batcher.errors import InputError
from batcher.input import cloud, excel
from batcher.input.files import (
    Format,
    InputFile,
    describe_local,
    display_name,
    fingerprint_inputs,
    format_of,
    input_location,
    options_of,
    read_bytes,
    resolve_inputs,
)
from batcher.input.tables import BATCHER_COLUMNS, CsvDialect, restore_formula
from batcher.job import Identifier, Job

__all__ = [
    "Format",
    "InputFile",
    "Source",
    "dialect_of",
    "exact_customer_key",
    "fingerprint_inputs",
    "load_source",
    "validate_rows",
]

# Columns batcher itself writes into outcomes.parquet. An input column with one of these names
# is renamed input_<name> in `Source.rows` and outcomes.parquet; the hand-off files (failures,
# rejects) give it back its own name. The underscore names are internal to `Source.rows`.
OUTPUT_COLUMNS = (
    "row",
    "source_file",
    "status",
    "reason",
    "message",
    "duplicate_of",
    "code",
    "sent_identifier",
    "customer_id",
    "api_identifier",
    "request_id",
    "attempts",
    "finished_at",
    "note",
)
INTERNAL_COLUMNS = ("_key", "_customer", "_program")
# Where a row came from, ahead of its own columns: its number, its file (globs), its sheet.
POSITION_COLUMNS = ("row", "source_file", "sheet")

REASONS = (
    "missing_identifier",
    "invalid_mobile",
    "mobile_in_scientific_notation",
    "invalid_email",
    "invalid_external_id",
    "invalid_id",
    "missing_program",
    "program_too_long",
    "invalid_program",
)

# Enums, not free text: 10M rows of "valid" would cost more memory than the data itself.
STATUS = pl.Enum(["valid", "rejected", "duplicate"])
REASON = pl.Enum(list(REASONS))

MOBILE_DIGITS_MIN, MOBILE_DIGITS_MAX = 8, 15
EXTERNAL_ID_MAX_CHARS = 150
PROGRAM_MAX_CHARS = 100
ID_MAX_DIGITS = 18  # fits a signed 64-bit integer with room to spare

_FORMAT_NAMES = {"csv": "CSV", "parquet": "Parquet", "xlsx": "Excel"}
_POLARS_ENCODINGS = {"utf8": "utf8", "utf-8": "utf8", "utf8-lossy": "utf8-lossy"}
_HASH_CHUNK = 1 << 20

# [0-9], never \d: the regex engine's \d also matches Arabic-Indic or full-width digits.
_SCIENTIFIC_RE = r"^[+-]?[0-9]+([.,][0-9]*)?[eE][+-]?[0-9]+$"
_MOBILE_NOISE_RE = r"[\s()\-\u2010-\u2015]"
_MOBILE_RE = rf"^[0-9]{{{MOBILE_DIGITS_MIN},{MOBILE_DIGITS_MAX}}}$"
# One @, a dot inside the domain (not first, not last, no empty labels), no whitespace.
_EMAIL_RE = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
_ID_RE = rf"^0*[1-9][0-9]{{0,{ID_MAX_DIGITS - 1}}}$"
# Values the cleanup would leave unchanged and that pass every check (a subset of the valid
# ones: no outer whitespace, no leading apostrophe). Most rows of a real file match these, and
# skip the string copies of trimming and normalising.
_PLAIN_IDENTIFIER_RE: dict[Identifier, str] = {
    "mobile": _MOBILE_RE,
    "email": r"^[^@\s'][^@\s]*@[^@\s.]+(\.[^@\s.]+)+$",
    "externalId": rf"^[^\s'](.{{0,{EXTERNAL_ID_MAX_CHARS - 2}}}\S)?$",
    "id": rf"^[1-9][0-9]{{0,{ID_MAX_DIGITS - 1}}}$",
}
_PLAIN_PROGRAM_RE = (
    rf"^[^\s'\x00-\x1f\x7f]([^\x00-\x1f\x7f]{{0,{PROGRAM_MAX_CHARS - 2}}}[^\s\x00-\x1f\x7f])?$"
)
# A NUL, newline or other control character inside a program name is a broken export, not a name.
_CONTROL_CHARS_RE = r"[\x00-\x1f\x7f]"


# Rows per row group of a parked Source: a range of rows is read back without the rest.
PARKED_ROW_GROUP = 65_536
# Rows read and validated at a time: a bigger input is validated a chunk at a time and its
# rows wait on disk (see `_validate_in_chunks`), so memory does not grow with the input.
CHUNK_ROWS = 1_000_000


@dataclass(frozen=True, slots=True)
class Source:
    """Every input row, validated, in input order.

    `rows` columns: _key (Int64, 0..N-1 global order), row (Int64, 1-based per file), source_file,
    the original columns, _customer, _program (normalised; null when rejected), status
    (Enum: valid | rejected | duplicate), reason (Enum of REASONS), message, duplicate_of
    (Int64 row number of the first occurrence).
    """

    files: list[InputFile]
    format: Format
    columns: list[str]
    rows: pl.DataFrame
    identifier: Identifier
    identifier_column: str
    program_column: str
    is_glob: bool
    notes: list[str]
    # An Excel input's sheet (its name); outcomes then carry a `sheet` column.
    sheet: str | None = None
    blank_lines: int = 0  # blank lines (or rows of empty cells) skipped: they are not rows
    # Each renamed column's name in the input file (`status` for `input_status`).
    original_names: dict[str, str] = field(default_factory=dict)
    dialect: CsvDialect = field(default_factory=CsvDialect)  # the input's CSV dialect: ours too
    # A big input's rows wait on disk from the start: then `rows` holds only status and reason.
    parked: _Parked | None = None

    def as_written(self, columns: list[str] | None = None) -> list[pl.Expr]:
        """`columns` (default: the input's) under the names they have in the input file."""
        return [
            pl.col(c).alias(self.original_names.get(c, c))
            for c in (self.columns if columns is None else columns)
        ]

    @property
    def row_count(self) -> int:
        return self.rows.height

    def counts(self) -> dict[str, int]:
        """Rows per status; always has the three keys, and they add up to the rows read."""
        got = dict(self.rows.get_column("status").value_counts().iter_rows())
        return {s: int(got.get(s, 0)) for s in ("valid", "rejected", "duplicate")}

    def reason_counts(self) -> dict[str, int]:
        got = dict(self.rows.get_column("reason").drop_nulls().value_counts().iter_rows())
        return {r: int(got[r]) for r in REASONS if r in got}

    def scan(self) -> pl.LazyFrame:
        """Every row with all its columns (`rows` unless they wait on disk)."""
        return self.rows.lazy() if self.parked is None else self.parked.scan()

    def not_valid(self) -> pl.LazyFrame:
        """The rejected and duplicate rows, with all their columns, in order: lazily, so that
        an input of millions of them is streamed to its file, never held."""
        not_valid = pl.col("status") != "valid"
        if self.parked is None:
            return self.rows.lazy().filter(not_valid)
        # Only the parked chunks holding such rows are read (usually none, or a few).
        ends = [*self.parked.starts[1:], self.parked.rows]
        parts = [
            self.parked.part(i)
            for i, (start, end) in enumerate(zip(self.parked.starts, ends, strict=True))
            if not self.rows.slice(start, end - start).get_column("status").eq("valid").all()
        ]
        if not parts:
            return pl.LazyFrame(schema=self.parked.schema)
        return pl.concat(parts).filter(not_valid)

    def release(self) -> None:
        """Drop the rows a big input parked in scratch files (only the counts stay usable)."""
        if self.parked is not None:
            self.parked.discard()
            object.__setattr__(self, "parked", None)
            object.__setattr__(self, "rows", self.rows.select("status", "reason"))

    def park(self, path: Path) -> None:
        """Write the rows to `path` (Parquet) and keep only `status` and `reason` in memory.

        For a run, whose rows wait while their pairs are sent: the counts still work, and the
        end of the run reads the rows back from `path` a range at a time. Every holder of this
        Source sees the slim rows (the frame is swapped in place), so the full ones are freed.
        A big input's rows already wait on disk: they are moved into `path`.
        """
        if self.parked is not None:
            self.parked.pairs = None  # a run plans from the parked rows, not from memory
            self.parked.scan().sink_parquet(
                path, compression="lz4", row_group_size=PARKED_ROW_GROUP
            )
            self.parked.discard()
            object.__setattr__(self, "parked", None)
            return
        self.rows.write_parquet(path, compression="lz4", row_group_size=PARKED_ROW_GROUP)
        object.__setattr__(self, "rows", self.rows.select("status", "reason"))

    def pairs(self) -> pl.DataFrame:
        """The valid rows as the planner wants them: _key, _customer, _program."""
        if self.parked is not None and self.parked.pairs is not None:
            return self.parked.pairs
        if self.parked is not None:
            return (
                self.parked.scan()
                .filter(pl.col("status") == "valid")
                .select("_key", "_customer", "_program")
                .collect()
            )
        pairs = self.rows.select("_key", "_customer", "_program")
        valid = self.rows.get_column("status") == "valid"
        # Usually every row is valid: then filtering would only copy the three columns.
        return pairs if valid.all() else pairs.filter(valid)


# --- reading --------------------------------------------------------------------------------


def _first_bad_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, byte offset, byte value) of the first byte that is not valid UTF-8, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0
    lines_before = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_HASH_CHUNK)
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                data = pending + chunk
                offset = consumed - len(pending) + e.start
                line = lines_before + data[: e.start].count(b"\n") + 1
                return line, offset, data[e.start]
            if not chunk:
                return None
            consumed += len(chunk)
            lines_before += chunk.count(b"\n")


def _not_utf8_error(path: Path | str, encoding: str) -> InputError:
    # An object is not downloaded again just to point at the byte.
    where = None if cloud.is_object_url(str(path)) else _first_bad_utf8(Path(path))
    detail = ""
    if where is not None:
        line, offset, byte = where
        row = f"row {line - 1}" if line > 1 else "the header"
        detail = f": the first bad byte (0x{byte:02x}) is on line {line} ({row}), byte {offset}"
    return InputError(
        f"Input file {path} is not valid {encoding}{detail}.",
        hint='Set input.encoding in the job file to the file\'s encoding, such as "cp1252" or '
        '"latin-1" (or "utf8-lossy" to replace bad bytes with \ufffd).',
    )


def _decode_other(path: Path | str, encoding: str, raw: bytes | None = None) -> bytes:
    """Decode a non-UTF-8 file in Python and hand polars UTF-8 bytes (polars reads only UTF-8)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(
            f"input.encoding {encoding!r} is not a known text encoding.",
            hint='Use utf8 (the default), utf8-lossy, or a Python codec name such as "cp1252".',
        ) from None
    raw = Path(path).read_bytes() if raw is None else raw
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(
            f"Input file {path} is not valid {encoding}: byte 0x{raw[e.start]:02x} on line "
            f"{line} (byte {e.start}) cannot be decoded.",
            hint="Set input.encoding in the job file to the file's real encoding.",
        ) from e
    return text.lstrip("\ufeff").encode("utf-8")


def _scan_csv(
    path: Path | str,
    separator: str,
    encoding: str,
    *,
    storage_options: dict[str, str] | None = None,
    fetch: Callable[[], bytes] | None = None,
) -> pl.LazyFrame:
    """A lazy scan of one CSV file; an object is read by polars' cloud reader."""
    polars_encoding = _POLARS_ENCODINGS.get(encoding.lower())
    source: Path | str | bytes = path
    if polars_encoding is None:
        source = _decode_other(path, encoding, fetch() if fetch is not None else None)
        polars_encoding = "utf8"
    return pl.scan_csv(
        source,
        storage_options=storage_options if isinstance(source, str) else None,
        infer_schema=False,  # every column as text: a mobile never passes through a number
        separator=separator,
        encoding="utf8" if polars_encoding == "utf8" else "utf8-lossy",
        raise_if_empty=False,
        glob=False,
    )


def _columns_after_rules(
    names: list[str], notes: list[str], label: str, workbook: bool = False
) -> dict[str, str | None]:
    """Map each input column to its name in `rows` (None: dropped)."""
    # A workbook's rows also carry `sheet`: an input column of that name is renamed too.
    taken_by_batcher = (*OUTPUT_COLUMNS, "sheet") if workbook else OUTPUT_COLUMNS
    mapping: dict[str, str | None] = {n: n for n in names}
    fed_back = [n for n in names if n in BATCHER_COLUMNS]
    if fed_back:
        for n in fed_back:
            mapping[n] = None
        notes.append(
            f"{label}: a batcher failures or rejects file fed back; its columns "
            f"{', '.join(fed_back)} describe the old run and were dropped"
        )
    taken = set(names)
    for n in names:
        if mapping[n] is not None and (n in taken_by_batcher or n in INTERNAL_COLUMNS):
            new = f"input_{n}"
            while new in taken:
                new = f"input_{new}"
            taken.add(new)
            mapping[n] = new
            notes.append(
                f"{label}: input column {n!r} is {new!r} in outcomes.parquet (batcher writes "
                f"{n!r} there); failures and rejects keep {n!r}"
            )
    return mapping


def _blank_rows(frame: pl.DataFrame, id_col: str) -> pl.Series | None:
    """Rows whose every input cell is empty (a blank line, or `,,`), or None when there are none."""
    if frame.height == 0 or frame.get_column(id_col).null_count() == 0:
        return None  # a blank row has no identifier: the usual case costs one null count
    cells = [c for c in frame.columns if c not in POSITION_COLUMNS]
    blank = frame.select(pl.all_horizontal(pl.col(c).is_null() for c in cells)).to_series()
    return blank if blank.any() else None


def _open_file(
    path: str, fmt: Format, job: Job, label: str
) -> tuple[pl.LazyFrame, list[str], str | None, int]:
    """(lazy rows, column names, sheet name, blank rows already skipped) of one file; an Excel
    sheet is read whole."""
    inp = job.input
    is_object = cloud.is_object_url(path)
    options = options_of(job) if is_object else None
    if fmt == "xlsx":
        sheet = excel.read_sheet(read_bytes(job, path), inp.sheet, label)
        names = [c for c in sheet.frame.columns if c != excel.SHEET_ROW]
        return sheet.frame.lazy(), names, sheet.name, sheet.blank_rows
    source: Path | str = path if is_object else Path(path)
    try:
        if fmt == "csv":
            lf = _scan_csv(
                source,
                inp.separator,
                inp.encoding,
                storage_options=options,
                fetch=(lambda: read_bytes(job, path)) if is_object else None,
            )
        else:
            lf = pl.scan_parquet(source, glob=False, storage_options=options)
        return lf, lf.collect_schema().names(), None, 0
    except InputError:
        raise
    except (pl.exceptions.PolarsError, OSError) as e:
        raise _unreadable(path, fmt, e) from e


class _FileRows(NamedTuple):
    # (first row, rows or None for all) -> those rows, lazily: row, source_file, (sheet), then
    # the columns after the rename rule
    rows_from: Callable[[int, int | None], pl.LazyFrame]
    schema: pl.Schema
    id_col: str
    prog_col: str
    sheet: str | None
    blank_lines: int  # a workbook's empty rows, skipped as its sheet was read
    float_identifier: bool  # a Parquet identifier column of floats (its values read 9.2e11)
    original_names: dict[str, str]  # renamed column -> its name in the file
    path: str
    fmt: Format
    encoding: str
    # A local CSV's rows `rows` at a time, read by byte ranges (see `_csv_ranges`); None: sliced.
    ranges: Callable[[int], Iterator[pl.DataFrame]] | None = None


def _read_file(
    path: str,
    fmt: Format,
    job: Job,
    label: str,
    notes: list[str],
) -> _FileRows:
    """One file's rows, not read yet (see `_file_batches`): `row` (1-based), `source_file`,
    (`sheet`), then its columns after the rename rule; also the identifier and program
    columns' names, and the sheet's name."""
    inp = job.input
    lf, names, sheet, skipped = _open_file(path, fmt, job, label)
    position: dict[str, pl.DataType] = {"row": pl.Int64(), "source_file": pl.String()}
    if sheet is not None:
        position["sheet"] = pl.String()

    if not names:  # an empty file: zero rows, nothing to complain about
        empty = pl.DataFrame(
            schema={
                **position,
                inp.identifier_column: pl.String,
                inp.program_column: pl.String,
            }
        )
        return _FileRows(
            lambda _start, _length: empty.lazy(),
            empty.schema,
            inp.identifier_column,
            inp.program_column,
            sheet,
            0,
            False,
            {},
            path,
            fmt,
            inp.encoding,
        )

    # polars renames a repeated header to <name>_duplicated_<n>: which one is meant is a guess.
    repeated = [
        base
        for n in names
        if (m := re.fullmatch(r"(.+)_duplicated_[0-9]+", n)) and (base := m.group(1)) in names
    ]
    if repeated:
        base = repeated[0]
        raise InputError(
            f"Input file {path} has the column {base!r} more than once in its header.",
            hint="Rename or remove the repeated column, so each column name is used once.",
        )
    mapping = _columns_after_rules(names, notes, label, sheet is not None)
    kept = {old: new for old, new in mapping.items() if new is not None}
    id_col = kept.get(inp.identifier_column)
    prog_col = kept.get(inp.program_column)
    for wanted, got, key in (
        (inp.identifier_column, id_col, "input.identifier_column"),
        (inp.program_column, prog_col, "input.program_column"),
    ):
        if got is None:
            listed = ", ".join(repr(n) for n in names)
            raise InputError(
                f"Input file {path} has no column {wanted!r} ({key}); its columns are: {listed}.",
                hint=f"Set {key} in the job file to the right column name"
                + (" or input.separator to the file's delimiter." if len(names) == 1 else "."),
            )
    # The renamed names of the identifier/program columns are what validation reads.
    row_number = [pl.col(excel.SHEET_ROW)] if sheet is not None else []

    def shaped(lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.select([*row_number, *(pl.col(old).alias(new) for old, new in kept.items())])
        if fmt == "csv" and any(n in BATCHER_COLUMNS for n in names):
            # batcher wrote this file: undo its formula markers, so values read back as they were.
            lf = lf.with_columns(restore_formula(new) for new in kept.values())
        return lf

    lf = shaped(lf)
    float_identifier = False
    if fmt == "parquet":
        float_identifier = id_col is not None and lf.collect_schema()[id_col].is_float()
        if float_identifier:
            notes.append(
                f"{label}: the {inp.identifier_column} column holds floating-point numbers; "
                "its values are rejected (a float may have lost digits): write it as text"
            )
        # Parquet keeps types: identifiers and programs become text (an integer mobile casts
        # exactly; a float one shows its float text and is rejected, never silently rounded).
        lf = lf.with_columns(pl.col(c).cast(pl.String) for c in {id_col, prog_col} if c)
    base = lf

    def numbered(part: pl.LazyFrame, start: int) -> pl.LazyFrame:
        if sheet is not None:  # rows keep the sheet's numbering (empty rows were skipped)
            return part.select(
                pl.col(excel.SHEET_ROW).alias("row"),
                pl.lit(label, dtype=pl.String).alias("source_file"),
                pl.lit(sheet, dtype=pl.String).alias("sheet"),
                pl.exclude(excel.SHEET_ROW),
            )
        return part.with_row_index("row", offset=start + 1).select(
            pl.col("row").cast(pl.Int64),
            pl.lit(label, dtype=pl.String).alias("source_file"),
            pl.exclude("row"),
        )

    def rows_from(start: int, length: int | None) -> pl.LazyFrame:
        # The slice comes first, so the reader skips to it; the row number follows it.
        return numbered(base if length is None else base.slice(start, length), start)

    ranges: Callable[[int], Iterator[pl.DataFrame]] | None = None
    if (
        fmt == "csv"
        and not cloud.is_object_url(path)
        and inp.encoding.lower() in _POLARS_ENCODINGS
        and len(inp.separator.encode()) == 1
    ):
        reader = _CsvRanges(
            Path(path),
            names,
            inp.separator,
            _POLARS_ENCODINGS[inp.encoding.lower()],
            lambda frame, start: numbered(shaped(frame), start),
            rows_from,
        )
        ranges = reader.frames

    id_col, prog_col = id_col or inp.identifier_column, prog_col or inp.program_column
    originals = {new: old for old, new in kept.items() if new != old}
    return _FileRows(
        rows_from,
        rows_from(0, None).collect_schema(),
        id_col,
        prog_col,
        sheet,
        skipped,
        float_identifier,
        originals,
        path,
        fmt,
        inp.encoding,
        ranges,
    )


def _slices(got: _FileRows, rows: int | None) -> Iterator[pl.DataFrame]:
    """The file's rows, `rows` at a time (None: at once).

    Each slice is its own query: the reader skips to it (Parquet by row group, CSV by line)
    and holds only its rows. polars' own batch iterators read ahead without bound (the whole
    of a 10M-row CSV while the first chunk was being validated).
    """
    if rows is None:
        yield got.rows_from(0, None).collect()
        return
    if got.ranges is not None:
        yield from got.ranges(rows)
        return
    yield from _sliced(got.rows_from, rows)


def _sliced(
    rows_from: Callable[[int, int | None], pl.LazyFrame], rows: int, start: int = 0
) -> Iterator[pl.DataFrame]:
    """The rows from `start` on, `rows` at a time, each slice its own query."""
    while True:
        frame = rows_from(start, rows).collect()
        yield frame
        if frame.height < rows:
            return
        start += rows


# Bytes of a CSV read first, to estimate its bytes per line (tests make it small).
_RANGE_PROBE = 1 << 20


class _CsvRanges:
    """A local CSV's rows a chunk at a time, each chunk parsed from its own byte range.

    A slice of a lazy scan looks for its first line from the start of the file (2.4 s for the
    10 slices of a 10M-row file, against 1.1 s for one read). Here the file is read once, in
    ranges of about a chunk's bytes, each cut just before a line and parsed on its own. That is
    only sound when no line break can sit inside a field: a range holding a quote character
    (or that the reader refuses) makes the rest of the file be read by slices, from the first
    row of that range (where the error, if any, is then raised as before). A range starts on a
    line with the header's number of fields (never a blank or short line: the reader takes a
    range's first line as its shape), so each range parses as its lines do in the whole file.
    """

    def __init__(
        self,
        path: Path,
        names: list[str],
        separator: str,
        encoding: str,
        finish: Callable[[pl.LazyFrame, int], pl.LazyFrame],
        rows_from: Callable[[int, int | None], pl.LazyFrame],
    ) -> None:
        self.path = path
        self.names = names
        self.separator = separator
        self.sep = separator.encode()
        self.encoding = encoding
        self.finish = finish
        self.rows_from = rows_from

    def frames(self, rows: int) -> Iterator[pl.DataFrame]:
        """The rows, exactly `rows` a frame (the last may have fewer; none when there are none)."""
        pending: list[pl.DataFrame] = []
        held = 0
        for frame in self._ranges(rows):
            pending.append(frame)
            held += frame.height
            if held < rows:
                continue
            joined = pl.concat(pending, rechunk=False) if len(pending) > 1 else pending[0]
            while joined.height >= rows:
                yield joined.slice(0, rows)
                joined = joined.slice(rows)
            pending, held = ([joined], joined.height) if joined.height else ([], 0)
        if held:
            yield pl.concat(pending, rechunk=False) if len(pending) > 1 else pending[0]

    def _ranges(self, rows: int) -> Iterator[pl.DataFrame]:
        """Frames of any size, in order: ranges parsed on their own, then slices if needed."""
        done = 0  # rows given so far
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            probe = f.read(_RANGE_PROBE)
            per_line = len(probe) / max(probe.count(b"\n"), 1)
            del probe
            target = max(int(rows * per_line), 1)
            start = 0
            while start < size or start == 0:
                end = self._line_start(f, start + target, size)
                f.seek(start)
                data = f.read(end - start)  # the range, read once, exactly
                if b'"' in data:
                    break  # a quoted field may hold a line break: slices from here
                try:
                    frame = self._parse(data, start == 0, done)
                except pl.exceptions.PolarsError:
                    break
                if frame is None:
                    break
                del data
                done += frame.height
                if frame.height:
                    yield frame
                start = end
                if start >= size:
                    return
        yield from _sliced(self.rows_from, rows, done)

    def _line_start(self, f: BinaryIO, at: int, size: int) -> int:
        """The start of the first line after byte `at` that can start a range, else `size`.

        Such a line has the header's number of fields (a blank or short line cannot: the reader
        takes a range's first line as its shape); it ends with a line break."""
        fields = len(self.names) - 1
        window = 1 << 16
        while at < size:
            f.seek(at)
            chunk = f.read(window)
            line = chunk.find(b"\n") + 1
            while line:
                end = chunk.find(b"\n", line)
                if end < 0:
                    break
                text = chunk[line:end]
                if text and text[:1] != b"\r" and text.count(self.sep) == fields:
                    return at + line
                line = end + 1
            if len(chunk) < window:
                return size  # the file ends first
            at += max(line - 1, 1) if line else len(chunk)
            window *= 2
        return size

    def _parse(self, data: bytes, header: bool, done: int) -> pl.DataFrame | None:
        """One range's rows as the lazy scan would give them; None if its header differs."""
        frame = pl.read_csv(
            data,
            has_header=header,
            schema=None if header else dict.fromkeys(self.names, pl.String),
            infer_schema=False,
            separator=self.separator,
            encoding="utf8" if self.encoding == "utf8" else "utf8-lossy",
            raise_if_empty=False,
        )
        if frame.columns != self.names:
            return None
        return self.finish(frame.lazy(), done).collect()


def _file_batches(
    got: _FileRows, chunk_rows: int | None, blank_lines: list[int]
) -> Iterator[pl.DataFrame]:
    """The file's rows, read `chunk_rows` at a time (None: at once), blank rows dropped.

    Blank lines (and rows of empty cells) are dropped but keep their number, so that `row` is
    the line a person sees in a spreadsheet, minus the header; `blank_lines[0]` counts them.
    """
    try:
        given = False
        for frame in _slices(got, None if got.fmt == "xlsx" else chunk_rows):
            blank = _blank_rows(frame, got.id_col)
            if blank is not None:
                blank_lines[0] += int(blank.sum())
                frame = frame.filter(~blank)
            given = True
            yield frame
        if not given:  # no rows at all: the columns still count
            yield pl.DataFrame(schema=got.schema)
    except pl.exceptions.PolarsError as e:
        if got.fmt == "csv" and "utf-8" in str(e).lower():
            raise _not_utf8_error(got.path, got.encoding) from e
        raise _unreadable(got.path, got.fmt, e) from e
    except OSError as e:
        raise _unreadable(got.path, got.fmt, e) from e


def _unreadable(path: Path | str, fmt: Format, e: BaseException) -> InputError:
    if cloud.is_object_url(str(path)) and (
        isinstance(e, OSError) or "object-store" in str(e) or "status" in str(e)
    ):
        return cloud.storage_error(e, str(path), "read")
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = (
        "Check it is a complete Parquet file (a truncated copy cannot be read)."
        if fmt == "parquet"
        else "Check input.separator and input.encoding in the job file, and that every line has "
        "the header's number of fields."
    )
    return InputError(f"Input file {path} cannot be read as {fmt}: {first_line}", hint=hint)


# --- validation -----------------------------------------------------------------------------


def _text(column: str) -> pl.Expr:
    """Trimmed, without the leading apostrophe spreadsheets (and our CSV writer) use as a marker."""
    return pl.col(column).str.strip_chars().str.strip_prefix("'").str.strip_chars()


# (reason, message) by problem number; 0 means the row is fine. Problems are numbered so a
# row's first problem (identifier before program) is found with vectorised when/then on ints.
def _problems(identifier: Identifier, id_column: str, program_column: str) -> list[tuple[str, str]]:
    identifier_problems = {
        "mobile": [
            (
                "mobile_in_scientific_notation",
                "mobile is in scientific notation (a spreadsheet turned it into a number and lost "
                "digits); re-export the column as text",
            ),
            (
                "invalid_mobile",
                f"mobile is not {MOBILE_DIGITS_MIN} to {MOBILE_DIGITS_MAX} digits with the country "
                "code (after removing spaces, dashes, parentheses and a leading +)",
            ),
        ],
        "email": [("invalid_email", "email needs exactly one @, a dot in the domain, no spaces")],
        "externalId": [
            ("invalid_external_id", f"externalId is longer than {EXTERNAL_ID_MAX_CHARS} characters")
        ],
        "id": [("invalid_id", f"id is not a positive integer (at most {ID_MAX_DIGITS} digits)")],
    }[identifier]
    return [
        ("missing_identifier", f"the {id_column} column is empty"),
        *identifier_problems,
        ("missing_program", f"the {program_column} column is empty"),
        ("program_too_long", f"program name is longer than {PROGRAM_MAX_CHARS} characters"),
        ("invalid_program", "program name holds a control character (NUL, newline, tab, ...)"),
    ]


@dataclass(frozen=True, slots=True)
class NationalMobiles:
    """How national mobiles are completed: `digits` long (or a trunk 0 and `digits`) gets
    `country_code` in front, so every spelling of one customer is one value on the wire."""

    country_code: str
    digits: int = 10

    def plain_re(self) -> str:
        """`_MOBILE_RE` minus the national forms (those need completing, so they are not plain)."""
        n = self.digits
        lengths = [
            k for k in range(MOBILE_DIGITS_MIN, MOBILE_DIGITS_MAX + 1) if k not in (n, n + 1)
        ]
        parts = [f"[0-9]{{{k}}}" for k in lengths]
        if MOBILE_DIGITS_MIN <= n + 1 <= MOBILE_DIGITS_MAX:
            parts.append(f"[1-9][0-9]{{{n}}}")  # one digit longer, but no trunk 0
        return "^(?:" + "|".join(parts) + ")$" if parts else "^$"

    def complete(self, digits: pl.Expr) -> pl.Expr:
        code = pl.lit(self.country_code)
        return (
            pl.when(digits.str.contains(national_mobile_re(self.digits)))
            .then(pl.concat_str(code, digits))
            .when(digits.str.contains(national_mobile_re(self.digits, trunk=True)))
            .then(pl.concat_str(code, digits.str.slice(1)))
            .otherwise(digits)
        )


def national_mobile_re(digits: int, *, trunk: bool = False) -> str:
    """A national mobile: `digits` long, not starting with 0 (a national significant number
    never does), optionally behind the trunk prefix 0."""
    return f"^{'0' if trunk else ''}[1-9][0-9]{{{digits - 1}}}$"


def exact_customer_key(identifier: Identifier) -> pl.Expr | None:
    """An integer per valid row that is equal exactly when `_customer` is (None: text only).

    Validation leaves a mobile customer 8 to 15 ASCII digits (`_MOBILE_RE`) and an id one 1 to
    18 digits without a leading zero (`_ID_RE`, zeros stripped): the number, plus the length
    for a mobile (whose leading zeros count), is the customer itself, so counting on it needs
    no hash and cannot collide. A value outside those forms gives null (then `plan_figures`
    groups on the text, as for emails and externalIds).
    """
    customer = pl.col("_customer")
    length = customer.str.len_bytes().cast(pl.UInt64)
    number = customer.str.to_integer(dtype=pl.UInt64, strict=False)
    if identifier == "mobile":
        fits = length <= MOBILE_DIGITS_MAX
        return pl.when(fits).then(number + length * 10**MOBILE_DIGITS_MAX)
    if identifier == "id":
        return pl.when((length <= ID_MAX_DIGITS) & ~customer.str.starts_with("0")).then(number)
    return None


def count_national_mobiles(source: Source, digits: int) -> int:
    """Valid rows whose mobile looks national (`digits` long, or a trunk 0 and `digits`)."""
    if source.identifier != "mobile" or source.row_count == 0:
        return 0
    either = f"{national_mobile_re(digits)}|{national_mobile_re(digits, trunk=True)}"
    if source.parked is not None and source.parked.pairs is not None:
        kept = source.parked.pairs.select(pl.col("_customer").str.contains(either).sum())
        return int(kept.item() or 0)
    found = (
        source.scan()
        .select(((pl.col("status") == "valid") & pl.col("_customer").str.contains(either)).sum())
        .collect()
    )
    return int(found.item() or 0)


def national_mobiles(job: Job) -> NationalMobiles | None:
    """The job's rule for national mobiles, or None when it sends mobiles as they are written."""
    code = job.input.default_country_code
    if code is None or job.input.identifier != "mobile":
        return None
    return NationalMobiles(code, job.input.national_mobile_digits)


def _customer_checks(
    identifier: Identifier, national: NationalMobiles | None = None
) -> tuple[pl.Expr, list[pl.Expr]]:
    """(value to send, [failure condition per identifier problem]) from the `_id_text` column."""
    text = pl.col("_id_text")
    if identifier == "mobile":
        digits = text.str.replace_all(_MOBILE_NOISE_RE, "").str.strip_prefix("+")
        if national is not None:  # completed before the length check and the dedupe
            digits = national.complete(digits)
        return digits, [
            text.str.contains(_SCIENTIFIC_RE),
            ~pl.col("_value").str.contains(_MOBILE_RE),
        ]
    if identifier == "email":
        return text, [~text.str.contains(_EMAIL_RE)]
    if identifier == "externalId":
        return text, [text.str.len_chars() > EXTERNAL_ID_MAX_CHARS]
    return text.str.strip_chars_start("0"), [~text.str.contains(_ID_RE)]


def _same_pair_as(first_row: pl.Expr, first_file: pl.Expr) -> pl.Expr:
    """A duplicate's message: the row it repeats, and that row's file when it is another."""
    return (
        pl.when(first_file != pl.col("source_file"))
        .then(pl.format("same customer and program as row {} of {}", first_row, first_file))
        .otherwise(pl.format("same customer and program as row {}", first_row))
    )


def _duplicates_where(hit: pl.Expr) -> list[pl.Expr]:
    """Rows `hit` become duplicates of their first row (columns _first_row, _first_file):
    status, message and duplicate_of; the other rows keep theirs."""
    first_row, first_file = pl.col("_first_row"), pl.col("_first_file")
    return [
        pl.when(hit).then(pl.lit("duplicate", STATUS)).otherwise(pl.col("status")).alias("status"),
        pl.when(hit)
        .then(_same_pair_as(first_row, first_file))
        .otherwise(pl.col("message"))
        .alias("message"),
        pl.when(hit).then(first_row).otherwise(pl.col("duplicate_of")).alias("duplicate_of"),
    ]


def _check_same_pairs(rows: pl.DataFrame) -> None:
    """Each row's pair is its first row's (_first_customer, _first_program) on the real
    values; a difference (or a first row not found) is two pairs of one 64-bit hash."""
    same = (pl.col("_customer") == pl.col("_first_customer")) & (
        pl.col("_program") == pl.col("_first_program")
    )
    if not rows.select(same.fill_null(False).all()).item():
        raise _PairCollision


def _first_problem(conditions: list[pl.Expr], first_number: int) -> pl.Expr:
    """Number of the first true condition (counting from `first_number`), else 0."""
    problem: pl.Expr = pl.lit(0, dtype=pl.UInt8)
    for offset in range(len(conditions) - 1, -1, -1):  # the first failing check wins
        number = pl.lit(first_number + offset, dtype=pl.UInt8)
        problem = pl.when(conditions[offset]).then(number).otherwise(problem)
    return problem


def _clean_where_needed(
    raw: pl.Series, plain: pl.Series, clean: Callable[[pl.Series], pl.DataFrame]
) -> pl.DataFrame:
    """Columns _value and _problem for `raw`, running the cleanup only on rows that need it.

    A value that is `plain` (matches the plain pattern) is already what the cleanup would make
    of it and passes every check, so it is kept as is (no string copy). The other rows, usually
    few, go through `clean`, and their results are put back in place.
    """
    n = raw.len()
    positions = (~plain.fill_null(False)).arg_true()
    problem = pl.repeat(0, n, dtype=pl.UInt8, eager=True)
    if positions.len() == 0:
        return pl.DataFrame({"_value": raw, "_problem": problem})
    cleaned = clean(raw.gather(positions))
    value = raw.clone()
    value.scatter(positions, cleaned.get_column("_value"))
    problem.scatter(positions, cleaned.get_column("_problem"))
    return pl.DataFrame({"_value": value, "_problem": problem})


def validate_rows(
    frame: pl.DataFrame,
    identifier: Identifier,
    id_column: str,
    program_column: str,
    national: NationalMobiles | None = None,
) -> pl.DataFrame:
    """Add _customer, _program, status, reason, message, duplicate_of (vectorised).

    `national`: complete national mobiles with a country code (see NationalMobiles).
    """
    return _validate(frame, identifier, id_column, program_column, national)[0]


def _validate(
    frame: pl.DataFrame,
    identifier: Identifier,
    id_column: str,
    program_column: str,
    national: NationalMobiles | None = None,
    *,
    with_hashes: bool = False,
) -> tuple[pl.DataFrame, pl.Series | None]:
    """`validate_rows`, and with `with_hashes` each row's 64-bit hash of its (customer,
    program) pair as the dedupe sees it (null for a rejected row)."""
    # Columns read in parallel come in chunks of different sizes; every eager operation on a
    # frame whose columns are chunked differently first copies all of them into line (about
    # 900 MB and 1 s for 10M rows, each time). One copy here keeps every later frame aligned.
    frame = frame.rechunk()
    problems = _problems(identifier, id_column, program_column)
    program_first = len(problems) - 2  # missing_program, program_too_long, invalid_program

    def clean_identifier(raw: pl.Series) -> pl.DataFrame:
        value, failures = _customer_checks(identifier, national)
        text = pl.col("_id_text")
        return (
            raw.rename("_id_text")
            .to_frame()
            .lazy()
            .with_columns(_id_text=_text("_id_text"))
            .with_columns(_value=value)
            .select(
                "_value", _problem=_first_problem([text.is_null() | (text == ""), *failures], 1)
            )
            .collect()
        )

    def clean_program(raw: pl.Series) -> pl.DataFrame:
        text = pl.col("_value")
        conditions = [
            text.is_null() | (text == ""),
            text.str.len_chars() > PROGRAM_MAX_CHARS,
            text.str.contains(_CONTROL_CHARS_RE),
        ]
        return (
            raw.rename("_value")
            .to_frame()
            .lazy()
            .with_columns(_value=_text("_value"))
            .select("_value", _problem=_first_problem(conditions, program_first))
            .collect()
        )

    plain_re = _PLAIN_IDENTIFIER_RE[identifier]
    if national is not None and identifier == "mobile":
        plain_re = national.plain_re()
    # Both patterns in one query: polars runs them side by side (one is a thread's work).
    plain = frame.select(
        pl.col(id_column).str.contains(plain_re).alias("id"),
        pl.col(program_column).str.contains(_PLAIN_PROGRAM_RE).alias("program"),
    )
    ident = _clean_where_needed(
        frame.get_column(id_column), plain.get_column("id"), clean_identifier
    )
    program = _clean_where_needed(
        frame.get_column(program_column), plain.get_column("program"), clean_program
    )
    id_problem = ident.get_column("_problem")
    # Usually no row is rejected: then `when(valid)` would only copy every value it keeps.
    any_rejected = bool(id_problem.max() or program.get_column("_problem").max())
    lf = frame.lazy().with_columns(
        _value=ident.get_column("_value"),
        _program=program.get_column("_value"),
        _problem=pl.when(id_problem > 0).then(id_problem).otherwise(program.get_column("_problem")),
    )
    valid = pl.col("_problem") == 0

    def if_valid(value: pl.Expr) -> pl.Expr:
        return pl.when(valid).then(value) if any_rejected else value

    # The dedupe key of a customer: emails compare case-insensitively.
    key = pl.col("_value").str.to_lowercase() if identifier == "email" else pl.col("_value")
    # _ckey is not nulled for rejected rows (a string copy per row): the pair hash below
    # includes _problem, so rejected rows never group with valid ones.
    lf = lf.with_columns(_ckey=if_valid(key) if identifier == "email" else key)
    # One customer, one spelling on the wire: for emails, the first occurrence's trimmed value.
    customer = pl.col("_value").first().over("_ckey") if identifier == "email" else pl.col("_value")
    # Duplicates: group on a 64-bit hash of (customer, program), far cheaper than on two
    # strings; every hash match is then checked on the real values, and the exact (slow)
    # grouping runs only if a collision ever shows up.
    pair_hash = pl.struct("_problem", "_ckey", "_program").hash()
    checked = lf.with_columns(
        _customer=if_valid(customer),
        _program=if_valid(pl.col("_program")),
        _pair=pair_hash,
    ).collect()
    # _first: the _key of the pair's first row. Usually no pair repeats: then each valid row is
    # its own first, and the grouping that would find it is skipped. Counting distinct hashes
    # is several times cheaper than grouping on them, or than is_first_distinct.
    pair_hashes = checked.get_column("_pair")
    if any_rejected:
        pair_hashes = pair_hashes.filter(checked.get_column("_problem") == 0)
    repeats = pair_hashes.n_unique() < pair_hashes.len()
    first = pl.col("_key").min().over("_pair") if repeats else pl.col("_key")
    checked = checked.with_columns(_first=if_valid(first))
    duplicates = (checked.get_column("_first") != checked.get_column("_key")).arg_true()
    candidates = checked.select("_key", "_first", "_ckey", "_program")[duplicates]
    if candidates.height:
        firsts = checked.select("_ckey", "_program")[candidates.get_column("_first")]
        same = (firsts.get_column("_ckey") == candidates.get_column("_ckey")) & (
            firsts.get_column("_program") == candidates.get_column("_program")
        )
        if not same.all():
            checked = checked.with_columns(
                _first=pl.when(pl.col("_problem") == 0).then(
                    pl.col("_key").min().over("_ckey", "_program")
                )
            )
    reasons = {n: r for n, (r, _) in enumerate(problems, 1)}
    messages = {n: m for n, (_, m) in enumerate(problems, 1)}
    problem = pl.col("_problem")
    duplicate = pl.col("_first") != pl.col("_key")
    status = (
        pl.when(problem > 0)
        .then(pl.lit("rejected", STATUS))
        .when(duplicate)
        .then(pl.lit("duplicate", STATUS))
        .otherwise(pl.lit("valid", STATUS))
    )
    message = (
        problem.replace_strict(messages, default=None, return_dtype=pl.String)
        if any_rejected
        else pl.lit(None, dtype=pl.String)
    )
    duplicate_of = pl.lit(None, dtype=pl.Int64)
    if candidates.height:
        first_row = pl.col("row").gather(pl.col("_first"))
        first_file = pl.col("source_file").gather(pl.col("_first"))
        duplicate_of = pl.when(duplicate).then(first_row)
        message = pl.when(duplicate).then(_same_pair_as(first_row, first_file)).otherwise(message)
    position = [c for c in POSITION_COLUMNS if c in frame.columns]
    originals = [c for c in frame.columns if c != "_key" and c not in position]
    hashes = None
    if with_hashes:
        hashes = checked.select(pl.when(pl.col("_problem") == 0).then(pl.col("_pair"))).to_series()
    return checked.select(
        "_key",
        *position,
        *originals,
        "_customer",
        "_program",
        status.alias("status"),
        problem.replace_strict(reasons, default=None, return_dtype=REASON).alias("reason"),
        message.alias("message"),
        duplicate_of.alias("duplicate_of"),
    ), hashes


def load_source(job: Job, *, keep_pairs: bool = True, keep_rows: bool = True) -> Source:
    """Read the job's input (file or glob) and validate every row; InputError if unusable.

    A big input's rows wait on disk; `keep_pairs` also keeps its valid pairs in memory (about
    40 bytes a pair), which `validate` wants for its plan figures. A run passes False: it plans
    from the parked rows a slice at a time, and the pairs would be the peak of a 10M-pair run.
    `keep_rows` False (with `keep_pairs`): a big input's valid rows are not kept at all, only
    their pairs and the rejected and duplicate rows: `Source.scan` and `Source.park` then
    refuse, `not_valid`, `pairs` and the counts work (all `validate` needs).
    """
    if not keep_rows and not keep_pairs:
        raise ValueError("keep_rows=False keeps the valid rows' pairs: keep_pairs must be True")
    if cloud.is_object_url(job.input.path):
        # An object's fingerprint is what the store says of it: listed before it is read.
        files = fingerprint_inputs(job)
        paths, is_glob = [f.path for f in files], len(files) > 1 or _glob_path(job)
        return _source(
            job, files, _load_rows(job, paths, keep_pairs=keep_pairs, keep_rows=keep_rows), is_glob
        )
    paths, is_glob = resolve_inputs(job)
    # hashlib releases the GIL: the files are hashed while polars reads and checks them.
    with ThreadPoolExecutor(max_workers=1) as pool:
        described = pool.submit(lambda: [describe_local(Path(p)) for p in paths])
        try:
            loaded = _load_rows(job, paths, keep_pairs=keep_pairs, keep_rows=keep_rows)
        except BaseException:
            described.result()  # an unreadable file is reported as such, before anything else
            raise
        files = described.result()
    return _source(job, files, loaded, is_glob)


def _glob_path(job: Job) -> bool:
    return any(c in job.input.path for c in "*?[")


def _source(job: Job, files: list[InputFile], loaded: _Loaded, is_glob: bool) -> Source:
    return Source(
        files=files,
        format=loaded.format,
        columns=loaded.columns,
        rows=loaded.rows,
        identifier=job.input.identifier,
        identifier_column=loaded.id_col,
        program_column=loaded.prog_col,
        is_glob=is_glob,
        notes=loaded.notes,
        sheet=loaded.sheet,
        blank_lines=loaded.blank_lines,
        original_names=loaded.original_names,
        dialect=dialect_of(job),
        parked=loaded.parked,
    )


def dialect_of(job: Job) -> CsvDialect:
    """The job's CSV dialect: the files batcher hands back are written as its input was."""
    return CsvDialect(job.input.separator, job.input.encoding)


class _Loaded(NamedTuple):
    format: Format
    columns: list[str]
    rows: pl.DataFrame
    id_col: str
    prog_col: str
    notes: list[str]
    sheet: str | None
    blank_lines: int
    original_names: dict[str, str]
    parked: _Parked | None


class _PairCollision(Exception):
    """Two different pairs of one hash, in two chunks: the chunked dedupe cannot tell them."""


_PARK_PREFIX = "batcher-rows-"


def _sweep_killed_parks() -> None:
    """Remove the scratch rows of processes that are gone (a killed run cannot clean up)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_PARK_PREFIX}*-*"):
        pid = path.name[len(_PARK_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue  # alive, another user's


class _Parked:
    """Validated rows waiting on disk, one file per chunk (removed with this object).

    `slim` holds each row's status and reason in memory, in order, for the counts. Without
    `keep_rows` (for `validate`), a chunk's file holds only its rejected and duplicate rows."""

    def __init__(self, id_col: str = "", prog_col: str = "", *, keep_rows: bool = True) -> None:
        _sweep_killed_parks()
        # A column the cleanup left as it was read is not written twice: each part says which
        # columns it rebuilds on reading (the input's own, all-null ones, its one file's name).
        self.copies = {"_customer": id_col, "_program": prog_col}
        self.rebuilt: list[dict[str, pl.Expr]] = []
        self.schema = pl.Schema()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{_PARK_PREFIX}{os.getpid()}-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.kept = keep_rows
        self.parts: list[Path] = []
        self.starts: list[int] = []  # the first _key of each chunk
        self.rows = 0
        self.slim = pl.DataFrame(schema={"status": STATUS, "reason": REASON})
        # The valid rows' _key, _customer, _program, kept in memory while the rows wait on disk
        # (they are what `validate` and the preflight plan with): not read back from the files.
        self.pairs: pl.DataFrame | None = None

    def add(self, rows: pl.DataFrame, chunk_rows: int) -> None:
        """Park the next chunk of `chunk_rows` rows: `rows`, all of them or those kept."""
        self.starts.append(self.rows)
        self.rows += chunk_rows
        self.parts.append(self.dir / f"part-{len(self.parts):05d}.arrow")
        self.rebuilt.append({})
        self.write(len(self.parts) - 1, rows)

    def write(self, i: int, rows: pl.DataFrame) -> None:
        """(Re)write part `i`: `rows` minus the columns that can be rebuilt on reading."""
        self.schema = rows.schema
        rebuilt: dict[str, pl.Expr] = {}
        for name, same_as in self.copies.items():
            if same_as in rows.columns and rows.get_column(name).equals(
                rows.get_column(same_as), check_names=False
            ):
                rebuilt[name] = pl.col(same_as)
        for name in ("message", "duplicate_of"):
            if rows.get_column(name).null_count() == rows.height:
                rebuilt[name] = pl.lit(None, dtype=rows.schema[name])
        files = rows.get_column("source_file")
        if files.len() and files.null_count() == 0 and (files == files[0]).all():
            rebuilt["source_file"] = pl.lit(files[0], dtype=pl.String)  # a part of one file
        # Arrow IPC, uncompressed: written at memory speed (Parquet took 4x longer, lz4 1.1 s
        # more CPU at 10M rows), and the files live only until the run parks the rows as
        # Parquet or `validate` ends.
        tmp = self.parts[i].with_suffix(".tmp")
        rows.drop(list(rebuilt)).write_ipc(tmp, compression="uncompressed")
        os.replace(tmp, self.parts[i])
        self.rebuilt[i] = rebuilt

    def part(self, i: int) -> pl.LazyFrame:
        """Part `i` with every column, in order."""
        names = self.schema.names()
        return (
            pl.scan_ipc(self.parts[i])
            .with_columns(**self.rebuilt[i])
            .select(pl.col(n).cast(self.schema[n]) for n in names)
        )

    def scan(self) -> pl.LazyFrame:
        if not self.kept:
            raise RuntimeError("the valid rows were not kept (load_source keep_rows=False)")
        if not self.parts:
            return pl.LazyFrame(schema=self.schema)
        return pl.concat([self.part(i) for i in range(len(self.parts))])

    def discard(self) -> None:
        self.pairs = None
        self._cleanup()


def _aligned_chunk(
    frames: list[pl.DataFrame], union: dict[str, pl.DataType], key: int
) -> pl.DataFrame:
    """One chunk's frames with every column of `union`, numbered by _key from `key`."""
    aligned = [
        f.select(
            pl.col(c) if c in f.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in union.items()
        )
        for f in frames
    ]
    chunk = aligned[0] if len(aligned) == 1 else pl.concat(aligned)
    return chunk.with_row_index("_key", offset=key).with_columns(pl.col("_key").cast(pl.Int64))


def _validate_in_chunks(
    job: Job,
    groups: Iterator[list[pl.DataFrame]],
    union: dict[str, pl.DataType],
    id_col: str,
    prog_col: str,
    national: NationalMobiles | None,
    float_files: list[str],
    *,
    keep_pairs: bool = True,
    reread: Callable[[], Iterator[list[pl.DataFrame]]] | None = None,
) -> _Parked:
    """Validate and park the rows a chunk at a time; memory holds one chunk and 8 bytes a row.

    Each chunk is validated by `validate_rows` on its own, which finds the duplicates inside
    it. A pair whose first row is in an earlier chunk is found afterwards from each row's
    64-bit pair hash (kept, 8 bytes a row); the rows it concerns are then checked on their real
    values (a collision raises _PairCollision) and rewritten as duplicates of the first row,
    exactly as a validation of the whole input would have made them.

    With `reread` (which gives the same chunks again), only each chunk's rejected and duplicate
    rows are parked, with the valid pairs in memory (`validate` needs nothing else, and writing
    every row to scratch files was a third of its time). The rows made duplicates across
    chunks are then read again from the input, only when there are any.
    """
    parked = _Parked(id_col, prog_col, keep_rows=reread is None)
    # A chunk is written while the next one is read and checked (writing is mostly waiting).
    writer = ThreadPoolExecutor(max_workers=1)
    written: Future[None] | None = None
    try:
        hashes: list[pl.Series] = []
        slim: list[pl.DataFrame] = []
        pairs: list[pl.DataFrame] = []
        key = 0
        for frames in groups:
            chunk = _aligned_chunk(frames, union, 0)
            del frames
            # validate_rows reads _key as a position in its frame: numbered from 0, then shifted.
            rows, pair_hashes = _validate(
                chunk, job.input.identifier, id_col, prog_col, national, with_hashes=True
            )
            rows = rows.with_columns(pl.col("_key") + key)
            del chunk
            if float_files:
                rows = _explain_float_identifiers(rows, float_files, job.input.identifier_column)
            assert pair_hashes is not None
            hashes.append(pair_hashes)
            slim.append(rows.select("status", "reason"))
            valid = rows.get_column("status") == "valid"
            chunk_pairs = rows.select("_key", "_customer", "_program")
            if keep_pairs:
                pairs.append(chunk_pairs if valid.all() else chunk_pairs.filter(valid))
            parked_rows = rows if reread is None else rows.filter(~valid)
            del valid, chunk_pairs
            if written is not None:
                written.result()
            written = writer.submit(parked.add, parked_rows, rows.height)
            key += rows.height
            del rows, parked_rows
        if written is not None:
            written.result()
        # Not rechunked: a copy of every hash (80 MB at 10M rows) at the peak of memory.
        later = _later_duplicates(pl.concat(hashes), parked.starts)
        del hashes
        kept = pl.concat(pairs, rechunk=False) if pairs else None
        del pairs
        if later.height and reread is not None:
            assert kept is not None
            _reread_duplicates(reread, union, parked, later, kept, slim)
        elif later.height:
            _rewrite_duplicates(parked, later, slim)
        if later.height and kept is not None:
            kept = kept.filter(~pl.col("_key").is_in(later.get_column("_key").implode()))
        parked.slim = pl.concat(slim).rechunk()
        parked.pairs = kept
        return parked
    except BaseException:
        writer.shutdown(wait=True)
        parked.discard()
        raise
    finally:
        writer.shutdown(wait=False)


def _reread_duplicates(
    reread: Callable[[], Iterator[list[pl.DataFrame]]],
    union: dict[str, pl.DataType],
    parked: _Parked,
    later: pl.DataFrame,
    pairs: pl.DataFrame,
    slim: list[pl.DataFrame],
) -> None:
    """`_rewrite_duplicates` for parts that hold only the not-valid rows of their chunk.

    A row of `later` is either valid in its chunk (its pair is in `pairs`, its row is not
    parked) or a duplicate inside it (parked). The valid rows' other columns, and the first
    rows' number and file, are read again from the input, only the chunks holding them; then
    each chunk's part is rewritten with its new duplicates, one chunk at a time, so memory
    holds one chunk beside the pairs whatever the number of duplicates.
    """
    starts = pl.Series(parked.starts, dtype=pl.Int64)
    statuses = pl.concat([s.get_column("status") for s in slim], rechunk=False)
    later_keys = later.get_column("_key")
    later = later.with_columns(
        _part=starts.search_sorted(later_keys, side="right") - 1,
        _parked=statuses.gather(later_keys) != "valid",
    )
    # Read again: the first rows, and the rows of `later` that were valid (not parked).
    first_keys = later.get_column("_first").unique()
    read_keys = pl.concat([later.filter(~pl.col("_parked")).get_column("_key"), first_keys])
    to_read = set((starts.search_sorted(read_keys, side="right") - 1).to_list())
    to_patch = set(later.get_column("_part").to_list())
    # A first row is always in an earlier chunk than its duplicates: going through the chunks
    # in order, every first row a chunk's duplicates name has been read before the chunk.
    firsts = pl.DataFrame(
        schema={"_first": pl.Int64, "_first_row": pl.Int64, "_first_file": pl.String}
    )
    groups = reread()
    chunks = enumerate(groups)
    try:
        for part in sorted(to_read | to_patch):
            read = None
            if part in to_read:
                for i, frames in chunks:
                    if i == part:
                        read = _aligned_chunk(frames, union, parked.starts[part]).filter(
                            pl.col("_key").is_in(read_keys.implode())
                        )
                        break
                assert read is not None
                firsts = firsts.vstack(
                    read.filter(pl.col("_key").is_in(first_keys.implode())).select(
                        pl.col("_key").alias("_first"),
                        pl.col("row").cast(pl.Int64).alias("_first_row"),
                        pl.col("source_file").cast(pl.String).alias("_first_file"),
                    )
                )
            if part in to_patch:
                mine = later.filter(pl.col("_part") == part)
                _patch_part(parked, part, mine, read, pairs, firsts)
                hit = (mine.get_column("_key") - parked.starts[part]).implode()
                slim[part] = slim[part].with_columns(
                    status=pl.when(pl.int_range(pl.len()).is_in(hit))
                    .then(pl.lit("duplicate", STATUS))
                    .otherwise(pl.col("status"))
                )
    finally:
        close = getattr(groups, "close", None)
        if close is not None:
            close()


def _valid_pairs(pairs: pl.DataFrame, keys: pl.Series) -> pl.DataFrame:
    """The rows of `pairs` (sorted by _key) with these keys, in their order: found by binary
    search, not by a hash table over every pair. A key that is not there (never expected)
    counts as a collision: the whole input is then validated in one go."""
    if keys.is_empty():
        return pairs.clear()
    at = pairs.get_column("_key").search_sorted(keys).clip(upper_bound=max(pairs.height - 1, 0))
    got = pairs[at] if pairs.height else pairs
    if got.height != keys.len() or not (got.get_column("_key") == keys).all():
        raise _PairCollision
    return got


def _patch_part(
    parked: _Parked,
    part: int,
    later: pl.DataFrame,
    read: pl.DataFrame | None,
    pairs: pl.DataFrame,
    firsts: pl.DataFrame,
) -> None:
    """Rewrite one chunk's part of not-valid rows with the chunk's rows of `later` as
    duplicates: the parked ones patched, the valid ones (their other columns from `read`)
    added. Each pair is compared with its first row's on the real values (a difference is a
    hash collision: _PairCollision)."""
    names = parked.schema.names()
    pair = ["_key", "_customer", "_program"]
    rows = parked.part(part).collect()
    moved = later.filter(pl.col("_parked")).select("_key", "_first")
    added = later.filter(~pl.col("_parked")).select("_key", "_first")
    own = pl.concat(
        [
            rows.select(pair).join(moved, on="_key", how="semi"),
            _valid_pairs(pairs, added.get_column("_key")),
        ]
    )
    first_pairs = _valid_pairs(pairs, later.get_column("_first").unique().sort()).rename(
        {c: f"_first{c}" for c in pair}
    )
    _check_same_pairs(
        later.select("_key", "_first")
        .join(own, on="_key", how="left")
        .join(first_pairs, left_on="_first", right_on="_first_key", how="left")
    )
    del first_pairs
    patched = (
        rows.join(
            moved.join(firsts, on="_first", how="left"),
            on="_key",
            how="left",
            maintain_order="left",
        )
        .with_columns(_duplicates_where(pl.col("_first").is_not_null()))
        .select(names)
    )
    if added.height:
        assert read is not None
        made = (
            added.join(read, on="_key", how="left")
            .join(own, on="_key", how="left")
            .join(firsts, on="_first", how="left")
            .with_columns(
                pl.lit("duplicate", STATUS).alias("status"),
                pl.lit(None, REASON).alias("reason"),
                _same_pair_as(pl.col("_first_row"), pl.col("_first_file")).alias("message"),
                pl.col("_first_row").alias("duplicate_of"),
            )
            .select(pl.col(n).cast(parked.schema[n]) for n in names)
        )
        patched = pl.concat([patched, made]).sort("_key")
    parked.write(part, patched)


def _later_duplicates(hashes: pl.Series, starts: list[int]) -> pl.DataFrame:
    """(_key, _first) of each row whose pair hash first occurs in an earlier chunk.

    A sorted copy of the hashes (8 bytes a row) tells whether any repeats, usually not; then
    only the rows whose hash repeats are looked at: memory beyond the hashes grows with the
    duplicates, not with the rows (a hash table over every row took 500 MB at 10M rows).
    """
    none = pl.DataFrame(schema={"_key": pl.Int64, "_first": pl.Int64})
    present = hashes.drop_nulls().sort()
    n = present.len()
    if n < 2:
        return none
    again = present.slice(1) == present.slice(0, n - 1)  # slices are views: no copy
    if not again.any():
        return none
    repeating = present.slice(1).filter(again).unique()
    del present, again
    repeated = hashes.is_in(repeating.implode()).fill_null(False).arg_true().cast(pl.Int64)
    firsts = (
        pl.DataFrame({"_h": hashes.gather(repeated), "_key": repeated})
        .with_columns(_first=pl.col("_key").min().over("_h"))
        .filter(pl.col("_first") != pl.col("_key"))
    )
    chunk_starts = pl.Series(starts, dtype=pl.Int64)
    chunk_of_key = chunk_starts.search_sorted(firsts.get_column("_key"), side="right")
    chunk_of_first = chunk_starts.search_sorted(firsts.get_column("_first"), side="right")
    return firsts.select("_key", "_first").filter(chunk_of_key != chunk_of_first)


def _rewrite_duplicates(parked: _Parked, later: pl.DataFrame, slim: list[pl.DataFrame]) -> None:
    """Make each row of `later` a duplicate of its `_first`, in its part file and in `slim`."""
    starts = pl.Series(parked.starts, dtype=pl.Int64)
    firsts_needed = later.get_column("_first").unique().sort()
    # The first rows' position and pair, read part by part (their number is bounded by the
    # distinct pairs that repeat across chunks).
    first_parts = starts.search_sorted(firsts_needed, side="right") - 1
    info: list[pl.DataFrame] = []
    for part in first_parts.unique().sort().to_list():
        wanted = firsts_needed.filter(first_parts == part)
        info.append(
            parked.part(part)
            .filter(pl.col("_key").is_in(wanted.implode()))
            .select(
                pl.col("_key").alias("_first"),
                pl.col("row").alias("_first_row"),
                pl.col("source_file").alias("_first_file"),
                pl.col("_customer").alias("_first_customer"),
                pl.col("_program").alias("_first_program"),
            )
            .collect()
        )
    first_rows = pl.concat(info)
    later_parts = starts.search_sorted(later.get_column("_key"), side="right") - 1
    for part in later_parts.unique().sort().to_list():
        rows = parked.part(part).collect()
        names = rows.columns
        patch = later.filter(later_parts == part).join(first_rows, on="_first", how="left")
        rows = rows.join(patch, on="_key", how="left", maintain_order="left")
        hit = pl.col("_first").is_not_null()
        _check_same_pairs(rows.filter(hit))
        rows = rows.with_columns(_duplicates_where(hit)).select(names)
        slim[part] = rows.select("status", "reason")
        parked.write(part, rows)


def _load_rows(
    job: Job,
    paths: list[str],
    chunk_rows: int | None = None,
    *,
    keep_pairs: bool = True,
    keep_rows: bool = True,
) -> _Loaded:
    """The files' rows, validated, with what was learnt reading them.

    An input of more than `chunk_rows` rows (default CHUNK_ROWS) is read and validated a chunk
    at a time, and its validated rows are parked on disk (see `_validate_in_chunks`).
    """
    formats = {p: format_of(p) for p in paths}
    kinds = set(formats.values())
    if len(kinds) > 1:
        listing = ", ".join(f"{Path(p).name} ({f})" for p, f in formats.items())
        mixed = " and ".join(_FORMAT_NAMES[k] for k in sorted(kinds))
        raise InputError(
            f"Input {input_location(job)} mixes {mixed} files: {listing}.",
            hint="Point input.path at one format only.",
        )
    fmt: Format = kinds.pop()
    notes: list[str] = []
    files: list[_FileRows] = []
    columns: list[str] = []
    id_col, prog_col = job.input.identifier_column, job.input.program_column
    sheet: str | None = None
    float_files: list[str] = []
    original_names: dict[str, str] = {}
    for path in paths:
        label = display_name(path, job.base_dir)
        got = _read_file(path, fmt, job, label, notes)
        id_col, prog_col = got.id_col, got.prog_col
        sheet = sheet or got.sheet
        original_names.update(got.original_names)
        if got.float_identifier:
            float_files.append(label)
        files.append(got)
        names = got.schema.names()
        columns += [c for c in names if c not in POSITION_COLUMNS and c not in columns]
    blank_lines = [sum(f.blank_lines for f in files)]
    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    # The columns every chunk is given, in the order a diagonal concat of the files has; None
    # when two files type a column differently (then the files are combined as a whole).
    union: dict[str, pl.DataType] | None = {}
    for f in files:
        for name, dtype in f.schema.items():
            if union is not None and union.setdefault(name, dtype) != dtype:
                union = None
    national = national_mobiles(job)
    # Emails: a customer is sent as its first spelling, which a chunk cannot know; whole.
    chunked = union is not None and job.input.identifier != "email"
    groups = _chunk_groups(files, chunk_rows if chunked else None, blank_lines)
    first = next(groups, [])
    second = next(groups, None)
    parked: _Parked | None = None
    if second is None:
        rows = _validate_whole(job, first, id_col, prog_col, national)
    else:
        assert union is not None
        try:
            parked = _validate_in_chunks(
                job,
                itertools.chain([first, second], groups),
                union,
                id_col,
                prog_col,
                national,
                float_files,
                keep_pairs=keep_pairs,
                # The same chunks again (the rows made duplicates across chunks are read back).
                reread=None if keep_rows else lambda: _chunk_groups(files, chunk_rows, [0]),
            )
        except _PairCollision:
            # Two different pairs of one 64-bit hash in two chunks (about one chance in 10^12
            # at 10M rows): the exact dedupe runs on the whole input, read again.
            blank_lines = [sum(f.blank_lines for f in files)]
            whole = list(itertools.chain.from_iterable(_chunk_groups(files, None, blank_lines)))
            rows = _validate_whole(job, whole, id_col, prog_col, national)
        else:
            rows = parked.slim
    if float_files and parked is None:
        rows = _explain_float_identifiers(rows, float_files, job.input.identifier_column)
    return _Loaded(
        fmt, columns, rows, id_col, prog_col, notes, sheet, blank_lines[0], original_names, parked
    )


def _chunk_groups(
    files: list[_FileRows], chunk_rows: int | None, blank_lines: list[int]
) -> Iterator[list[pl.DataFrame]]:
    """The files' rows in order, in groups of at least `chunk_rows` rows (the last may be
    fewer); one group of everything when `chunk_rows` is None."""
    group: list[pl.DataFrame] = []
    rows = 0
    for f in files:
        for frame in _file_batches(f, chunk_rows, blank_lines):
            group.append(frame)
            rows += frame.height
            if chunk_rows is not None and rows >= chunk_rows:
                yield group
                group, rows = [], 0
    if group or chunk_rows is None:
        yield group


def _validate_whole(
    job: Job,
    frames: list[pl.DataFrame],
    id_col: str,
    prog_col: str,
    national: NationalMobiles | None,
) -> pl.DataFrame:
    """Every row in memory, validated in one go (an input of at most a chunk, or a fallback)."""
    if not frames:
        frames = [pl.DataFrame(schema={"row": pl.Int64, "source_file": pl.String})]
    try:
        combined = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as e:
        raise InputError(
            f"The files of {input_location(job)} cannot be combined: {e}.",
            hint="Each file's columns must have compatible types.",
        ) from e
    combined = combined.with_row_index("_key").with_columns(pl.col("_key").cast(pl.Int64))
    return validate_rows(combined, job.input.identifier, id_col, prog_col, national)


def _explain_float_identifiers(rows: pl.DataFrame, labels: list[str], column: str) -> pl.DataFrame:
    """A float identifier's rejection says why, not only that the value is malformed."""
    identifier_reasons = [
        "invalid_mobile",
        "mobile_in_scientific_notation",
        "invalid_email",
        "invalid_external_id",
        "invalid_id",
    ]
    why = (
        f"the {column} column is stored as floating-point numbers in the Parquet file, so this "
        "value reads as a float (such as 919800000001.0) and may have lost digits; write the "
        "column as text (or as integers)"
    )
    hit = pl.col("source_file").is_in(labels) & pl.col("reason").cast(pl.String).is_in(
        identifier_reasons
    )
    return rows.with_columns(
        pl.when(hit).then(pl.lit(why)).otherwise(pl.col("message")).alias("message")
    )
