"""Which asyncio event loop a run or the simulator uses: uvloop in batcher's own process only.

uvloop halves the event loop's share of each request, so the `batcher` command uses it when it is
installed. A library call (`batcher.run_job` from an Airflow or Dagster worker, a notebook, the
test suite) runs inside somebody else's process, next to their threads and native libraries, where
uvloop's C handles have known crash reports (segfaults on handle close in 0.22); there batcher uses
the standard loop unless told otherwise. `BATCHER_EVENT_LOOP=asyncio|uvloop` overrides both.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from batcher.errors import BatcherError

ENV = "BATCHER_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop")

# Set by the console entry point (batcher.cli.entry): True only in batcher's own process.
_own_process = False


def claim_process() -> None:
    """Called once by the `batcher` command: this process is ours, uvloop may be used."""
    global _own_process
    _own_process = True


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for asyncio.Runner: uvloop's, or None for the standard loop."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted not in ("", *CHOICES):
        raise BatcherError(
            f"{ENV}={wanted!r} is not a loop batcher knows: use one of {', '.join(CHOICES)}."
        )
    if wanted == "asyncio" or (wanted == "" and not _own_process):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
