"""Result tables: atomic, owner-only, and formula cells neutralised in CSV."""

from __future__ import annotations

import stat
from pathlib import Path

import polars as pl
import pytest

from batcher.input.tables import write_table


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("+1+cmd", "'+1+cmd"),
        ("-2+3", "'-2+3"),
        ("+91 98000-00001", "+91 98000-00001"),
        ("+91 (98) 000.00001", "+91 (98) 000.00001"),
        ("-5", "-5"),
        ("plain", "plain"),
    ],
)
def test_csv_neutralises_formulas_but_not_phone_numbers(
    tmp_path: Path, cell: str, written: str
) -> None:
    path = write_table(pl.DataFrame({"v": [cell]}), tmp_path / "t.csv", "csv")
    assert pl.read_csv(path, infer_schema=False).get_column("v").to_list() == [written]


def test_parquet_roundtrips_unchanged_and_lazy_frames_work(tmp_path: Path) -> None:
    frame = pl.DataFrame({"v": ["=1+1", None], "n": [1, 2]})
    path = write_table(frame.lazy(), tmp_path / "t.parquet", "parquet")
    assert pl.read_parquet(path).equals(frame)


def test_files_are_owner_only_and_no_temporary_is_left(tmp_path: Path) -> None:
    path = write_table(pl.DataFrame({"v": ["x"]}), tmp_path / "t.csv", "csv")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    write_table(pl.DataFrame({"v": ["old"]}), tmp_path / "t.csv", "csv")
    write_table(pl.DataFrame({"v": ["new"]}), tmp_path / "t.csv", "csv")
    assert (tmp_path / "t.csv").read_text(encoding="utf-8-sig") == "v\nnew\n"
