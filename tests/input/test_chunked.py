"""Validation a chunk at a time gives exactly the rows of a validation of the whole input.

A big input is read and validated CHUNK_ROWS rows at a time and its rows wait on disk; here the
chunk is forced down to a few rows, so that duplicates, rejects, blank lines and files straddle
chunk boundaries, and every result is compared with the one-chunk (whole input) path.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batcher.errors import InputError
from batcher.input import source as source_module
from batcher.input.source import Source, count_national_mobiles, load_source
from batcher.job import Job, load_job

WHOLE = 10**9


def _job(tmp_path: Path, path: str, identifier: str = "mobile", extra: str = "") -> Job:
    job = tmp_path / "job.toml"
    job.write_text(
        f'name = "t"\n[input]\npath = "{path}"\nidentifier = "{identifier}"\n{extra}'
        '[api]\nbase_url = "simulator"\n'
    )
    return load_job(job)


def _load(
    job: Job,
    chunk_rows: int,
    monkeypatch: pytest.MonkeyPatch,
    *,
    keep_pairs: bool = True,
    keep_rows: bool = True,
) -> Source:
    monkeypatch.setattr(source_module, "CHUNK_ROWS", chunk_rows)
    return load_source(job, keep_pairs=keep_pairs, keep_rows=keep_rows)


def _mobile_lines(seed: int, count: int) -> list[str]:
    """Lines of a CSV body: valid mobiles in many spellings, rejects, blanks, repeats."""
    shared = random.Random(0)  # every file draws from the same customers
    customers = [f"9198{shared.randrange(10**8):08d}" for _ in range(12)]
    rng = random.Random(seed)
    programs = ["partner-01", "partner-02", " partner-03 ", "'partner-04", "partner-05"]
    lines: list[str] = []
    for _ in range(count):
        kind = rng.random()
        mobile = rng.choice(customers)
        program = rng.choice(programs)
        if kind < 0.05:
            lines.append("")  # a blank line: not a row, but it keeps its number
        elif kind < 0.10:
            lines.append(",")  # a row of empty cells
        elif kind < 0.15:
            lines.append(f"12345,{program}")  # too short
        elif kind < 0.18:
            lines.append(f"9.19E+11,{program}")  # scientific notation
        elif kind < 0.21:
            lines.append(f"{mobile},")  # no program
        elif kind < 0.24:
            lines.append(f'{mobile},"bad\tprogram"')  # control character
        elif kind < 0.40:
            lines.append(f"+{mobile[:2]} {mobile[2:7]}-{mobile[7:]},{program}")  # normalised
        elif kind < 0.50:
            lines.append(f"{mobile[2:]},{program}")  # national: completed with 91
        elif kind < 0.55:
            lines.append(f"0{mobile[2:]},{program}")  # trunk 0 and national digits
        else:
            lines.append(f"{mobile},{program}")
    return lines


def _assert_same(whole: Source, chunked: Source, *, kept_pairs: bool = True) -> None:
    assert whole.parked is None
    assert_frame_equal(chunked.scan().collect(), whole.rows)
    _assert_same_for_validate(whole, chunked, kept_pairs=kept_pairs)


def _assert_same_for_validate(whole: Source, chunked: Source, *, kept_pairs: bool = True) -> None:
    """What `validate` reads of a Source is the whole input's: counts, pairs, not-valid rows."""
    assert chunked.counts() == whole.counts()
    assert chunked.reason_counts() == whole.reason_counts()
    assert chunked.row_count == whole.row_count
    assert (chunked.blank_lines, chunked.notes, chunked.columns) == (
        whole.blank_lines,
        whole.notes,
        whole.columns,
    )
    assert_frame_equal(chunked.pairs(), whole.pairs())
    assert_frame_equal(chunked.not_valid().collect(), whole.not_valid().collect())
    # validate keeps the pairs in memory; a run (keep_pairs=False) reads them from the rows.
    assert chunked.parked is not None and (chunked.parked.pairs is not None) == kept_pairs
    for digits in (9, 10):
        assert count_national_mobiles(chunked, digits) == count_national_mobiles(whole, digits)


