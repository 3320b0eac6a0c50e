"""Loading and validating input files: every row accounted for, bad files refused clearly."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.errors import InputError
from batcher.input.source import REASONS, Source, load_source, validate_rows
from batcher.job import Job, load_job

HEADER = "mobile,partner_program_name"


def make_job(
    tmp_path: Path, input_path: str = "in.csv", extra_input: str = "", identifier: str = "mobile"
) -> Job:
    job = tmp_path / "job.toml"
    job.write_text(
        f'name = "t"\n[input]\npath = "{input_path}"\nidentifier = "{identifier}"\n'
        f'{extra_input}[api]\nbase_url = "simulator"\n'
    )
    return load_job(job)


def load_csv(tmp_path: Path, content: str | bytes, **kw: str) -> Source:
    data = content.encode() if isinstance(content, str) else content
    (tmp_path / "in.csv").write_bytes(data)
    return load_source(make_job(tmp_path, **kw))


def accounted(source: Source) -> None:
    counts = source.counts()
    assert sum(counts.values()) == source.row_count
    assert source.rows.get_column("_key").to_list() == list(range(source.row_count))


def by_row(source: Source) -> dict[int, dict[str, object]]:
    return {r["row"]: r for r in source.rows.iter_rows(named=True)}


def test_mobile_formats_normalise_to_digits(tmp_path: Path) -> None:
    src = load_csv(
        tmp_path,
        HEADER + "\n+91 98000 00001,partner-01\n(91) 9800-000002,partner-01\n"
        "'919800000003,partner-01\n 919800000004 ,' partner-02 \n",
    )
    assert src.rows.get_column("_customer").to_list() == [
        "919800000001",
        "919800000002",
        "919800000003",
        "919800000004",
    ]
    assert src.rows.get_column("_program").to_list()[-1] == "partner-02"
    assert src.counts() == {"valid": 4, "rejected": 0, "duplicate": 0}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "missing_identifier"),
        ("9.198E+11", "mobile_in_scientific_notation"),
        ("9,19800000001e11", "mobile_in_scientific_notation"),
        ("1234567", "invalid_mobile"),
        ("1234567890123456", "invalid_mobile"),
        ("91980000000x", "invalid_mobile"),
        ("919800000000.0", "invalid_mobile"),
        ("\uff19\uff11\uff19\uff18" + "\uff10" * 7 + "\uff11", "invalid_mobile"),
        ("++919800000001", "invalid_mobile"),
    ],
)
def test_bad_mobile_is_rejected_with_its_reason(tmp_path: Path, value: str, reason: str) -> None:
    src = load_csv(tmp_path, f'{HEADER}\n"{value}",partner-01\n')
    row = by_row(src)[1]
    assert (row["status"], row["reason"], row["_customer"]) == ("rejected", reason, None)
    assert row["message"]


def test_program_reasons(tmp_path: Path) -> None:
    long = "p" * 101
    src = load_csv(
        tmp_path, f"{HEADER}\n919800000001,\n919800000001,{long}\n919800000001,{'p' * 100}\n"
    )
    rows = by_row(src)
    assert rows[1]["reason"] == "missing_program"
    assert rows[2]["reason"] == "program_too_long"
    assert rows[3]["status"] == "valid"


@pytest.mark.parametrize(
    ("identifier", "good", "bad", "reason"),
    [
        ("email", " Ann@Example.com ", "ann@example", "invalid_email"),
        ("email", "a.b@mail.example.org", "a b@example.com", "invalid_email"),
        ("email", "x@y.co", "a@@example.com", "invalid_email"),
        ("externalId", " EXT00000001 ", "E" * 151, "invalid_external_id"),
        ("id", "10000001", "-5", "invalid_id"),
        ("id", "00042", "0", "invalid_id"),
        ("id", "7", "\u0661\u0662", "invalid_id"),
    ],
)
def test_other_identifiers(
    tmp_path: Path, identifier: str, good: str, bad: str, reason: str
) -> None:
    src = load_csv(
        tmp_path,
        f'{identifier},partner_program_name\n"{good}",p1\n"{bad}",p1\n,p1\n',
        identifier=identifier,
    )
    rows = by_row(src)
    assert rows[1]["status"] == "valid"
    assert rows[1]["_customer"] == good.strip().lstrip("0")
    assert rows[2]["reason"] == reason
    assert rows[3]["reason"] == "missing_identifier"


def test_email_duplicates_compare_case_insensitively_and_send_first_spelling(
    tmp_path: Path,
) -> None:
    src = load_csv(
        tmp_path,
        "email,partner_program_name\nAnn@Example.com,p1\nann@example.com,p1\nANN@EXAMPLE.COM,p2\n",
        identifier="email",
    )
    rows = by_row(src)
    assert rows[2]["status"] == "duplicate" and rows[2]["duplicate_of"] == 1
    assert rows[3]["status"] == "valid"
    assert rows[3]["_customer"] == "Ann@Example.com"


def test_duplicate_names_first_row_and_keeps_it_valid(tmp_path: Path) -> None:
    src = load_csv(
        tmp_path,
        f"{HEADER}\n919800000001,p1\n919800000002,p1\n+91 98000 00001,p1\n919800000001,p1\n",
    )
    rows = by_row(src)
    assert rows[1]["status"] == "valid"
    assert [rows[3]["duplicate_of"], rows[4]["duplicate_of"]] == [1, 1]
    assert rows[3]["message"] == "same customer and program as row 1"
    accounted(src)


def test_glob_numbers_rows_per_file_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text(f"{HEADER}\n919800000001,p1\n919800000002,p1\n")
    (tmp_path / "data" / "b.csv").write_text(
        f"{HEADER},extra\n919800000003,p1,x\n919800000001,p1,y\n"
    )
    src = load_source(make_job(tmp_path, "data/*.csv"))
    assert src.is_glob and len(src.files) == 2
    assert src.rows.get_column("row").to_list() == [1, 2, 1, 2]
    assert src.rows.get_column("source_file").to_list() == ["data/a.csv"] * 2 + ["data/b.csv"] * 2
    dup = by_row(src.rows.filter(pl.col("status") == "duplicate").pipe(_wrap, src))[2]
    assert dup["duplicate_of"] == 1
    assert dup["message"] == "same customer and program as row 1 of data/a.csv"
    assert src.columns == ["mobile", "partner_program_name", "extra"]
    assert src.rows.get_column("extra").to_list() == [None, None, "x", "y"]


def _wrap(frame: pl.DataFrame, src: Source) -> Source:
    return Source(
        files=src.files,
        format=src.format,
        columns=src.columns,
        rows=frame,
        identifier=src.identifier,
        identifier_column=src.identifier_column,
        program_column=src.program_column,
        is_glob=src.is_glob,
        notes=src.notes,
    )


def test_glob_matching_nothing_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="matches no file"):
        load_source(make_job(tmp_path, "data/*.csv"))


def test_mixing_csv_and_parquet_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(f"{HEADER}\n919800000001,p1\n")
    pl.DataFrame({"mobile": ["919800000001"], "partner_program_name": ["p1"]}).write_parquet(
        tmp_path / "b.parquet"
    )
    with pytest.raises(InputError, match="mixes CSV and Parquet"):
        load_source(make_job(tmp_path, "*"))


def test_bom_crlf_quoted_fields_and_semicolons(tmp_path: Path) -> None:
    content = (
        "\ufeffmobile;partner_program_name;note2\r\n"
        '"+91 98000 00001";"partner;01";"said ""hi"""\r\n'
        '919800000002;partner-02;"two\r\nlines"\r\n'
    )
    src = load_csv(tmp_path, content, extra_input='separator = ";"\n')
    assert src.columns == ["mobile", "partner_program_name", "note2"]
    assert src.rows.get_column("_program").to_list() == ["partner;01", "partner-02"]
    assert src.rows.get_column("note2").to_list()[0] == 'said "hi"'
    assert src.counts()["valid"] == 2


