"""Benchmark Excel hand-offs: read a workbook of N pairs, write a failures workbook of N rows.

    uv run python benchmarks/excel.py                 # 200,000 rows
    uv run python benchmarks/excel.py --rows 1000000  # about Excel's limit of a sheet

Reading goes through `load_source` (polars' read_excel with fastexcel, then validation); the
yardstick is the same file as CSV. Writing goes through `write_table(..., "xlsx")`
(xlsxwriter, one Python call per cell), against CSV.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    import polars as pl
    import xlsxwriter

    from batcher.input.source import load_source
    from batcher.input.tables import write_table
    from batcher.job import load_job

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    folder = Path(tempfile.mkdtemp(prefix="batcher-excel-bench-"))
    mobiles = [919800000000 + i // 2 for i in range(rows)]
    programs = [f"partner-0{i % 2}" for i in range(rows)]
    book = xlsxwriter.Workbook(str(folder / "pairs.xlsx"), {"constant_memory": True})
    sheet = book.add_worksheet("Pairs")
    sheet.write_row(0, 0, ["mobile", "partner_program_name"])
    for r, (m, p) in enumerate(zip(mobiles, programs, strict=True), start=1):
        sheet.write_number(r, 0, m)  # stored as numbers, as Excel does
        sheet.write_string(r, 1, p)
    book.close()
    pl.DataFrame({"mobile": [str(m) for m in mobiles], "partner_program_name": programs}).write_csv(
        folder / "pairs.csv"
    )
    figures = {}
    for fmt in ("xlsx", "csv"):
        job_path = folder / f"{fmt}.toml"
        job_path.write_text(
            f'name = "bench"\n[input]\npath = "pairs.{fmt}"\n[api]\nbase_url = "simulator"\n'
        )
        t = time.perf_counter()
        source = load_source(load_job(job_path))
        figures[f"read {fmt}"] = time.perf_counter() - t
        assert source.row_count == rows
        t = time.perf_counter()
        write_table(source.rows.select(source.columns), folder / f"out.{fmt}", fmt, sheet="Pairs")
        figures[f"write {fmt}"] = time.perf_counter() - t
    for name, seconds in figures.items():
        print(f"{name:>10}: {seconds:7.2f} s  ({rows / seconds:,.0f} rows/s)")


if __name__ == "__main__":
    main()
