"""deLinkCustomer on the wire: request bodies, both response shapes, and what each code means.

See docs/api-contract.md. Results are matched to what was asked by identifier and program
name, never by position: no source promises order or completeness.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

DELINK_PATH = "/v2/partnerProgram/deLinkCustomer"
TOKEN_PATH = "/v3/oauth/token/generate"
REQUEST_ID_HEADERS = ("X-CAP-REQUEST-ID", "X-Cap-Requestid")


def md5_hex(password: str) -> str:
    return hashlib.md5(password.encode("utf-8")).hexdigest()


def basic_header(username: str, password_md5: str) -> str:
    """Capillary's Basic scheme: base64(username + ":" + md5_hex(password)); the one place it
    is built (the sender, the simulator, the tests and the benchmarks use it)."""
    raw = f"{username}:{password_md5}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Verdict(enum.StrEnum):
    """What an item-level code means for the pair it answers."""

    DELINKED = "delinked"
    NOT_LINKED = "not_linked"
    FAILED = "failed"  # permanent: a retry will not fix it
    TRANSIENT = "transient"  # retry this item (bounded)


CUSTOMER_FOUND_CODE = 1000
NOT_LINKED_CODE = 2004
BATCH_LIMIT_CODE = 1060
TOKEN_EXPIRED_CODE = 498
# Item codes that say "not now" rather than "never": retry only those items.
TRANSIENT_ITEM_CODES = frozenset({521, 2001, 2010})


def verdict_for(status: bool, code: int | None) -> Verdict:
    """Classify one item status; unknown failure codes are permanent (a retry would not help)."""
    if status:
        return Verdict.DELINKED
    if code == NOT_LINKED_CODE:
        return Verdict.NOT_LINKED
    if code in TRANSIENT_ITEM_CODES:
        return Verdict.TRANSIENT
    return Verdict.FAILED


@dataclass(frozen=True, slots=True)
class Entry:
    """One `deLinkCustomers` entry: a customer and the programs to delink it from."""

    customer: str  # the normalised identifier value, sent as a string
    programs: tuple[str, ...]


def build_body(identifier: str, entries: Iterable[Entry]) -> dict[str, Any]:
    """The request body exactly as sent: every identifier as a string."""
    return {
        "deLinkCustomers": [
            {
                "customer": {identifier: e.customer},
                "deLinkFromPartnerPrograms": [{"partnerProgramName": p} for p in e.programs],
            }
            for e in entries
        ]
    }


def match_key(identifier: str, value: object) -> str | None:
    """How a returned identifier is compared with the one sent (emails case-insensitively)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    text = str(value).strip()
    if identifier == "email":
        return text.lower()
    return text


class ItemStatus(NamedTuple):
    """One status object of an answer. (Named tuples here and below: one is made per item of
    every answer, and a frozen dataclass costs several times as much to build.)"""

    status: bool
    code: int | None
    message: str | None

    @property
    def verdict(self) -> Verdict:
        return verdict_for(self.status, self.code)


class CustomerResult(NamedTuple):
    """One customer of a response, keyed by the identifier the request used ("" when the answer
    left that identifier out)."""

    key: str
    customer_id: int | None
    status: ItemStatus
    programs: Mapping[str, ItemStatus]
    returned: str | None = None  # the identifier as the answer spelled it (the stored form)


class ShapeError(ValueError):
    """The body is JSON but not a deLinkCustomer response we can read."""


# The item statuses seen in their usual spelling (a JSON boolean, an integer code, a string
# message or none), by those three values: an answer repeats a handful ("Success" 200 for
# nearly every pair), so each is built once. Other spellings are read every time.
_SEEN: dict[tuple[bool, int, str | None], ItemStatus] = {}
_MAX_SEEN = 1024


