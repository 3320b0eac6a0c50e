"""Result tables (rejects, failures): atomic, owner-only, safe to open in a spreadsheet, and
readable back by the same job as they are.

CSV is written in the input's dialect: its separator, and its encoding (UTF-8 with a BOM, so
that a spreadsheet shows accents; any other codec as itself), so a failures or rejects file
works as `--input` to the job it came from. batcher's own columns in those files are named
`batcher_*` (BATCHER_COLUMNS): a user's export never has them by accident, so they mark a file
fed back, and a user's own `status` or `note` column keeps its name.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from batcher.atomic import OWNER_ONLY, atomic_path
from batcher.errors import BatcherError

TableFormat = Literal["csv", "parquet", "xlsx"]
# Excel's rows per sheet, the header included.
XLSX_MAX_ROWS = 1_048_576

# batcher's verdict columns in the hand-off files, by the column they show. The prefix is the
# mark of a fed-back file (see source.py): a user's file may well have `status`, never these.
BATCHER_PREFIX = "batcher_"
FAILURE_VERDICT = ("status", "code", "message")
REJECT_HEAD = ("row", "source_file", "sheet")  # source_file for globs, sheet for workbooks
REJECT_VERDICT = ("status", "reason", "message", "duplicate_of")
BATCHER_COLUMNS = tuple(
    BATCHER_PREFIX + c for c in dict.fromkeys((*REJECT_HEAD, *FAILURE_VERDICT, *REJECT_VERDICT))
)

_UTF8 = {"utf8", "utf-8", "utf8-lossy", "utf-8-lossy", "utf_8"}
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class CsvDialect:
    """How a job's CSV files are written: its input's separator and encoding."""

    separator: str = ","
    encoding: str = "utf8"

    @property
    def is_utf8(self) -> bool:
        return self.encoding.lower() in _UTF8

    @property
    def codec(self) -> str:
        """The Python codec a file is written with: UTF-8 with its BOM, or the input's own."""
        return "utf-8-sig" if self.is_utf8 else self.encoding


def batcher_column(name: str) -> str:
    return BATCHER_PREFIX + name


# A cell a spreadsheet would run as a formula: =, @, tab or CR first, or + / - followed by
# anything other than a phone-like number (digits, spaces, dashes, parentheses, dots).
_FORMULA_START_RE = r"^[=@\t\r]"
_SIGN_START_RE = r"^[+-]"
_PHONE_LIKE_RE = r"^[+-][0-9 ().\-]*$"


def _formula_like(text: pl.Expr) -> pl.Expr:
    return text.str.contains(_FORMULA_START_RE) | (
        text.str.contains(_SIGN_START_RE) & ~text.str.contains(_PHONE_LIKE_RE)
    )


def neutralise_formula(column: str) -> pl.Expr:
    """Prefix formula-looking text with an apostrophe (the spreadsheet text marker).

    Also when it already has apostrophes in front (`'=x` becomes `''=x`), so that
    `restore_formula` undoes exactly this and nothing else: the two are inverses.
    """
    col = pl.col(column)
    risky = _formula_like(col.str.strip_chars_start("'"))
    return pl.when(risky).then(pl.lit("'") + col).otherwise(col).alias(column)


def restore_formula(column: str) -> pl.Expr:
    """Undo `neutralise_formula` (for a file batcher wrote)."""
    col = pl.col(column)
    marked = col.str.starts_with("'") & _formula_like(col.str.strip_chars_start("'"))
    return pl.when(marked).then(col.str.slice(1)).otherwise(col).alias(column)


