"""Run the CLI and kill -9 it at a chosen point of the end-of-run assembly (for crash tests).

    python -m tests.crash_at POINT CLI-ARGS...

POINT: `assembly` (after the first range's result parts are written), `fold` (the folded
journal is complete in the scratch folder, not yet in place), `fold-promoted` (in place, the
live logs not yet removed). The process dies by SIGKILL, as the kernel's OOM killer would kill it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import batcher.results.assemble as assemble
import batcher.results.journal as journal
from batcher.cli import main


def die(*_: Any, **__: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point == "assembly":
        add = assemble._Parts.add

        def add_then_die(self: Any, *args: Any, **kwargs: Any) -> None:
            add(self, *args, **kwargs)
            die()

        assemble._Parts.add = add_then_die  # type: ignore[method-assign]
    elif point == "fold":
        setattr(assemble, "promote_folded", die)  # noqa: B010 (not exported: mypy)
    elif point == "fold-promoted":
        journal._fsync_dir = die  # first called right after the rename
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    arm(sys.argv[1])
    main(sys.argv[2:])