def _item_status(raw: object) -> ItemStatus:
    if type(raw) is dict:
        status, code, message = raw.get("status"), raw.get("code"), raw.get("message")
        if type(status) is bool and type(code) is int and (message is None or type(message) is str):
            seen = _SEEN.get((status, code, message))
            if seen is None:
                if len(_SEEN) >= _MAX_SEEN:
                    _SEEN.clear()
                seen = _SEEN[status, code, message] = ItemStatus(status, code, message)
            return seen
    return _read_item_status(raw)


def _read_item_status(raw: object) -> ItemStatus:
    if not isinstance(raw, dict):
        raise ShapeError(f"status is not an object: {raw!r:.80}")
    status = raw.get("status")
    code = raw.get("code")
    message = raw.get("message")
    if isinstance(status, str):
        status = status.strip().lower() == "true"
    if not isinstance(status, bool):
        raise ShapeError(f"status.status is not a boolean: {status!r:.80}")
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        code = int(code)
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    return ItemStatus(status, code, None if message is None else str(message))


_SHAPES = (
    # (customers list key, programs list key, program status key)
    ("customersPartnerUpdates", "partnerProgramUpdates", "updateStatus"),
    ("deLinkCustomers", "deLinkFromPartnerPrograms", "partnerDeLinkStatus"),
)


def parse_response(identifier: str, body: object) -> tuple[list[CustomerResult], list[str]]:
    """Read either response shape; returns the customers and any item-level oddities seen.

    Bodies come from a JSON decoder, so objects are plain dicts and arrays plain lists
    (checking for those is much cheaper than for the abstract Mapping).

    Raises ShapeError when the body holds neither shape: the caller treats that as a
    transient bad answer (retry the whole request).
    """
    if not isinstance(body, dict):
        raise ShapeError("response is not a JSON object")
    shape = next((s for s in _SHAPES if s[0] in body), None)
    if shape is None:
        raise ShapeError(f"response has neither {_SHAPES[0][0]} nor {_SHAPES[1][0]}")
    customers_key, programs_key, status_key = shape
    customers = body[customers_key]
    if not isinstance(customers, list):
        raise ShapeError(f"{customers_key} is not a list")
    results: list[CustomerResult] = []
    oddities: list[str] = []
    for item in customers:
        if not isinstance(item, dict) or not isinstance(item.get("customer"), dict):
            oddities.append("customer item without a customer object")
            continue
        cust = item["customer"]
        raw_value = cust.get(identifier)
        key = match_key(identifier, raw_value)
        returned: str | None = None
        if key is None:
            # Kept: a request of one customer knows whose answer it is (send/placing.py).
            oddities.append(f"customer item without the {identifier} identifier")
            key = ""
        else:
            number = isinstance(raw_value, (int, float))
            returned = str(int(raw_value)) if number else str(raw_value)
        raw_id = cust.get("id")
        customer_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
        if isinstance(raw_id, str) and raw_id.isdigit():
            customer_id = int(raw_id)
        # A customer object without its own status is taken as found: its programs speak.
        cust_status = (
            _item_status(cust["status"])
            if "status" in cust
            else ItemStatus(True, CUSTOMER_FOUND_CODE, None)
        )
        programs: dict[str, ItemStatus] = {}
        raw_programs = item.get(programs_key) or []
        if not isinstance(raw_programs, list):
            raise ShapeError(f"{programs_key} is not a list")
        for prog in raw_programs:
            if not isinstance(prog, dict) or not isinstance(prog.get("partnerProgramName"), str):
                oddities.append("program item without partnerProgramName")
                continue
            if status_key not in prog:
                oddities.append(f"program item without {status_key}")
                continue
            programs[prog["partnerProgramName"]] = _item_status(prog[status_key])
        results.append(CustomerResult(key, customer_id, cust_status, programs, returned))
    return results, oddities


def error_envelope(body: object) -> tuple[int | None, str | None]:
    """The first (code, message) of a v2 error envelope, or (None, None)."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = errors[0].get("code")
            message = errors[0].get("message")
            return (code if isinstance(code, int) else None), (
                None if message is None else str(message)
            )
    return None, None
