"""Regenerate the demo inputs deterministically: `uv run python jobs/data/make_demo.py`.

demo.csv: about 3,000 (mobile, program) pairs for the simulator's generated customers
(customer i has mobile 9198{i:08d}, programs partner-01..partner-05), written the ways real
exports write phone numbers, plus every rejection reason, duplicates, unknown customers, an
unknown program and extra columns that are carried through.
demo.parquet: the same idea keyed by email, with the mobile stored as an integer column.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
CUSTOMERS = 2000
PROGRAMS = [f"partner-{j:02d}" for j in range(1, 6)]
REGIONS = ["north", "south", "east", "west"]
TEAMS = ["crm-ops", "partnerships", "support"]


def mobile_as_written(i: int, rng: random.Random) -> str:
    """Customer i's mobile in one of the formats spreadsheets and CRMs produce."""
    digits = f"9198{i:08d}"
    style = rng.randrange(6)
    if style == 0:
        return f"+{digits[:2]} {digits[2:7]} {digits[7:]}"
    if style == 1:
        return f"+{digits[:2]}-{digits[2:7]}-{digits[7:]}"
    if style == 2:
        return f"({digits[:2]}) {digits[2:6]} {digits[6:]}"
    if style == 3:
        return f" {digits} "
    return digits


def demo_rows(rng: random.Random) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(mobile: str, program: str) -> None:
        rows.append({
            "mobile": mobile,
            "partner_program_name": program,
            "region": rng.choice(REGIONS),
            "requested_by": rng.choice(TEAMS),
        })

    # Distinct (customer, program) pairs: the only duplicates are the planted ones below.
    for n in rng.sample(range(CUSTOMERS * len(PROGRAMS)), 2900):
        i, j = divmod(n, len(PROGRAMS))
        add(mobile_as_written(i, rng), PROGRAMS[j])
    bad = [
        ("", "partner-01"),  # missing_identifier
        ("   ", "partner-02"),
        ("9.198E+11", "partner-01"),  # mobile_in_scientific_notation
        ("9.19800000012e+11", "partner-03"),
        ("9,198E+11", "partner-02"),
        ("12345", "partner-01"),  # invalid_mobile: too short
        ("91980000000012345", "partner-02"),  # too long
        ("9198000000ab", "partner-03"),
        ("919800000000.0", "partner-04"),
        ("\u0669\u0661\u0669\u0668\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0661", "partner-01"),
        ("919800000001", ""),  # missing_program
        ("919800000002", "  "),
        ("919800000003", "partner-" + "x" * 120),  # program_too_long
        ("919800000004", "p" * 101),
        ("919899999999", "partner-01"),  # unknown customers (outside the generated range)
        ("919899999998", "partner-02"),
        ("+91 98999 99997", "partner-03"),
        ("919800000005", "partner-99"),  # unknown program
        ("919800000006", "partner-99"),
        ("'919800000007", "partner-01"),  # spreadsheet text marker
    ]
    for mobile, program in bad:
        rows.insert(rng.randrange(len(rows)), {
            "mobile": mobile, "partner_program_name": program,
            "region": rng.choice(REGIONS), "requested_by": rng.choice(TEAMS),
        })
    # Exact repeats written differently: duplicates of earlier rows.
    for src in rng.sample(rows[:1000], 15):
        digits = "".join(c for c in src["mobile"] if c.isdigit())
        rows.append({**src, "mobile": digits})
    return rows


def main() -> None:
    rng = random.Random(20261126)
    rows = demo_rows(rng)
    with open(HERE / "demo.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    emails, mobiles, programs = [], [], []
    for n in rng.sample(range(CUSTOMERS * len(PROGRAMS)), 1500):
        i, j = divmod(n, len(PROGRAMS))
        email = f"customer{i}@example.com"
        emails.append(email.upper() if rng.random() < 0.1 else email)
        mobiles.append(int(f"9198{i:08d}"))
        programs.append(PROGRAMS[j])
    for email in ["", "not-an-email", "two@@example.com", "space @example.com", "a@nodot"]:
        emails.append(email or None)
        mobiles.append(None)
        programs.append("partner-01")
    emails += ["customer1@example.com", "CUSTOMER1@example.com"]
    mobiles += [919800000001, 919800000001]
    programs += ["partner-02", "partner-02"]  # the second is a duplicate (case-insensitive)
    pl.DataFrame(
        {"email": emails, "mobile": mobiles, "partner_program_name": programs},
        schema={"email": pl.String, "mobile": pl.Int64, "partner_program_name": pl.String},
    ).write_parquet(HERE / "demo.parquet")


if __name__ == "__main__":
    main()
