"""`batcher simulate`: serve the simulator until Ctrl-C, logging its requests.

A log line per request costs the server more than answering it, so by default the log is
sampled and summarised: the first few requests of every second each get a `simulator.request`
line, and every second with traffic gets one `simulator.requests` line counting them all by
status (with how many were not logged one by one). `--log-every-request` logs every line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from batcher.eventloop import loop_factory
from batcher.simulator.profile import load_profile
from batcher.simulator.server import Simulator

SAMPLED_PER_S = 5  # request lines logged one by one in each second, by default
SUMMARY_EVERY_S = 1.0


class RequestLog:
    """The simulator's request log: every line, or a few a second plus a summary each second."""

    def __init__(
        self,
        log: Any,
        *,
        every_request: bool = False,
        sampled_per_s: int = SAMPLED_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._every = every_request
        self._sampled_per_s = sampled_per_s
        self._clock = clock
        self._second = int(clock())
        self._logged_this_second = 0
        self._by_status: Counter[str] = Counter()
        self._not_logged = 0
        self._since = clock()

    def __call__(self, fields: dict[str, Any]) -> None:
        if self._every:
            self._log.info("simulator.request", **fields)
            return
        self._by_status[fields["status"]] += 1
        second = int(self._clock())
        if second != self._second:
            self._second, self._logged_this_second = second, 0
        if self._logged_this_second < self._sampled_per_s:
            self._logged_this_second += 1
            self._log.info("simulator.request", **fields)
        else:
            self._not_logged += 1

    def summarise(self) -> None:
        """One `simulator.requests` line for the requests since the last one (none: no line)."""
        now = self._clock()
        total = sum(self._by_status.values())
        if total:
            elapsed_s = max(now - self._since, 1e-9)
            self._log.info(
                "simulator.requests",
                requests=total,
                per_second=round(total / elapsed_s, 1),
                by_status=dict(sorted(self._by_status.items())),
                not_logged=self._not_logged,
            )
        self._by_status.clear()
        self._not_logged = 0
        self._since = now


def serve_forever(
    host: str, port: int, profile_path: str | Path | None, *, log_every_request: bool = False
) -> None:
    """Serve until SIGINT/SIGTERM; a bad profile raises ProfileError before binding."""
    profile = load_profile(profile_path)
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory()) as runner,
    ):
        runner.run(_serve(host, port, profile, log_every_request))


async def _serve(host: str, port: int, profile: Any, log_every_request: bool) -> None:
    log = structlog.get_logger("batcher.simulator")
    request_log = RequestLog(log, every_request=log_every_request)
    sim = Simulator(profile, log_request=request_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: KeyboardInterrupt instead
            loop.add_signal_handler(sig, stop.set)
    await sim.start(host, port)
    try:
        print(
            f"Simulator listening on {sim.base_url} (profile: {profile.source or 'built-in'})",
            flush=True,
        )
        print(f"  state: {sim.base_url}/__simulator/state   stop: Ctrl-C", flush=True)
        log.info(
            "simulator.started",
            url=sim.base_url,
            profile=str(profile.source) if profile.source else None,
            log_every_request=log_every_request,
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUMMARY_EVERY_S)
            request_log.summarise()
    finally:
        await sim.stop()
        request_log.summarise()
        snap = sim.snapshot(pairs=False)
        log.info(
            "simulator.stopped",
            requests=snap["counters"]["requests"],
            links_remaining=snap["links_remaining"],
        )
        sys.stdout.flush()
