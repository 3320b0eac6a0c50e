"""Result tables (rejects, failures): atomic, owner-only, safe to open in a spreadsheet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import polars as pl

TableFormat = Literal["csv", "parquet"]

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


def write_table(frame: pl.DataFrame | pl.LazyFrame, path: str | Path, fmt: TableFormat) -> Path:
    """Write `frame` to `path` as CSV or Parquet: via a temporary file, then an atomic rename."""
    path = Path(path)
    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    if fmt == "csv":
        strings = [name for name, dtype in data.schema.items() if dtype == pl.String]
        data = data.with_columns(neutralise_formula(c) for c in strings)
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
