"""One run per job at a time: an flock on `<output>/<job>/.lock`, with the holder written in it.

The kernel drops an flock when its process dies, however it dies, so a lock left by a dead
process is simply free; the file's old content tells us whose it was, for the log line.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batcher.errors import RunLockedError
from batcher.results.outcomes import utc_now

LOCK_NAME = ".lock"


@dataclass
class JobLock:
    path: Path
    _file: IO[str] | None = None

    def acquire(self, run_id: str) -> dict[str, Any] | None:
        """Take the lock; returns the previous holder when it died without releasing it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(f)
            f.close()
            raise RunLockedError(
                f"Another run of this job is live: pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started_at', '?')} "
                f"(run {holder.get('run_id', '?')}); lock file {self.path}.",
                hint="Wait for it to finish, or stop it (Ctrl-C lets it finish cleanly) and "
                "resume; two runs of one job at once would share neither quota nor journal.",
            ) from None
        previous = _read_holder(f)
        stale = bool(previous.get("pid")) and previous.get("released_at") is None
        f.seek(0)
        f.truncate()
        json.dump(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "run_id": run_id,
                "started_at": utc_now(),
                "released_at": None,
            },
            f,
        )
        f.flush()
        os.fsync(f.fileno())
        self._file = f
        return previous if stale else None

    def release(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        holder = _read_holder(f)
        holder["released_at"] = utc_now()
        f.seek(0)
        f.truncate()
        json.dump(holder, f)
        f.flush()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _read_holder(f: IO[str]) -> dict[str, Any]:
    f.seek(0)
    try:
        data = json.loads(f.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def job_lock(job_dir: Path) -> JobLock:
    return JobLock(job_dir / LOCK_NAME)