def test_wrong_separator_lists_the_columns_the_file_has(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no column 'mobile'.*columns are: 'mobile;partner"):
        load_csv(tmp_path, "mobile;partner_program_name\n919800000001;p1\n")


def test_missing_program_column_lists_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_csv(tmp_path, "mobile,program,region\n919800000001,p1,x\n")
    assert "'partner_program_name'" in e.value.message
    assert "'mobile', 'program', 'region'" in e.value.message
    assert "input.program_column" in e.value.message


def test_non_utf8_names_the_row_and_the_encoding_setting(tmp_path: Path) -> None:
    content = f"{HEADER},city\n919800000001,p1,Paris\n919800000002,p1,K\xf6ln\n".encode("latin-1")
    with pytest.raises(InputError) as e:
        load_csv(tmp_path, content)
    assert "line 3 (row 2)" in str(e.value)
    assert "input.encoding" in str(e.value)
    src = load_csv(tmp_path, content, extra_input='encoding = "latin-1"\n')
    assert src.rows.get_column("city").to_list() == ["Paris", "Köln"]
    lossy = load_csv(tmp_path, content, extra_input='encoding = "utf8-lossy"\n')
    assert lossy.counts()["valid"] == 2


def test_unknown_encoding_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a known text encoding"):
        load_csv(tmp_path, f"{HEADER}\n919800000001,p1\n", extra_input='encoding = "klingon"\n')


@pytest.mark.parametrize("content", ["", f"{HEADER}\n", f"{HEADER}\r\n"])
def test_empty_and_header_only_files_have_zero_rows(tmp_path: Path, content: str) -> None:
    src = load_csv(tmp_path, content)
    assert src.row_count == 0
    assert src.counts() == {"valid": 0, "rejected": 0, "duplicate": 0}


def test_nulls_everywhere(tmp_path: Path) -> None:
    """A row of only empty cells is a blank line, not a row; one empty cell is a reject."""
    src = load_csv(tmp_path, f"{HEADER},region\n,,\n,p1,\n919800000001,,\n,,x\n")
    assert src.blank_lines == 1
    assert src.rows.get_column("row").to_list() == [2, 3, 4]
    assert src.rows.get_column("reason").to_list() == [
        "missing_identifier",
        "missing_program",
        "missing_identifier",
    ]
    accounted(src)


def test_parquet_with_integer_mobile_keeps_every_digit(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "mobile": [919800000001, None, 919812345678],
            "partner_program_name": ["p1", "p1", None],
            "qty": [1, 2, 3],
        },
        schema={"mobile": pl.Int64, "partner_program_name": pl.String, "qty": pl.Int32},
    ).write_parquet(tmp_path / "in.parquet")
    src = load_source(make_job(tmp_path, "in.parquet"))
    assert src.format == "parquet"
    assert src.rows.get_column("_customer").to_list() == ["919800000001", None, None]
    assert src.rows.get_column("qty").dtype == pl.Int32
    assert src.reason_counts() == {"missing_identifier": 1, "missing_program": 1}


