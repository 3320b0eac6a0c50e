"""The input: read CSV/Parquet lazily with polars, then normalise and validate every row.

Every input row survives into `Source.rows` with a status (valid, rejected, duplicate), so that
valid + rejected + duplicate == rows read, always. Validation is vectorised polars expressions:
no Python runs per row.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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

    def park(self, path: Path) -> None:
        """Write the rows to `path` (Parquet) and keep only `status` and `reason` in memory.

        For a run, whose rows wait while their pairs are sent: the counts still work, and the
        end of the run reads the rows back from `path` a range at a time. Every holder of this
        Source sees the slim rows (the frame is swapped in place), so the full ones are freed.
        """
        self.rows.write_parquet(path, compression="lz4", row_group_size=PARKED_ROW_GROUP)
        object.__setattr__(self, "rows", self.rows.select("status", "reason"))

    def pairs(self) -> pl.DataFrame:
        """The valid rows as the planner wants them: _key, _customer, _program."""
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
    frame: pl.DataFrame  # row, source_file, (sheet), then the columns after the rename rule
    id_col: str
    prog_col: str
    sheet: str | None
    blank_lines: int
    float_identifier: bool  # a Parquet identifier column of floats (its values read 9.2e11)
    original_names: dict[str, str]  # renamed column -> its name in the file


def _read_file(
    path: str,
    fmt: Format,
    job: Job,
    label: str,
    notes: list[str],
) -> _FileRows:
    """One file's rows: `row` (1-based), `source_file`, (`sheet`), then its columns after the
    rename rule; also the identifier and program columns' names, and the sheet's name.

    Blank lines (and rows of empty cells) are dropped but keep their number, so that `row` is
    the line a person sees in a spreadsheet, minus the header.
    """
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
        return _FileRows(empty, inp.identifier_column, inp.program_column, sheet, 0, False, {})

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
    lf = lf.select([*row_number, *(pl.col(old).alias(new) for old, new in kept.items())])
    if fmt == "csv" and any(n in BATCHER_COLUMNS for n in names):
        # batcher wrote this file: undo its formula markers, so every value reads back as it was.
        lf = lf.with_columns(restore_formula(new) for new in kept.values())
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
    if sheet is not None:  # rows keep the sheet's numbering (empty rows were skipped)
        lf = lf.select(
            pl.col(excel.SHEET_ROW).alias("row"),
            pl.lit(label, dtype=pl.String).alias("source_file"),
            pl.lit(sheet, dtype=pl.String).alias("sheet"),
            pl.exclude(excel.SHEET_ROW),
        )
    else:
        lf = lf.with_row_index("row", offset=1).select(
            pl.col("row").cast(pl.Int64),
            pl.lit(label, dtype=pl.String).alias("source_file"),
            pl.exclude("row"),
        )
    try:
        frame = lf.collect()
    except pl.exceptions.PolarsError as e:
        if fmt == "csv" and "utf-8" in str(e).lower():
            raise _not_utf8_error(path, inp.encoding) from e
        raise _unreadable(path, fmt, e) from e
    except OSError as e:
        raise _unreadable(path, fmt, e) from e
    id_col, prog_col = id_col or inp.identifier_column, prog_col or inp.program_column
    blank = _blank_rows(frame, id_col)
    blank_lines = skipped  # a workbook's empty rows, skipped as its sheet was read
    if blank is not None:
        blank_lines += int(blank.sum())
        frame = frame.filter(~blank)
    originals = {new: old for old, new in kept.items() if new != old}
    return _FileRows(frame, id_col, prog_col, sheet, blank_lines, float_identifier, originals)


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


def count_national_mobiles(source: Source, digits: int) -> int:
    """Valid rows whose mobile looks national (`digits` long, or a trunk 0 and `digits`)."""
    if source.identifier != "mobile" or source.row_count == 0:
        return 0
    either = f"{national_mobile_re(digits)}|{national_mobile_re(digits, trunk=True)}"
    found = source.rows.select(
        ((pl.col("status") == "valid") & pl.col("_customer").str.contains(either)).sum()
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


def _first_problem(conditions: list[pl.Expr], first_number: int) -> pl.Expr:
    """Number of the first true condition (counting from `first_number`), else 0."""
    problem: pl.Expr = pl.lit(0, dtype=pl.UInt8)
    for offset in range(len(conditions) - 1, -1, -1):  # the first failing check wins
        number = pl.lit(first_number + offset, dtype=pl.UInt8)
        problem = pl.when(conditions[offset]).then(number).otherwise(problem)
    return problem


def _clean_where_needed(
    raw: pl.Series, plain_re: str, clean: Callable[[pl.Series], pl.DataFrame]
) -> pl.DataFrame:
    """Columns _value and _problem for `raw`, running the cleanup only on rows that need it.

    A value matching `plain_re` is already what the cleanup would make of it and passes every
    check, so it is kept as is (no string copy). The other rows, usually few, go through
    `clean`, and their results are put back in place.
    """
    n = raw.len()
    needs_cleanup = ~raw.str.contains(plain_re).fill_null(False)
    positions = needs_cleanup.arg_true()
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
    ident = _clean_where_needed(frame.get_column(id_column), plain_re, clean_identifier)
    program = _clean_where_needed(
        frame.get_column(program_column), _PLAIN_PROGRAM_RE, clean_program
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
        message = (
            pl.when(duplicate & (first_file != pl.col("source_file")))
            .then(pl.format("same customer and program as row {} of {}", first_row, first_file))
            .when(duplicate)
            .then(pl.format("same customer and program as row {}", first_row))
            .otherwise(message)
        )
    position = [c for c in POSITION_COLUMNS if c in frame.columns]
    originals = [c for c in frame.columns if c != "_key" and c not in position]
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
    )


def load_source(job: Job) -> Source:
    """Read the job's input (file or glob) and validate every row; InputError if unusable."""
    if cloud.is_object_url(job.input.path):
        # An object's fingerprint is what the store says of it: listed before it is read.
        files = fingerprint_inputs(job)
        paths, is_glob = [f.path for f in files], len(files) > 1 or _glob_path(job)
        return _source(job, files, _load_rows(job, paths), is_glob)
    paths, is_glob = resolve_inputs(job)
    # hashlib releases the GIL: the files are hashed while polars reads and checks them.
    with ThreadPoolExecutor(max_workers=1) as pool:
        described = pool.submit(lambda: [describe_local(Path(p)) for p in paths])
        try:
            loaded = _load_rows(job, paths)
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


