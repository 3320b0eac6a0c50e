"""The server's truth: customers, partner programs, which customer is linked to which, and counters.

Generated state (the sample data uses the same customers): customer i, 0 <= i < customers,
has id = 10_000_000 + i, mobile = f"9198{i:08d}", email = f"customer{i}@example.com" (or
f"Customer{i}@Example.com" with stored_email_case = "mixed"), externalId = f"EXT{i:08d}".
It starts linked to program p iff `initially_linked(seed, i, p, link_probability)`. A delink
only ever removes a link, so the live links are the initial ones minus `removed`; that keeps
200,000-customer states cheap. With `default_country_code`, a national mobile is resolved with
it before the lookup (`resolve_mobile`), as an org does.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batcher.simulator.profile import Profile, ProfileError

IDENTIFIERS = ("mobile", "email", "externalId", "id")
FIRST_ID = 10_000_000
DEFAULT_PROGRAMS = tuple(f"partner-{j:02d}" for j in range(1, 6))
_MOBILE_RE = re.compile(r"9198(\d{8})")
_EMAIL_RE = re.compile(r"customer(\d+)@example\.com")
_EXTERNAL_RE = re.compile(r"EXT(\d{8})")


def initially_linked(seed: int, index: int, program: str, link_probability: float) -> bool:
    """Whether generated customer `index` starts linked to `program` (a seeded, stable hash)."""
    if link_probability >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{index}:{program}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < link_probability


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    mobile: str
    email: str
    external_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mobile": self.mobile,
            "email": self.email,
            "externalId": self.external_id,
        }


def generated_customer(index: int, *, mixed_case_email: bool = False) -> Customer:
    email = f"Customer{index}@Example.com" if mixed_case_email else f"customer{index}@example.com"
    return Customer(FIRST_ID + index, f"9198{index:08d}", email, f"EXT{index:08d}")


def resolve_mobile(value: str, country_code: str | None, national_digits: int) -> str:
    """A mobile as an org with this default country code stores it: a national number (the
    national length, not starting with 0, optionally behind a trunk 0) gets the code in front."""
    if country_code is None or not value.isdigit():
        return value
    national = value[1:] if len(value) == national_digits + 1 and value[0] == "0" else value
    if len(national) == national_digits and national[0] != "0":
        return country_code + national
    return value


def lookup_key(identifier: str, value: str) -> str:
    """How an identifier value is compared: emails case-insensitively, the rest as sent."""
    return value.lower() if identifier == "email" else value


@dataclass(slots=True)
class PairCounter:
    attempts: int = 0  # times a delink of this pair was processed
    delinked: int = 0  # times it answered success


class Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.delink_requests = 0
        self.customers = 0
        self.items = 0
        self.throttled = 0
        self.auth_failures = 0
        self.tokens_issued = 0
        self.faults: Counter[str] = Counter()

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "delink_requests": self.delink_requests,
            "customers": self.customers,
            "items": self.items,
            "throttled": self.throttled,
            "auth_failures": self.auth_failures,
            "tokens_issued": self.tokens_issued,
            "faults": dict(self.faults),
        }


class State:
    """Customers and links (generated or from a file), plus per-pair counters."""

    def __init__(self, profile: Profile) -> None:
        settings = profile.state
        self.seed = profile.seed
        self.link_probability = settings.link_probability
        self.programs: tuple[str, ...] = settings.programs or DEFAULT_PROGRAMS
        self._customers = settings.customers
        self._country_code = profile.default_country_code
        self._national_digits = profile.national_mobile_digits
        self._mixed_case_email = profile.stored_email_case == "mixed"
        # For file state: the customers and their initial links, indexed like generated ones.
        self._table: list[Customer] | None = None
        self._index: dict[str, dict[str, int]] = {}
        self._table_links: set[tuple[int, str]] = set()
        if settings.file is not None:
            self._load(settings.file, explicit_programs=settings.programs is not None)
        self._program_set = frozenset(self.programs)
        self.removed: set[tuple[int, str]] = set()
        self.pairs: dict[tuple[int | str, str], PairCounter] = {}
        self._initial_links: int | None = None

    # --- customers ----------------------------------------------------------------------

    def find(self, identifier: str, value: str) -> int | None:
        """The index of the customer this identifier names, or None (unknown customer)."""
        if identifier == "mobile":
            value = resolve_mobile(value, self._country_code, self._national_digits)
        if self._table is not None:
            return self._index[identifier].get(lookup_key(identifier, value))
        m: re.Match[str] | None
        if identifier == "id":
            if not value.isdigit():
                return None
            i = int(value) - FIRST_ID
            return i if 0 <= i < self._customers else None
        if identifier == "mobile":
            m = _MOBILE_RE.fullmatch(value)
        elif identifier == "email":
            m = _EMAIL_RE.fullmatch(value.lower())
            if m and str(int(m.group(1))) != m.group(1):
                return None  # "customer007@" is not customer 7
        else:
            m = _EXTERNAL_RE.fullmatch(value)
        if m is None:
            return None
        i = int(m.group(1))
        return i if i < self._customers else None

    def customer(self, index: int) -> Customer:
        if self._table is not None:
            return self._table[index]
        return generated_customer(index, mixed_case_email=self._mixed_case_email)

    @property
    def customer_count(self) -> int:
        return len(self._table) if self._table is not None else self._customers

    def is_program(self, program: str) -> bool:
        return program in self._program_set

    # --- links --------------------------------------------------------------------------

    def _initially(self, index: int, program: str) -> bool:
        if self._table is not None:
            return (index, program) in self._table_links
        return initially_linked(self.seed, index, program, self.link_probability)

    def is_linked(self, index: int, program: str) -> bool:
        return (
            program in self._program_set
            and (index, program) not in self.removed
            and self._initially(index, program)
        )

    def delink(self, index: int, program: str) -> bool:
        """Remove the link if there is one; True when a link was removed."""
        if not self.is_linked(index, program):
            return False
        self.removed.add((index, program))
        return True

    def count(self, key: int | str, program: str, *, delinked: bool) -> None:
        counter = self.pairs.get((key, program))
        if counter is None:
            counter = self.pairs[(key, program)] = PairCounter()
        counter.attempts += 1
        if delinked:
            counter.delinked += 1

    @property
    def initial_links(self) -> int:
        if self._initial_links is None:
            if self._table is not None:
                self._initial_links = len(self._table_links)
            else:
                self._initial_links = sum(
                    1
                    for i in range(self._customers)
                    for p in self.programs
                    if self._initially(i, p)
                )
        return self._initial_links

    @property
    def links_remaining(self) -> int:
        return self.initial_links - len(self.removed)

    def still_linked(
        self, identifier: str, pairs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Of the given (identifier value, program) pairs, those the server still links."""
        out = []
        for value, program in pairs:
            index = self.find(identifier, lookup_key(identifier, str(value).strip()))
            if index is not None and self.is_linked(index, program):
                out.append((value, program))
        return out

    # --- file state ---------------------------------------------------------------------

    def _load(self, file: Path, *, explicit_programs: bool) -> None:
        import polars as pl

        try:
            if file.suffix.lower() == ".parquet":
                frame = pl.read_parquet(file)
            else:
                frame = pl.read_csv(file, infer_schema=False)
        except (OSError, pl.exceptions.PolarsError) as e:
            raise ProfileError(f"Simulator state file {file} cannot be read: {e}.") from e
        wanted = ("id", "mobile", "email", "externalId", "program")
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ProfileError(
                f"Simulator state file {file} lacks the columns {', '.join(missing)}; it needs "
                "id, mobile, email, externalId, program (one row per link; an empty program "
                "means a customer without links)."
            )
        table: list[Customer] = []
        by_id: dict[int, int] = {}
        seen_programs: dict[str, None] = {}
        for row in frame.select(wanted).cast(pl.String).iter_rows():
            raw_id, mobile, email, external, program = row
            try:
                cid = int(str(raw_id).strip())
            except ValueError:
                raise ProfileError(
                    f"Simulator state file {file}: id {raw_id!r} is not an integer."
                ) from None
            index = by_id.get(cid)
            if index is None:
                index = by_id[cid] = len(table)
                table.append(
                    Customer(
                        cid, (mobile or "").strip(), (email or "").strip(), (external or "").strip()
                    )
                )
            if program and program.strip():
                self._table_links.add((index, program.strip()))
                seen_programs[program.strip()] = None
        self._table = table
        self._index = {name: {} for name in IDENTIFIERS}
        for index, c in enumerate(table):
            for name, value in (
                ("id", str(c.id)),
                ("mobile", c.mobile),
                ("email", c.email),
                ("externalId", c.external_id),
            ):
                if value:
                    self._index[name][lookup_key(name, value)] = index
        if not explicit_programs:
            self.programs = tuple(seen_programs)
