"""`batcher simulate`: serve the simulator until Ctrl-C, one structured log line per request."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from batcher.simulator.profile import load_profile
from batcher.simulator.server import Simulator


def serve_forever(host: str, port: int, profile_path: str | Path | None) -> None:
    """Serve until SIGINT/SIGTERM; a bad profile raises ProfileError before binding."""
    profile = load_profile(profile_path)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, profile))


async def _serve(host: str, port: int, profile: Any) -> None:
    log = structlog.get_logger("batcher.simulator")

    def log_request(fields: dict[str, Any]) -> None:
        log.info("simulator.request", **fields)

    sim = Simulator(profile, log_request=log_request)
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
        )
        await stop.wait()
    finally:
        await sim.stop()
        snap = sim.snapshot(pairs=False)
        log.info(
            "simulator.stopped",
            requests=snap["counters"]["requests"],
            links_remaining=snap["links_remaining"],
        )
        sys.stdout.flush()
