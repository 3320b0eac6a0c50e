"""One deLinkCustomer body, processed against the state: validation, lookups, item answers.

The whole-request checks come first (shape, batch limits, poison identifiers) so a refused
request changes nothing; then each customer and program item in order.
"""

from __future__ import annotations

import json
from typing import Any

from batcher.simulator import responses as r
from batcher.simulator.faults import ItemFault, Trouble
from batcher.simulator.profile import Profile
from batcher.simulator.state import IDENTIFIERS, Counters, State, lookup_key


class BadRequest(Exception):
    """The whole request is refused with the v2 error envelope."""

    def __init__(self, status: int, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class Delinker:
    """Applies request bodies to the state and shapes the answers."""

    def __init__(
        self, profile: Profile, state: State, trouble: Trouble, counters: Counters
    ) -> None:
        self.profile = profile
        self.state = state
        self.trouble = trouble
        self.counters = counters

    def process(self, raw: bytes) -> list[dict[str, Any]]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadRequest(400, 400, "Invalid JSON in request body") from None
        entries = body.get("deLinkCustomers") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries:
            raise BadRequest(400, 400, "deLinkCustomers is missing or empty")
        p = self.profile
        if len(entries) > p.max_customers_per_request:
            raise BadRequest(400, 1060, "Batch limit size exceeded")
        parsed = []
        for entry in entries:
            customer = entry.get("customer") if isinstance(entry, dict) else None
            programs = (
                entry.get("deLinkFromPartnerPrograms", []) if isinstance(entry, dict) else None
            )
            if not isinstance(customer, dict) or not isinstance(programs, list):
                raise BadRequest(
                    400,
                    400,
                    "Each deLinkCustomers item needs a customer object "
                    "and a deLinkFromPartnerPrograms list",
                )
            if len(programs) > p.max_programs_per_customer:
                raise BadRequest(
                    400,
                    2008,
                    "Cannot link/delink more than "
                    f"{p.max_programs_per_customer} partner programs at once",
                )
            identifier, value = _identifier_of(customer)
            names = [g.get("partnerProgramName") if isinstance(g, dict) else None for g in programs]
            parsed.append((identifier, value, [n if isinstance(n, str) else "" for n in names]))
        poison = self.trouble.faults.poison_identifiers  # set_faults may change them
        if poison and any(v is not None and v.lower() in poison for _, v, _ in parsed):
            self.counters.faults["poison"] += 1
            raise BadRequest(400, 400, "Invalid request: a customer could not be processed")
        self.counters.customers += len(parsed)
        out = [self._one_customer(*item) for item in parsed]
        if p.shuffle_items:
            self.trouble.shuffle(out)  # type: ignore[arg-type]
        return out

    def _one_customer(
        self, identifier: str, value: str | None, programs: list[str]
    ) -> dict[str, Any]:
        shape = self.profile.response_shape
        state = self.state
        self.counters.items += len(programs)
        if value is None or not self._valid(identifier, value):
            status = r.INVALID_IDENTIFIER[identifier if value is not None else "id"]
            return self._failed_customer(shape, identifier, value or "", status, programs)
        index = state.find(identifier, lookup_key(identifier, value))
        if index is None:
            for program in programs:
                state.count(f"{identifier}:{value}", program, delinked=False)
            return self._failed_customer(shape, identifier, value, r.UNKNOWN_CUSTOMER, programs)
        items = []
        for program in programs:
            fault, code = self.trouble.item_fault()
            if fault is ItemFault.TRANSIENT:
                self.counters.faults[fault.value] += 1
                items.append(r.program_item(shape, program, r.transient_status(code)))
                continue
            if fault is ItemFault.OMITTED:  # dropped unseen: neither processed nor answered
                self.counters.faults[fault.value] += 1
                continue
            if not state.is_program(program):
                status = r.UNKNOWN_PROGRAM
                state.count(index, program, delinked=False)
            else:
                done = state.delink(index, program)
                state.count(index, program, delinked=done)
                status = r.SUCCESS if done else r.NOT_LINKED
            if fault is ItemFault.OMITTED_PROCESSED:  # done, but left out of the answer
                self.counters.faults[ItemFault.OMITTED.value] += 1
                continue
            items.append(r.program_item(shape, program, status))
        customer = state.customer(index).as_json()
        if self.profile.answer_identifiers == "id":
            customer = {"id": customer["id"]}
        customer["status"] = r.FOUND
        return {"customer": customer, r.SHAPES[shape][1]: items}

    def _failed_customer(
        self, shape: str, identifier: str, value: str, status: dict[str, Any], programs: list[str]
    ) -> dict[str, Any]:
        items = []
        if self.profile.unknown_customer_programs == "echo":
            items = [r.program_item(shape, p, status) for p in programs]
        return {"customer": {identifier: value, "status": status}, r.SHAPES[shape][1]: items}

    def _valid(self, identifier: str, value: str) -> bool:
        p = self.profile
        if identifier == "mobile":
            return value.isdigit() and p.mobile_min_digits <= len(value) <= p.mobile_max_digits
        if identifier == "email":
            return "@" in value
        return bool(value)


def _identifier_of(customer: dict[str, Any]) -> tuple[str, str | None]:
    """The first identifier present, its value as text (a JSON number is fine for mobile)."""
    for name in IDENTIFIERS:
        value = customer.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            return name, ""
        if isinstance(value, float | int):
            return name, str(int(value))
        if isinstance(value, str):
            return name, value.strip()
        return name, ""
    return "id", None