def _assert_same_without_rows(
    whole: Source, job: Job, chunk_rows: int, mp: pytest.MonkeyPatch
) -> None:
    """`validate`'s load (keep_rows=False) keeps no valid rows, and gives what it needs as the
    whole input does, the rows made duplicates across chunks included."""
    slim = _load(job, chunk_rows, mp, keep_rows=False)
    assert slim.parked is not None and not slim.parked.kept
    _assert_same_for_validate(whole, slim)
    # Only the rejected and duplicate rows were parked, each chunk's in its own part.
    parked = [pl.read_ipc(part) for part in slim.parked.parts]
    assert len(parked) == len(slim.parked.starts)
    assert sum(p.height for p in parked) == whole.row_count - whole.counts()["valid"]
    with pytest.raises(RuntimeError, match="not kept"):
        slim.scan()
    # Both kinds of row made a duplicate of a row of an earlier chunk are there: rows valid in
    # their chunk (not kept, read again) and rows already duplicates in their chunk (kept).
    starts = pl.Series(slim.parked.starts, dtype=pl.Int64)
    pair = ("_customer", "_program")
    chunk = (pl.lit(starts).search_sorted(pl.col("_key"), side="right") - 1).alias("_chunk")
    across = (
        whole.rows.filter(pl.col("status") != "rejected")
        .with_columns(chunk)
        .with_columns(
            _first_chunk=pl.col("_chunk").min().over(pair),
            _first_in_chunk=pl.col("_key") == pl.col("_key").min().over(*pair, "_chunk"),
        )
        .filter(pl.col("_chunk") != pl.col("_first_chunk"))
    )
    kinds = set(across.get_column("_first_in_chunk"))
    assert True in kinds
    assert False in kinds or chunk_rows < 7  # a chunk of 2 or 3 rows rarely holds a pair twice


