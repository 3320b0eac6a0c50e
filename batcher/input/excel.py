"""Excel workbooks (.xlsx) as input: one sheet, every cell read as text, rows as in the sheet.

polars' `read_excel` with the fastexcel (calamine) engine, every column as text: a 12-digit
mobile Excel stored as a number comes out as its digits (`919800000000`, never `9.198E+11`
or `919800000000.0`), while text a spreadsheet already turned into scientific notation stays
as it is and is rejected by validation. `row` numbers the sheet's rows under the header
(1 for the first), so a wholly empty row is skipped but keeps its number: row N is the
sheet's row N + 1 when the header is on row 1.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from xml.etree import ElementTree

import polars as pl

from batcher.errors import InputError

SHEET_ROW = "__sheet_row"  # the row number column while reading (renamed `row` later)
MAX_SHEET_ROWS = 1_048_576  # Excel's limit, header included
_UNNAMED_RE = re.compile(r"__UNNAMED__([0-9]+)")
_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}


@dataclass(frozen=True, slots=True)
class Sheet:
    """One sheet's rows: every column as text, plus SHEET_ROW (1 = first row under the header)."""

    name: str
    frame: pl.DataFrame
    blank_rows: int = 0  # wholly empty rows under the header, skipped (they keep their numbers)


def sheet_names(data: bytes, label: str) -> list[str]:
    import fastexcel

    try:
        return list(fastexcel.read_excel(data).sheet_names)
    except Exception as e:  # fastexcel's errors (CalamineError, ...) share only Exception
        raise _unreadable(label, e) from e


def _unreadable(label: str, e: BaseException) -> InputError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return InputError(
        f"Input file {label} cannot be read as an Excel workbook: {first}.",
        hint="Save it from Excel as .xlsx (Excel Workbook); an .xls or a CSV renamed to .xlsx "
        "is not one.",
    )


def pick_sheet(names: list[str], wanted: str | int, label: str) -> str:
    """The sheet `input.sheet` names: by name, or by index from 0."""
    listed = ", ".join(repr(n) for n in names) or "none"
    if isinstance(wanted, int):
        if wanted < len(names):
            return names[wanted]
        raise InputError(
            f"Input file {label} has no sheet number {wanted} (counting from 0); its sheets "
            f"are: {listed}.",
            hint="Set input.sheet in the job file to a sheet's name or index.",
        )
    if wanted in names:
        return wanted
    raise InputError(
        f"Input file {label} has no sheet {wanted!r}; its sheets are: {listed}.",
        hint="Set input.sheet in the job file to one of them (a name, or an index from 0).",
    )


def read_sheet(data: bytes, wanted: str | int, label: str) -> Sheet:
    """Read one sheet of a workbook; InputError for a file or header that cannot be used."""
    name = pick_sheet(sheet_names(data, label), wanted, label)
    try:
        frame = pl.read_excel(
            data,
            sheet_name=name,
            engine="calamine",
            infer_schema_length=0,  # every column as text
            drop_empty_rows=False,  # dropped below, after numbering, so numbers match the sheet
            raise_if_empty=False,
        )
    except Exception as e:
        raise _unreadable(label, e) from e
    _check_header(frame.columns, data, name, label)
    if not frame.columns:
        return Sheet(name, pl.DataFrame(schema={SHEET_ROW: pl.Int64}))
    # Every column as text: a column of empty cells comes back as nulls of another type.
    frame = frame.with_columns(pl.all().cast(pl.String))
    numbered = frame.with_row_index(SHEET_ROW, offset=1).with_columns(
        pl.col(SHEET_ROW).cast(pl.Int64)
    )
    blank = pl.all_horizontal(
        (pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")) for c in frame.columns
    )
    empty = numbered.select(blank.alias("blank")).to_series()
    return Sheet(name, numbered.filter(~empty), int(empty.sum()))


def _check_header(columns: list[str], data: bytes, sheet: str, label: str) -> None:
    unnamed = [c for c in columns if _UNNAMED_RE.fullmatch(c)]
    if unnamed:
        merged = merged_ranges(data, sheet)[:3]
        position = int(_UNNAMED_RE.fullmatch(unnamed[0]).group(1))  # type: ignore[union-attr]
        if merged:
            raise InputError(
                f"Input file {label}, sheet {sheet!r}: the header has merged cells "
                f"({', '.join(merged)}), so some columns have no name.",
                hint="Unmerge the header cells in Excel and give every column its own name in "
                "one header row, then save the workbook again.",
            )
        raise InputError(
            f"Input file {label}, sheet {sheet!r}: header cell {position + 1} (column "
            f"{_column_letter(position)}) is empty, so that column has no name.",
            hint="Give every column a name in the header row (the first row of the sheet).",
        )
    for c in columns:
        m = re.fullmatch(r"(.+)_[0-9]+", c)
        if m and m.group(1) in columns:
            raise InputError(
                f"Input file {label}, sheet {sheet!r} has the column {m.group(1)!r} more than "
                "once in its header.",
                hint="Rename or remove the repeated column, so each column name is used once.",
            )


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def merged_ranges(data: bytes, sheet: str) -> list[str]:
    """The merged cell ranges of a sheet ("A1:B1", ...), read from the workbook's XML."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            # The operator's own workbook; expat (>= 2.4) refuses entity-expansion bombs.
            book = ElementTree.fromstring(z.read("xl/workbook.xml"))  # noqa: S314
            rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))  # noqa: S314
            rid = next(
                (
                    s.get(f"{{{_NS['r']}}}id")
                    for s in book.iterfind("m:sheets/m:sheet", _NS)
                    if s.get("name") == sheet
                ),
                None,
            )
            target = next(
                (
                    r.get("Target")
                    for r in rels.iterfind("rel:Relationship", _NS)
                    if r.get("Id") == rid
                ),
                None,
            )
            if target is None:
                return []
            part = (
                target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)
            )
            with z.open(part) as f:
                return [
                    el.get("ref", "")
                    for _, el in ElementTree.iterparse(f)  # noqa: S314
                    if el.tag == f"{{{_NS['m']}}}mergeCell"
                ]
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError):
        return []
