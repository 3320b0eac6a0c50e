"""Excel inputs: workbooks written here by openpyxl, read by batcher as Excel would show them.

Numbers and text cells, empty rows, a second sheet, merged header cells; and a run whose
failures and rejects come back as .xlsx files that work as --input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pytest
from click.testing import CliRunner

from batcher.cli import main
from batcher.errors import InputError
from batcher.input.source import load_source
from batcher.job import load_job
from tests.conftest import (
    DEMO_ENV,
    REPO,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
)

HEADER = ["mobile", "partner_program_name", "region"]


def workbook(path: Path, sheets: dict[str, list[list[Any]]], merge: str | None = None) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        ws = book.create_sheet(name)
        for r in rows:
            ws.append(r)
            for cell in ws[ws.max_row]:
                if isinstance(cell.value, str) and cell.value.startswith("="):
                    cell.data_type = "s"  # text that looks like a formula, as a paste leaves it
        if merge:
            ws.merge_cells(merge)
    book.save(path)
    return path


def excel_job(
    directory: Path,
    input_path: str = "pairs.xlsx",
    *,
    base_url: str = "simulator",
    sheet: str | int | None = None,
) -> Path:
    sheet_line = f"sheet = {json.dumps(sheet)}\n" if sheet is not None else ""
    path = directory / "job.toml"
    path.write_text(
        f'name = "xl"\n[input]\npath = "{input_path}"\n{sheet_line}'
        f'[api]\nbase_url = "{base_url}"\nrate = "1000/second"\ntimeout_seconds = 30\n'
        "[retry]\nmax_attempts = 6\nbackoff_base_seconds = 0.01\nbackoff_max_seconds = 0.05\n"
        f'[output]\ndir = "{directory / "out"}"\n'
    )
    return path


def test_numbers_and_text_cells_come_out_as_the_digits_excel_shows(tmp_path: Path) -> None:
    workbook(
        tmp_path / "pairs.xlsx",
        {
            "Pairs": [
                HEADER,
                [919800000001, "Gold", 7],  # a 12-digit mobile stored as a number
                ["919800000002", "Gold", "north"],  # the same, stored as text
                [9.198e11, "Silver", None],  # a float that is a whole number
                ["9.198E+11", "Silver", None],  # text already in scientific notation
                [919800000003.5, "Gold", None],  # not a whole number
                ["+91 98000-00004", 12345, 1.5],  # text with noise; a numeric program name
            ]
        },
    )
    src = load_source(load_job(excel_job(tmp_path)))
    rows = src.rows.select("row", "sheet", "mobile", "_customer", "_program", "status", "reason")
    assert rows.rows() == [
        (1, "Pairs", "919800000001", "919800000001", "Gold", "valid", None),
        (2, "Pairs", "919800000002", "919800000002", "Gold", "valid", None),
        (3, "Pairs", "919800000000", "919800000000", "Silver", "valid", None),
        (4, "Pairs", "9.198E+11", None, None, "rejected", "mobile_in_scientific_notation"),
        (5, "Pairs", "919800000003.5", None, None, "rejected", "invalid_mobile"),
        (6, "Pairs", "+91 98000-00004", "919800000004", "12345", "valid", None),
    ]
    # Every column is text, extra ones too: 7 is "7", never 7.0.
    assert src.rows.get_column("region").to_list() == ["7", "north", None, None, None, "1.5"]
    assert src.format == "xlsx" and src.sheet == "Pairs"
    assert src.columns == HEADER


def test_empty_rows_are_skipped_but_keep_their_numbers(tmp_path: Path) -> None:
    workbook(
        tmp_path / "pairs.xlsx",
        {
            "Pairs": [
                HEADER,
                [mobile(1), "Gold", None],
                [None, None, None],
                [None, "  ", None],  # only blanks: empty too
                [mobile(2), "Gold", None],
                [None, "Gold", None],  # a program without a customer is a row, and a reject
            ]
        },
    )
    src = load_source(load_job(excel_job(tmp_path)))
    assert src.rows.select("row", "status").rows() == [
        (1, "valid"),
        (4, "valid"),
        (5, "rejected"),
    ]
    assert src.counts() == {"valid": 2, "rejected": 1, "duplicate": 0}
    assert src.blank_lines == 2  # counted in summary.json as input.blank_lines_skipped


def test_a_second_sheet_by_name_or_index_and_a_missing_one(tmp_path: Path) -> None:
    workbook(
        tmp_path / "pairs.xlsx",
        {
            "Notes": [["read me"], ["this sheet is not the data"]],
            "Pairs": [HEADER, [mobile(1), "Gold", "x"], [mobile(2), "Gold", "y"]],
        },
    )
    for sheet in ("Pairs", 1):
        src = load_source(load_job(excel_job(tmp_path, sheet=sheet)))
        assert src.sheet == "Pairs" and src.counts()["valid"] == 2
    # The default is the first sheet, which has no mobile column: the error lists its columns.
    with pytest.raises(InputError, match=r"no column 'mobile'.*'read me'"):
        load_source(load_job(excel_job(tmp_path)))
    with pytest.raises(InputError, match="no sheet 'Pears'; its sheets are: 'Notes', 'Pairs'"):
        load_source(load_job(excel_job(tmp_path, sheet="Pears")))
    with pytest.raises(InputError, match="no sheet number 5"):
        load_source(load_job(excel_job(tmp_path, sheet=5)))


def test_merged_header_cells_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    workbook(
        tmp_path / "pairs.xlsx",
        {"Pairs": [["customer", None, "partner_program_name"], [mobile(1), "x", "Gold"]]},
        merge="A1:B1",
    )
    job = excel_job(tmp_path)
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert "the header has merged cells (A1:B1)" in result.output
    assert "Unmerge the header cells" in result.output
    assert "Traceback" not in result.output


def test_an_empty_header_cell_and_a_repeated_column_are_refused(tmp_path: Path) -> None:
    workbook(tmp_path / "pairs.xlsx", {"Pairs": [["mobile", None, "x"], [mobile(1), "Gold", 1]]})
    with pytest.raises(InputError, match=r"header cell 2 \(column B\) is empty"):
        load_source(load_job(excel_job(tmp_path)))
    workbook(tmp_path / "pairs.xlsx", {"Pairs": [["mobile", "mobile"], [mobile(1), mobile(2)]]})
    with pytest.raises(InputError, match="'mobile' more than once"):
        load_source(load_job(excel_job(tmp_path)))


def test_not_a_workbook_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "pairs.xlsx").write_text("mobile,partner_program_name\n919800000001,Gold\n")
    with pytest.raises(InputError, match="cannot be read as an Excel workbook"):
        load_source(load_job(excel_job(tmp_path)))


def test_header_only_and_empty_sheets_have_zero_rows(tmp_path: Path) -> None:
    workbook(tmp_path / "pairs.xlsx", {"Pairs": [HEADER], "Empty": []})
    assert load_source(load_job(excel_job(tmp_path))).row_count == 0
    assert load_source(load_job(excel_job(tmp_path, sheet="Empty"))).row_count == 0


def test_failures_and_rejects_of_a_workbook_are_workbooks_that_work_as_input(
    tmp_path: Path, simulator: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in DEMO_ENV.items():
        monkeypatch.setenv(k, v)
    sim = simulator(clean_profile(state={"link_probability": 1.0}))
    unknown = [mobile(200_000 + i) for i in range(3)]  # beyond the simulator's customers
    workbook(
        tmp_path / "pairs.xlsx",
        {
            "Notes": [["see the Pairs sheet"]],
            "Pairs": [
                HEADER,
                *([int(mobile(i)), "partner-01", f"r{i}"] for i in range(5)),
                *([int(m), "partner-02", "=HYPERLINK(1)"] for m in unknown),
                ["not-a-mobile", "partner-01", None],
                [int(mobile(0)), "partner-01", None],  # a duplicate of row 1
            ],
        },
    )
    job = excel_job(tmp_path, base_url=sim.base_url, sheet="Pairs")

    result = CliRunner().invoke(main, ["run", str(job), "--quiet"])

    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(tmp_path / "out", "xl")
    counts = read_summary(run_dir)["counts"]
    assert counts == {
        "delinked": 5,
        "delinked_unconfirmed": 0,
        "not_linked": 0,
        "failed": 3,
        "retryable": 0,
        "rejected": 1,
        "duplicate": 1,
    }
    outcomes = pl.read_parquet(run_dir / "outcomes.parquet")
    assert outcomes.columns[:4] == ["row", "source_file", "sheet", "mobile"]
    assert set(outcomes.get_column("sheet")) == {"Pairs"}
    # Failures: an Excel file, the input's sheet name, the mobiles as text, formulas not run.
    failures = pl.read_excel(run_dir / "failures.xlsx", sheet_name="Pairs", infer_schema_length=0)
    assert failures.columns == [*HEADER, "batcher_status", "batcher_code", "batcher_message"]
    assert failures.get_column("mobile").to_list() == unknown
    assert set(failures.get_column("region")) == {"=HYPERLINK(1)"}
    book = openpyxl.load_workbook(run_dir / "failures.xlsx")
    assert book["Pairs"]["A2"].data_type == "s" and book["Pairs"]["C2"].data_type == "s"
    rejects = pl.read_excel(run_dir / "rejects.xlsx", sheet_name="Pairs", infer_schema_length=0)
    assert rejects.select("batcher_row", "batcher_sheet", "mobile", "batcher_status").rows() == [
        ("9", "Pairs", "not-a-mobile", "rejected"),
        ("10", "Pairs", mobile(0), "duplicate"),
    ]
    requests_before = sim.snapshot(pairs=False)["counters"]["delink_requests"]

    # The failures file, fed back as is: the same three pairs are sent again, nothing else.
    again = CliRunner().invoke(
        main, ["run", str(job), "--quiet", "--input", str(run_dir / "failures.xlsx")]
    )

    assert again.exit_code == 1, again.output
    (second,) = set((tmp_path / "out" / "xl").iterdir()) - {run_dir}  # ids share a second
    summary = read_summary(second)
    assert summary["counts"]["failed"] == 3 and summary["input"]["rows"] == 3
    assert any("batcher_status" in n and "fed back" in n for n in summary["input"]["notes"])
    snap = sim.snapshot()
    assert snap["counters"]["delink_requests"] > requests_before
    attempts = {(p["mobile"], p["program"]): p["attempts"] for p in snap["pairs"]}
    assert all(attempts[(m, "partner-02")] == 2 for m in unknown)
    assert all(attempts[(mobile(i), "partner-01")] == 1 for i in range(5))
    # A retry of the first run: its input is a workbook with the same sheet name.
    retried = CliRunner().invoke(main, ["retry", str(run_dir), "--all", "--quiet"])
    assert retried.exit_code == 1, retried.output
    (child,) = set((tmp_path / "out" / "xl").iterdir()) - {run_dir, second}
    assert read_summary(child)["input"]["rows"] == 3
    assert pl.read_excel(child / "input.xlsx", sheet_name="Pairs").height == 3
    # One final answer per original row, as a workbook too.
    final = tmp_path / "final.xlsx"
    report = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(final)])
    assert report.exit_code == 0, report.output
    merged = pl.read_excel(final, sheet_name="report", infer_schema_length=0)
    assert merged.height == 10 and merged.get_column("mobile").to_list()[0] == mobile(0)


def test_the_excel_example_job_reads_its_workbook(tmp_path: Path) -> None:
    job = REPO / "jobs/examples/excel.toml"
    result = CliRunner().invoke(main, ["validate", str(job), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = read_summary(only_run_dir(tmp_path, "excel-example"))
    assert summary["counts"] == {"valid": 24, "rejected": 1, "duplicate": 1}
    assert summary["reasons"] == {"mobile_in_scientific_notation": 1}


def test_the_xlsx_writer_keeps_awkward_text_as_text(tmp_path: Path) -> None:
    """What a CRM export holds comes back unchanged, read by calamine and by openpyxl."""
    from batcher.input.tables import write_table

    texts = [
        "=HYPERLINK(1)",
        "  leading and trailing  ",
        "a & b < c > d",
        "bell\x07 and nul\x00",
        "_x0041_ stays",
        "tab\tand\nnewline",
        "+919800000001",
        "ünïcödé ✓",
        None,
        "",
    ]
    frame = pl.DataFrame(
        {
            "text": texts,
            "row": list(range(1, 11)),
            "ratio": [0.5, None, float("nan"), 1.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    path = write_table(frame, tmp_path / "awkward.xlsx", "xlsx", sheet="Pairs")
    back = pl.read_excel(path, sheet_name="Pairs")
    assert back.get_column("text").to_list() == texts
    assert back.get_column("row").to_list() == list(range(1, 11))
    assert back.get_column("ratio").to_list()[:2] == [0.5, None]
    book = openpyxl.load_workbook(path)
    cells = [c.value for c in book["Pairs"]["A"][1:]]
    # openpyxl leaves Excel's _xHHHH_ escapes (control characters) undecoded, and reads an
    # empty text cell as a blank; the rest it reads as written.
    assert [c for i, c in enumerate(cells) if i not in (3, 4, 9)] == [
        t for i, t in enumerate(texts) if i not in (3, 4, 9)
    ]
    assert all(c.data_type == "s" for c in book["Pairs"]["A"][1:] if c.value is not None)
    empty = write_table(frame.head(0), tmp_path / "empty.xlsx", "xlsx")
    assert pl.read_excel(empty, sheet_name="Sheet1").columns == ["text", "row", "ratio"]
