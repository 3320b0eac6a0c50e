"""Result tables (rejects, failures): atomic, owner-only, safe to open in a spreadsheet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import polars as pl

from batcher.errors import BatcherError

TableFormat = Literal["csv", "parquet", "xlsx"]
# Excel's rows per sheet, the header included.
XLSX_MAX_ROWS = 1_048_576

# A cell a spreadsheet would run as a formula: =, @, tab or CR first, or + / - followed by
# anything other than a phone-like number (digits, spaces, dashes, parentheses, dots).
_FORMULA_START_RE = r"^[=@\t\r]"
_SIGN_START_RE = r"^[+-]"
_PHONE_LIKE_RE = r"^[+-][0-9 ().\-]*$"


def neutralise_formula(column: str) -> pl.Expr:
    """Prefix formula-looking text with an apostrophe (the spreadsheet text marker)."""
    col = pl.col(column)
    risky = col.str.contains(_FORMULA_START_RE) | (
        col.str.contains(_SIGN_START_RE) & ~col.str.contains(_PHONE_LIKE_RE)
    )
    return pl.when(risky).then(pl.lit("'") + col).otherwise(col).alias(column)


def write_table(
    frame: pl.DataFrame | pl.LazyFrame,
    path: str | Path,
    fmt: TableFormat,
    *,
    sheet: str | None = None,
) -> Path:
    """Write `frame` to `path` as CSV, Parquet or Excel: via a temporary file, then an atomic
    rename. `sheet`: an Excel file's sheet name (that of the input, so the job reads it back)."""
    path = Path(path)
    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    if fmt == "csv":
        strings = [name for name, dtype in data.schema.items() if dtype == pl.String]
        data = data.with_columns(neutralise_formula(c) for c in strings)
    elif fmt == "xlsx":
        return _write_xlsx(data, path, sheet or "Sheet1")
    elif fmt != "parquet":
        raise ValueError(f"unknown table format {fmt!r}")
    tmp = path.with_name(f".{path.name}.tmp")
    # Created owner-only before any data goes in (it holds customer identifiers).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if fmt == "csv":
                data.write_csv(f)
            else:
                data.write_parquet(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_xlsx(data: pl.DataFrame, path: Path, sheet: str) -> Path:
    """An .xlsx whose text cells are always text: never a formula, a number or a link.

    So a mobile stays its digits and `=cmd|...` is shown, not run: no apostrophe is needed,
    unlike CSV. Numbers (row, code, attempts) are numbers.
    """
    import xlsxwriter

    if data.height >= XLSX_MAX_ROWS:
        raise BatcherError(
            f"{data.height:,} rows do not fit in one Excel sheet (at most {XLSX_MAX_ROWS - 1:,}).",
            hint="Write it as .parquet or .csv instead.",
        )
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)  # created owner-only; xlsxwriter writes into it by name
    try:
        book = xlsxwriter.Workbook(
            str(tmp),
            {
                "constant_memory": True,  # rows go to disk as written: any height, little memory
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        ws = book.add_worksheet(sheet[:31])  # Excel's limit on a sheet name
        ws.write_row(0, 0, data.columns)
        numeric = [dtype.is_numeric() for dtype in data.dtypes]
        for r, values in enumerate(data.iter_rows(), start=1):
            for c, value in enumerate(values):
                if value is None:
                    continue
                if numeric[c]:
                    ws.write_number(r, c, value)
                else:
                    ws.write_string(r, c, str(value))
        book.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