def write_table(
    frame: pl.DataFrame | pl.LazyFrame,
    path: str | Path,
    fmt: TableFormat,
    *,
    sheet: str | None = None,
    dialect: CsvDialect | None = None,
    for_people: bool = True,
) -> Path:
    """Write `frame` to `path` as CSV, Parquet or Excel: via a temporary file, then an atomic
    rename. `sheet`: an Excel file's sheet name (that of the input, so the job reads it back).

    CSV is written in `dialect` (default: comma, UTF-8 with a BOM); `for_people` neutralises
    formula-looking cells (a file only batcher reads, such as a retry's input, is left as is).
    """
    path = Path(path)
    dialect = dialect or CsvDialect()
    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    if fmt == "csv" and for_people:
        strings = [name for name, dtype in data.schema.items() if dtype == pl.String]
        data = data.with_columns(neutralise_formula(c) for c in strings)
    elif fmt == "xlsx":
        return _write_xlsx(data, path, sheet or "Sheet1")
    elif fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown table format {fmt!r}")
    # Owner-only before any data goes in (it holds customer identifiers).
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if fmt == "csv" and dialect.is_utf8:
            f.write(_BOM)  # how a spreadsheet knows the file is UTF-8
            data.write_csv(f, separator=dialect.separator)
        elif fmt == "csv":
            # Every input value came from this encoding, so it encodes back; only text
            # batcher adds (an API message) could hold a character it lacks.
            text = data.write_csv(separator=dialect.separator)
            f.write(text.encode(dialect.encoding, errors="replace"))
        else:
            data.write_parquet(f)
    return path


def _write_xlsx(data: pl.DataFrame, path: Path, sheet: str) -> Path:
    """An .xlsx whose text cells are always text: never a formula, a number or a link.

    So a mobile stays its digits and `=cmd|...` is shown, not run: no apostrophe is needed,
    unlike CSV. Numbers (row, code, attempts) are numbers. xlsxwriter writes the workbook with
    the header row; the data rows are built as the sheet's XML by polars (the same inline
    strings xlsxwriter writes, about ten times faster than a Python call per cell) and put in.
    """
    import xlsxwriter

    if data.height >= XLSX_MAX_ROWS:
        raise BatcherError(
            f"{data.height:,} rows do not fit in one Excel sheet (at most {XLSX_MAX_ROWS - 1:,}).",
            hint="Write it as .parquet or .csv instead.",
        )
    skeleton = path.with_name(f".{path.name}.head.tmp")
    # Created owner-only before any data goes in.
    os.close(os.open(skeleton, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY))
    try:
        book = xlsxwriter.Workbook(
            str(skeleton),
            {
                "constant_memory": True,  # inline strings, as the rows below
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        ws = book.add_worksheet(sheet[:31])  # Excel's limit on a sheet name
        for c, column in enumerate(data.columns):
            ws.write_string(0, c, column)
        book.close()
        with atomic_path(path) as tmp:
            _splice_rows(skeleton, tmp, data)
    finally:
        skeleton.unlink(missing_ok=True)
    return path


_SHEET_XML = "xl/worksheets/sheet1.xml"
_CHUNK_ROWS = 100_000
# XML 1.0 has no place for these: written as Excel's _xHHHH_ escapes, as xlsxwriter does.
_CONTROL_CHARS = [chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20))]
_ESCAPE_LIKE_RE = r"_x([0-9A-Fa-f]{4})_"
_AWKWARD_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f]|_x[0-9A-Fa-f]{4}_"


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _cell_xml(name: str, dtype: pl.DataType, letters: str, awkward: bool) -> pl.Expr:
    """One column's cells as XML (empty for a null), for rows numbered in `_r`.

    `awkward`: the column holds control characters or `_xHHHH_` (rare): escape them too.
    """
    col = pl.col(name)
    ref = pl.concat_str(pl.lit(f'<c r="{letters}'), pl.col("_r"))
    if dtype.is_numeric():
        missing = col.is_null() | col.is_nan() if dtype.is_float() else col.is_null()
        number = pl.concat_str(ref, pl.lit('"><v>'), col.cast(pl.String), pl.lit("</v></c>"))
        return pl.when(missing).then(pl.lit("")).otherwise(number)
    text = col.cast(pl.String)
    if awkward:
        # A literal "_x0041_" would read back as "A": its underscore is escaped first.
        text = text.str.replace_all(_ESCAPE_LIKE_RE, "_x005F_x${1}_")
        for char in _CONTROL_CHARS:
            text = text.str.replace_all(char, f"_x{ord(char):04X}_", literal=True)
    text = (
        text.str.replace_all("&", "&amp;", literal=True)
        .str.replace_all("<", "&lt;", literal=True)
        .str.replace_all(">", "&gt;", literal=True)
    )
    return (
        pl.when(col.is_null())
        .then(pl.lit(""))
        .otherwise(
            pl.concat_str(
                ref,
                pl.lit('" t="inlineStr"><is><t xml:space="preserve">'),
                text,
                pl.lit("</t></is></c>"),
            )
        )
    )


