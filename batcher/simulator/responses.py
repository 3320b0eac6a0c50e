"""What the simulator answers, byte for byte: both deLinkCustomer shapes and the error bodies.

Written from the API contract (docs/api-contract.md), independently of batcher.send.contract
(which parses these): sharing the parser would let a misreading pass its own test.
"""

from __future__ import annotations

import json
from typing import Any

JSON = "application/json"
HTML = "text/html"

FOUND = {"status": True, "message": "Customer successfully retrieved", "code": 1000}
SUCCESS = {"status": True, "message": "Success", "code": 200}
NOT_LINKED = {
    "status": False,
    "message": "Link the customer with the partner program",
    "code": 2004,
}
UNKNOWN_PROGRAM = {"status": False, "message": "Cannot find the partner program", "code": 2006}
UNKNOWN_CUSTOMER = {
    "status": False,
    "message": "Customer not found for given identifier",
    "code": 8015,
}
INVALID_IDENTIFIER = {
    "mobile": {"status": False, "message": "Invalid mobile", "code": 1001},
    "email": {"status": False, "message": "Invalid email", "code": 1002},
    "externalId": {"status": False, "message": "Invalid external id", "code": 1003},
    "id": UNKNOWN_CUSTOMER,
}
TRANSIENT = {
    521: {
        "status": False,
        "message": "Multiple actions running for the same customer",
        "code": 521,
    },
    2010: {
        "status": False,
        "message": "Events for this customer are queued, retry later",
        "code": 2010,
    },
    2001: {"status": False, "message": "Cannot process the partner program event", "code": 2001},
}

# (customers key, programs key, program status key) per response shape
SHAPES = {
    "current": ("customersPartnerUpdates", "partnerProgramUpdates", "updateStatus"),
    "legacy": ("deLinkCustomers", "deLinkFromPartnerPrograms", "partnerDeLinkStatus"),
}


def transient_status(code: int) -> dict[str, Any]:
    return TRANSIENT.get(code) or {"status": False, "message": "Try again later", "code": code}


def program_item(shape: str, program: str, status: dict[str, Any]) -> dict[str, Any]:
    if shape == "current":
        return {"partnerProgramName": program, "updateType": "DELINK", "updateStatus": status}
    return {"partnerProgramName": program, "partnerDeLinkStatus": status}


def delink_body(shape: str, customers: list[dict[str, Any]]) -> bytes:
    """`customers` holds (customer object, program items) already shaped."""
    customers_key = SHAPES[shape][0]
    return json.dumps({customers_key: customers, "warnings": []}).encode()


def envelope(code: int, message: str) -> bytes:
    """The v2 error envelope."""
    return json.dumps(
        {"warnings": [], "errors": [{"status": False, "code": code, "message": message}]}
    ).encode()


def html_page(status: int, reason: str) -> bytes:
    """What a gateway in front of the API answers: not JSON at all."""
    return (
        f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} "
        f"{reason}</h1></center><hr><center>nginx</center></body></html>"
    ).encode()


def token_body(token: str, ttl_s: float) -> bytes:
    return json.dumps(
        {"data": {"accessToken": token, "ttlSeconds": int(ttl_s)}, "errors": None}
    ).encode()


def token_refused() -> bytes:
    return json.dumps(
        {"data": None, "errors": [{"code": 320001, "message": "Invalid client key and secret"}]}
    ).encode()