def test_parquet_float_mobile_is_rejected_not_rounded(tmp_path: Path) -> None:
    pl.DataFrame({"mobile": [9.198e11], "partner_program_name": ["p1"]}).write_parquet(
        tmp_path / "in.parquet"
    )
    src = load_source(make_job(tmp_path, "in.parquet"))
    assert src.counts()["rejected"] == 1


def test_truncated_parquet_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    frame = pl.DataFrame({"mobile": ["919800000001"] * 100, "partner_program_name": ["p1"] * 100})
    frame.write_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot be read as parquet"):
        load_source(make_job(tmp_path, "in.parquet"))


def test_directory_and_missing_file_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        load_source(make_job(tmp_path, "dir.csv"))
    with pytest.raises(InputError, match="does not exist"):
        load_source(make_job(tmp_path, "nope.csv"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(f"{HEADER}\n919800000001,p1\n")
    (tmp_path / "in.csv").chmod(0)
    with pytest.raises(InputError, match="cannot be read"):
        load_source(make_job(tmp_path))


def test_ragged_csv_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read as csv"):
        load_csv(tmp_path, f'{HEADER}\n919800000001,p1\n"unterminated,p1\n1,2,3,4,5\n')


def test_columns_named_like_outputs_are_renamed(tmp_path: Path) -> None:
    src = load_csv(tmp_path, f"{HEADER},status,row,note\n919800000001,p1,old,7,n\n")
    assert src.columns == [
        "mobile",
        "partner_program_name",
        "input_status",
        "input_row",
        "input_note",
    ]
    assert any("input_status" in n for n in src.notes)
    assert src.rows.get_column("status").to_list() == ["valid"]


def test_failures_file_fed_back_drops_its_verdict_columns(tmp_path: Path) -> None:
    src = load_csv(
        tmp_path,
        f"batcher_row,{HEADER},status,batcher_status,batcher_code,batcher_message\n"
        "4,919800000001,p1,x,failed,8015,gone\n",
    )
    assert src.columns == ["mobile", "partner_program_name", "input_status"]
    assert src.original_names == {"input_status": "status"}
    assert any("fed back" in n and "batcher_status" in n for n in src.notes)


def test_file_metadata_and_sha256(tmp_path: Path) -> None:
    import hashlib

    content = f"{HEADER}\n919800000001,p1\n"
    src = load_csv(tmp_path, content)
    (f,) = src.files
    assert f.sha256 == hashlib.sha256(content.encode()).hexdigest()
    assert f.size == len(content)


def test_generated_file_is_fully_accounted_for(tmp_path: Path) -> None:
    n = 20_000
    frame = pl.select(i=pl.int_range(n)).select(
        mobile=pl.when(pl.col("i") % 97 == 0)
        .then(pl.lit("9.1E+11"))
        .otherwise(pl.lit("9198") + (pl.col("i") % 5000).cast(pl.String).str.zfill(8)),
        partner_program_name=pl.when(pl.col("i") % 89 == 0)
        .then(None)
        .otherwise(pl.lit("partner-") + (pl.col("i") % 3).cast(pl.String)),
    )
    frame.write_csv(tmp_path / "in.csv")
    src = load_source(make_job(tmp_path))
    accounted(src)
    counts = src.counts()
    assert counts["rejected"] > 0 and counts["duplicate"] > 0
    valid = src.rows.filter(pl.col("status") == "valid")
    assert valid.select("_customer", "_program").is_unique().all()


@pytest.mark.parametrize("sample", ["demo.toml", "demo-parquet.toml"])
def test_samples_are_fully_accounted_for(sample: str) -> None:
    src = load_source(load_job(Path(__file__).resolve().parents[2] / "jobs" / sample))
    accounted(src)
    reasons = src.reason_counts()
    if sample == "demo.toml":
        unused = {"invalid_email", "invalid_external_id", "invalid_id", "invalid_program"}
        assert set(reasons) == set(REASONS) - unused
        assert src.counts()["duplicate"] > 0


# --- normalisation properties ----------------------------------------------------------------

_decorations = st.sampled_from(["", " ", "-", "(", ")", "  "])


@st.composite
def written_mobile(draw: st.DrawFn) -> tuple[str, str]:
    digits = draw(st.text("0123456789", min_size=8, max_size=15))
    out = "+" if draw(st.booleans()) else ""
    for d in digits:
        out += draw(_decorations) + d
    return digits, out + draw(_decorations)


def _normalise(values: list[str]) -> list[str | None]:
    frame = pl.DataFrame(
        {
            "_key": range(len(values)),
            "row": range(1, len(values) + 1),
            "source_file": ["f"] * len(values),
            "mobile": values,
            "partner_program_name": [f"p{i}" for i in range(len(values))],
        },
        schema_overrides={"_key": pl.Int64, "row": pl.Int64},
    )
    return (
        validate_rows(frame, "mobile", "mobile", "partner_program_name")
        .get_column("_customer")
        .to_list()
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(written_mobile(), min_size=1, max_size=20))
def test_normalisation_keeps_digits_and_never_merges_different_mobiles(
    mobiles: list[tuple[str, str]],
) -> None:
    got = _normalise([written for _, written in mobiles])
    assert got == [digits for digits, _ in mobiles]  # never changes a digit
    for (a, _), (b, _), ga, gb in zip(mobiles, mobiles[1:], got, got[1:], strict=False):
        if a != b:
            assert ga != gb


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_normalised_mobile_is_ascii_digits_or_rejected(text: str) -> None:
    (got,) = _normalise([text])
    if got is not None:
        assert got.isascii() and got.isdigit() and 8 <= len(got) <= 15
        assert [c for c in text if c.isascii() and c.isdigit()] == list(got)


@pytest.mark.parametrize("program", ["p1\x00", "p1\x07", "\x00p1", "p\x1f1"])
def test_program_with_a_control_character_anywhere_is_rejected(program: str) -> None:
    frame = pl.DataFrame(
        {
            "_key": [0],
            "row": [1],
            "source_file": ["f"],
            "mobile": ["919800000001"],
            "partner_program_name": [program],
        },
        schema_overrides={"_key": pl.Int64, "row": pl.Int64},
    )
    got = validate_rows(frame, "mobile", "mobile", "partner_program_name")
    assert got.select("status", "reason").row(0) == ("rejected", "invalid_program")