def _splice_rows(skeleton: Path, out: Path, data: pl.DataFrame) -> None:
    """Copy the workbook `skeleton` to `out`, with `data`'s rows (from row 2) in its sheet."""
    import zipfile

    letters = [_column_letters(i) for i in range(max(data.width, 1))]
    strings = [n for n, t in data.schema.items() if not t.is_numeric()]
    found = data.select(pl.col(n).cast(pl.String).str.contains(_AWKWARD_RE).any() for n in strings)
    awkward = {n for n in strings if found.get_column(n).item()} if data.height else set()
    cells = [
        _cell_xml(name, dtype, letters[i], name in awkward).alias(f"_c{i}")
        for i, (name, dtype) in enumerate(data.schema.items())
    ]
    with (
        zipfile.ZipFile(skeleton) as src,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            if item.filename != _SHEET_XML:
                dst.writestr(item, src.read(item.filename))
                continue
            xml = src.read(item.filename).decode("utf-8")
            last = f"{letters[-1]}{data.height + 1}"
            xml = re.sub(r'<dimension ref="[^"]*"/>', f'<dimension ref="A1:{last}"/>', xml, count=1)
            head, tail = xml.split("</sheetData>", 1)
            with dst.open(zipfile.ZipInfo(item.filename, item.date_time), "w") as f:
                f.write(head.encode("utf-8"))
                for start in range(0, data.height, _CHUNK_ROWS):
                    chunk = data.slice(start, _CHUNK_ROWS)
                    first = start + 2  # row 1 is the header
                    chunk = chunk.with_columns(
                        _r=pl.int_range(first, first + chunk.height).cast(pl.String)
                    )
                    rows = chunk.select(
                        pl.concat_str(
                            pl.lit('<row r="'), pl.col("_r"), pl.lit('">'), *cells, pl.lit("</row>")
                        )
                    ).to_series()
                    f.write("".join(rows.to_list()).encode("utf-8"))
                f.write(("</sheetData>" + tail).encode("utf-8"))


def sink_table(
    frame: pl.LazyFrame,
    path: str | Path,
    fmt: TableFormat,
    *,
    sheet: str | None = None,
    dialect: CsvDialect | None = None,
) -> Path:
    """`write_table` for a frame too big to hold: streamed to the file, never collected
    (except for Excel, whose sheets hold at most a million rows anyway)."""
    path = Path(path)
    dialect = dialect or CsvDialect()
    if fmt == "xlsx":
        return write_table(frame, path, fmt, sheet=sheet)
    if fmt == "csv":
        strings = [name for name, dtype in frame.collect_schema().items() if dtype == pl.String]
        frame = frame.with_columns(neutralise_formula(c) for c in strings)
    elif fmt != "parquet":
        raise ValueError(f"unknown table format {fmt!r}")
    with atomic_path(path) as tmp:  # owner-only from birth
        if fmt == "csv" and dialect.is_utf8:
            # Straight into the file: a copy through a scratch file cost 3 s a GB.
            frame.sink_csv(tmp, separator=dialect.separator, include_bom=True)
        elif fmt == "csv":
            raw = path.with_name(f".{path.name}.raw")
            try:
                frame.sink_csv(raw, separator=dialect.separator)
                _transcode(raw, tmp, dialect)
            finally:
                raw.unlink(missing_ok=True)
        else:
            frame.sink_parquet(tmp)
    return path


def _transcode(raw: Path, out: Path, dialect: CsvDialect) -> None:
    """Copy polars' UTF-8 CSV into `out` in the dialect's encoding (with a BOM for UTF-8),
    a block at a time."""
    with (
        open(raw, encoding="utf-8", newline="") as src,
        open(out, "w", encoding=dialect.codec, errors="replace", newline="") as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 20)