@pytest.mark.parametrize("chunk_rows", [2, 7, 64])
def test_chunked_csv_glob_matches_the_whole_input(
    tmp_path: Path, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "mobile,partner_program_name,note"
    for n, seed in enumerate((1, 2, 3)):
        lines = [f"{line},from file {n}" if line else line for line in _mobile_lines(seed, 150)]
        (tmp_path / f"in-{n}.csv").write_text("\n".join([header, *lines]) + "\n")
    job = _job(tmp_path, "in-*.csv", extra='default_country_code = "91"\n')
    whole = _load(job, WHOLE, monkeypatch)
    chunked = _load(job, chunk_rows, monkeypatch)
    assert chunked.parked is not None, "the input is bigger than a chunk: validated in chunks"
    counts = whole.counts()
    assert counts["duplicate"] > 50 and counts["rejected"] > 20 and whole.blank_lines > 5
    across_files = whole.rows.filter(pl.col("message").str.contains(" of in-"))
    assert across_files.height > 0, "some duplicates name a first row in another file"
    _assert_same(whole, chunked)
    # A run's validation keeps no pairs in memory and gives the same rows and pairs.
    _assert_same(whole, _load(job, chunk_rows, monkeypatch, keep_pairs=False), kept_pairs=False)
    _assert_same_without_rows(whole, job, chunk_rows, monkeypatch)


@pytest.mark.parametrize("chunk_rows", [3, 100])
def test_chunked_parquet_with_integer_and_float_identifiers(
    tmp_path: Path, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    mobiles = [919800000000 + rng.randrange(40) for _ in range(300)]
    programs = [f"partner-{rng.randrange(4)}" for _ in range(300)]
    pl.DataFrame({"mobile": mobiles, "partner_program_name": programs}).write_parquet(
        tmp_path / "a.parquet"
    )
    floats = [float(m) for m in mobiles[:20]]
    pl.DataFrame({"mobile": floats, "partner_program_name": programs[:20]}).write_parquet(
        tmp_path / "b.parquet"
    )
    job = _job(tmp_path, "a.parquet")
    whole = _load(job, WHOLE, monkeypatch)
    _assert_same(whole, _load(job, chunk_rows, monkeypatch))
    _assert_same_without_rows(whole, job, chunk_rows, monkeypatch)
    # The float file's rows are rejected with their explanation, chunk by chunk too.
    both = _job(tmp_path, "*.parquet")
    whole = _load(both, WHOLE, monkeypatch)
    _assert_same(whole, _load(both, chunk_rows, monkeypatch))
    _assert_same_without_rows(whole, both, chunk_rows, monkeypatch)
    # Two files typing another column differently are combined whole, as before.
    pl.DataFrame(
        {"mobile": mobiles[:9], "partner_program_name": programs[:9], "n": list(range(9))}
    ).write_parquet(tmp_path / "c.parquet")
    pl.DataFrame(
        {"mobile": mobiles[:9], "partner_program_name": programs[:9], "n": ["x"] * 9}
    ).write_parquet(tmp_path / "d.parquet")
    mixed = _job(tmp_path, "[cd].parquet")
    chunked = _load(mixed, chunk_rows, monkeypatch)
    assert chunked.parked is None
    assert_frame_equal(chunked.rows, _load(mixed, WHOLE, monkeypatch).rows)


def test_park_moves_the_chunked_rows_into_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "mobile,partner_program_name"
    (tmp_path / "in.csv").write_text("\n".join([header, *_mobile_lines(5, 400)]) + "\n")
    job = _job(tmp_path, "in.csv")
    whole = _load(job, WHOLE, monkeypatch)
    chunked = _load(job, 50, monkeypatch)
    assert chunked.parked is not None
    parts_dir = chunked.parked.dir
    chunked.park(tmp_path / "rows.parquet")
    assert not parts_dir.exists() and chunked.parked is None
    assert_frame_equal(pl.read_parquet(tmp_path / "rows.parquet"), whole.rows)
    assert chunked.counts() == whole.counts()


def test_a_discarded_source_leaves_no_parked_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "mobile,partner_program_name"
    (tmp_path / "in.csv").write_text("\n".join([header, *_mobile_lines(6, 100)]) + "\n")
    chunked = _load(_job(tmp_path, "in.csv"), 10, monkeypatch)
    assert chunked.parked is not None
    parts_dir = chunked.parked.dir
    assert parts_dir.exists()
    del chunked
    assert not parts_dir.exists()


def test_emails_are_validated_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An email customer is sent as its first spelling, which a later chunk cannot know."""
    lines = ["email,partner_program_name"]
    lines += [f"{'A' if i % 3 else 'a'}{i % 7}@x.com,partner-{i % 2}" for i in range(60)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    job = _job(tmp_path, "in.csv", identifier="email")
    chunked = _load(job, 5, monkeypatch)
    assert chunked.parked is None
    assert_frame_equal(chunked.rows, _load(job, WHOLE, monkeypatch).rows)


def test_a_killed_runs_parked_rows_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    killed = tmp_path / "tmp" / "batcher-rows-999999999-abc"  # no such process
    killed.mkdir()
    (killed / "part-00000.arrow").write_bytes(b"rows")
    alive = tmp_path / "tmp" / f"batcher-rows-{os.getpid()}-def"
    alive.mkdir()
    header = "mobile,partner_program_name"
    (tmp_path / "in.csv").write_text("\n".join([header, *_mobile_lines(8, 50)]) + "\n")
    chunked = _load(_job(tmp_path, "in.csv"), 10, monkeypatch)
    assert chunked.parked is not None and chunked.parked.dir.parent == tmp_path / "tmp"
    assert not killed.exists() and alive.exists()


def test_validate_writes_the_same_rejects_and_counts_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batcher.runs.validate import validate

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    header = "mobile,partner_program_name"
    (tmp_path / "in.csv").write_text("\n".join([header, *_mobile_lines(9, 300)]) + "\n")
    results = []
    for chunk_rows in (WHOLE, 16):
        monkeypatch.setattr(source_module, "CHUNK_ROWS", chunk_rows)
        out = tmp_path / f"out-{chunk_rows}"
        job = _job(tmp_path, "in.csv", extra=f'[output]\ndir = "{out}"\n')
        folder, summary, code = validate(job)
        assert code == 0
        rejects = pl.read_csv(folder.path / "rejects.csv", infer_schema=False)
        preview = folder.plan_preview_path.read_text()
        figures = (summary.counts, summary.reasons, summary.requests_planned, preview)
        results.append((figures, rejects))
    assert list(tmp_path.joinpath("tmp").iterdir()) == [], "the scratch rows are gone"
    (whole, whole_rejects), (chunked, chunked_rejects) = results
    assert whole == chunked
    assert whole[0]["duplicate"] > 0 and whole[0]["rejected"] > 0
    assert_frame_equal(whole_rejects, chunked_rejects)


def _sliced_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local CSV read as before the byte ranges: by slices of a lazy scan."""
    monkeypatch.setattr(
        source_module._CsvRanges,
        "_ranges",
        lambda self, rows: source_module._sliced(self.rows_from, rows),
    )


def _spy_slices(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first row of every sliced reading (none when only byte ranges were read)."""
    starts: list[int] = []
    sliced = source_module._sliced

    def spy(rows_from: object, rows: int, start: int = 0) -> object:
        starts.append(start)
        return sliced(rows_from, rows, start)  # type: ignore[arg-type]

    monkeypatch.setattr(source_module, "_sliced", spy)
    return starts


def _plain_lines(count: int) -> list[str]:
    """`_mobile_lines` without quotes, plus short lines, runs of blank lines and cells of spaces."""
    lines = [line.replace('"', "") for line in _mobile_lines(5, count)]
    lines[0:0] = ["", ""]  # blank lines right after the header
    lines[40:40] = ["", "", "", ",", " , ", "919800000001"]  # a short line: its program is null
    return lines


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize(("chunk_rows", "probe"), [(2, 8), (7, 64), (64, 1 << 20)])
def test_csv_byte_ranges_give_the_rows_of_the_sliced_reading(
    tmp_path: Path,
    newline: str,
    final_newline: bool,
    chunk_rows: int,
    probe: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = newline.join(["\ufeffmobile,partner_program_name", *_plain_lines(300)])
    (tmp_path / "in.csv").write_bytes((body + (newline if final_newline else "")).encode())
    job = _job(tmp_path, "in.csv", extra='default_country_code = "91"\n')
    with monkeypatch.context() as m:
        _sliced_only(m)
        whole = _load(job, WHOLE, m)
    monkeypatch.setattr(source_module, "_RANGE_PROBE", probe)
    starts = _spy_slices(monkeypatch)
    chunked = _load(job, chunk_rows, monkeypatch)
    assert starts == [], "every row was read by byte ranges"
    assert chunked.parked is not None
    assert whole.blank_lines > 5 and whole.counts()["duplicate"] > 50
    _assert_same(whole, chunked)
    if final_newline:  # validate reads the same ranges: once per line ending is enough
        _assert_same_without_rows(whole, job, chunk_rows, monkeypatch)


def test_a_csv_with_quotes_is_read_by_slices_from_the_range_holding_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _plain_lines(300)
    lines[200] = '919800000001,"partner\n01"'  # a line break inside a quoted field
    (tmp_path / "in.csv").write_text("\n".join(["mobile,partner_program_name", *lines]) + "\n")
    job = _job(tmp_path, "in.csv")
    with monkeypatch.context() as m:
        _sliced_only(m)
        whole = _load(job, WHOLE, m)
    monkeypatch.setattr(source_module, "_RANGE_PROBE", 64)
    starts = _spy_slices(monkeypatch)
    chunked = _load(job, 7, monkeypatch)
    assert len(starts) == 1 and 0 < starts[0] <= 201, "ranges until the quote, then slices"
    assert whole.rows.filter(pl.col("_program") == "partner\n01").height == 0  # rejected
    assert whole.rows.get_column("message").str.contains("control character").any()
    _assert_same(whole, chunked)


def test_a_csv_byte_range_that_is_not_utf8_fails_as_the_sliced_reading_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ["mobile,partner_program_name", *(f"9198{i:08d},partner-01" for i in range(100))]
    content = ("\n".join(lines) + "\n").encode().replace(b"partner-01\n91980000007", b"\xff\n9")
    (tmp_path / "in.csv").write_bytes(content)
    job = _job(tmp_path, "in.csv")
    with monkeypatch.context() as m:
        _sliced_only(m)
        with pytest.raises(InputError) as whole:
            _load(job, WHOLE, m)
    monkeypatch.setattr(source_module, "_RANGE_PROBE", 64)
    for keep_rows in (True, False):  # validate's load fails as a run's does
        with pytest.raises(InputError) as chunked:
            _load(job, 7, monkeypatch, keep_rows=keep_rows)
        assert str(chunked.value) == str(whole.value)
        assert "line 71" in str(chunked.value)


@pytest.mark.parametrize("keep_rows", [True, False])
def test_a_pair_hash_collision_across_chunks_falls_back_to_the_whole_input(
    tmp_path: Path, keep_rows: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two different pairs of one hash in two chunks: the whole input is validated instead."""
    header = "mobile,partner_program_name"
    lines = [f"9198{i:08d},partner-01" for i in range(40)]  # no pair repeats
    (tmp_path / "in.csv").write_text("\n".join([header, *lines]) + "\n")
    job = _job(tmp_path, "in.csv")
    whole = _load(job, WHOLE, monkeypatch)
    # Row 30 (chunk 3) said to share row 2's hash (chunk 0), as a collision would.
    collided = pl.DataFrame(
        {"_key": [30], "_first": [2]}, schema={"_key": pl.Int64, "_first": pl.Int64}
    )
    monkeypatch.setattr(source_module, "_later_duplicates", lambda hashes, starts: collided)
    chunked = _load(job, 10, monkeypatch, keep_rows=keep_rows)
    assert chunked.parked is None, "validated whole"
    assert_frame_equal(chunked.rows, whole.rows)
