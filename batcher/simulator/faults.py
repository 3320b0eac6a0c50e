"""Seeded trouble: which request fails how, which item goes missing, how long an answer takes.

Every decision comes from one `random.Random(seed)` drawn in a fixed order per request, so the
same seed and the same sequence of requests give the same answers. A profile without faults
or latency draws nothing at all (the fast path).
"""

from __future__ import annotations

import enum
import random

from batcher.simulator.profile import FaultSettings, LatencySettings


class RequestFault(enum.StrEnum):
    THROTTLE = "throttle"  # a 429 (or the quota's status) whatever the pace
    SERVER_ERROR = "server_error"
    HANG = "hang"
    DISCONNECT_BEFORE = "disconnect_before"  # nothing processed
    DISCONNECT_AFTER = "disconnect_after"  # processed, then the response is lost
    MALFORMED_JSON = "malformed_json"  # processed, then a broken body


class ItemFault(enum.StrEnum):
    TRANSIENT = "item_transient"  # 521 / 2010, not processed
    OMITTED = "item_omitted"  # left out of the response (maybe processed)
    OMITTED_PROCESSED = "item_omitted_processed"


class Trouble:
    def __init__(self, seed: int, faults: FaultSettings, latency: LatencySettings) -> None:
        self._rng = random.Random(seed)
        self.set(faults, latency)

    def set(self, faults: FaultSettings, latency: LatencySettings) -> None:
        self.faults = faults
        self.latency = latency
        # Checked in this order against one draw: the probabilities share [0, 1).
        self._request_faults = [
            (RequestFault.THROTTLE, faults.throttle),
            (RequestFault.SERVER_ERROR, faults.server_error),
            (RequestFault.HANG, faults.hang),
            (RequestFault.DISCONNECT_BEFORE, faults.disconnect_before),
            (RequestFault.DISCONNECT_AFTER, faults.disconnect_after),
            (RequestFault.MALFORMED_JSON, faults.malformed_json),
        ]
        self.any_request_fault = faults.any_request_fault
        self.any_item_fault = faults.item_transient + faults.item_omitted > 0
        self.any_latency = latency.fixed_ms + latency.spread_ms > 0

    def request_fault(self) -> RequestFault | None:
        if not self.any_request_fault:
            return None
        draw = self._rng.random()
        for fault, probability in self._request_faults:
            if draw < probability:
                return fault
            draw -= probability
        return None

    def item_fault(self) -> tuple[ItemFault | None, int]:
        """The fault for one program item, and the transient code it would answer."""
        if not self.any_item_fault:
            return None, 0
        f = self.faults
        draw = self._rng.random()
        if draw < f.item_transient:
            return ItemFault.TRANSIENT, self._rng.choice(f.item_transient_codes)
        if draw < f.item_transient + f.item_omitted:
            if self._rng.random() < f.item_omitted_processed_share:
                return ItemFault.OMITTED_PROCESSED, 0
            return ItemFault.OMITTED, 0
        return None, 0

    def server_error(self) -> tuple[int, bool]:
        """(status, html?) for a 5xx answer."""
        status = self._rng.choice(self.faults.server_error_statuses)
        return status, self._rng.random() < self.faults.server_error_html_share

    def latency_s(self) -> float:
        if not self.any_latency:
            return 0.0
        spread = self._rng.random() * self.latency.spread_ms
        return (self.latency.fixed_ms + spread) / 1000.0

    def shuffle(self, items: list[object]) -> None:
        self._rng.shuffle(items)