def _load_rows(job: Job, paths: list[str]) -> _Loaded:
    """The files' rows, validated, with what was learnt reading them."""
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
    frames: list[pl.DataFrame] = []
    columns: list[str] = []
    id_col, prog_col = job.input.identifier_column, job.input.program_column
    sheet: str | None = None
    blank_lines = 0
    float_files: list[str] = []
    original_names: dict[str, str] = {}
    for path in paths:
        label = display_name(path, job.base_dir)
        got = _read_file(path, fmt, job, label, notes)
        frame, id_col, prog_col = got.frame, got.id_col, got.prog_col
        sheet = sheet or got.sheet
        blank_lines += got.blank_lines
        original_names.update(got.original_names)
        if got.float_identifier:
            float_files.append(label)
        frames.append(frame)
        columns += [c for c in frame.columns if c not in POSITION_COLUMNS and c not in columns]
    try:
        combined = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as e:
        raise InputError(
            f"The files of {input_location(job)} cannot be combined: {e}.",
            hint="Each file's columns must have compatible types.",
        ) from e
    combined = combined.with_row_index("_key").with_columns(pl.col("_key").cast(pl.Int64))
    rows = validate_rows(combined, job.input.identifier, id_col, prog_col, national_mobiles(job))
    if float_files:
        rows = _explain_float_identifiers(rows, float_files, job.input.identifier_column)
    return _Loaded(fmt, columns, rows, id_col, prog_col, notes, sheet, blank_lines, original_names)


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
