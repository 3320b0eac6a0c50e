"""One run per job, and one run per API key, on this machine: flocks in a per-user state folder.

Capillary's quota is per API key and a run's journal is per job, so neither may be shared by
two live runs. The locks live outside the working directory and the output folder (two runs
started from different directories, or with different `output.dir`, still meet), in
`$BATCHER_STATE_DIR`, else `$XDG_STATE_HOME/batcher`, else `~/.local/state/batcher`.

The kernel drops an flock when its process dies, however it dies, so a lock left by a dead
process is simply free; the file's old content tells us whose it was, for the log line. A lock
file names its holder (job, run, pid, start time) and the API key only by a hash: never a
user name, client key or secret.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from batcher.errors import RunLockedError
from batcher.results.outcomes import utc_now

log = structlog.get_logger("batcher.runs.lock")

STATE_DIR_ENV = "BATCHER_STATE_DIR"
LOCKS_FOLDER = "locks"
WAIT_POLL_S = 0.5


def state_dir() -> Path:
    """The per-user folder for state shared by every run on this machine."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return (base / "batcher").resolve()


def api_key_hash(base_url: str, auth: str, principal: str) -> str:
    """A stable name for one API key: same base URL and same user name or client key."""
    text = f"{base_url.rstrip('/').lower()}\n{auth}\n{principal}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class RunLock:
    """An exclusive flock on one file; `what` says what it guards, for messages."""

    path: Path
    what: str
    _file: IO[str] | None = field(default=None, repr=False)

    def acquire(self, holder: dict[str, Any], *, wait: bool = False) -> dict[str, Any] | None:
        """Take the lock (with `wait`, once it is free); returns a dead previous holder, if any."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            self._take(f, wait)
        except BaseException:
            f.close()
            raise
        previous = _read_holder(f)
        stale = bool(previous.get("pid")) and previous.get("released_at") is None
        taken = {**holder, "started_at": utc_now(), "lock": self.what, "released_at": None}
        _write_holder(f, taken)
        self._file = f
        return previous if stale else None

    def _take(self, f: IO[str], wait: bool) -> None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            other = _read_holder(f)
        if not wait:
            raise RunLockedError(
                f"Another run holds the lock on {self.what}: {_describe(other)}; "
                f"lock file {self.path}.",
                hint="Wait for it to finish (or pass --wait to start when it does), or stop it "
                "(Ctrl-C lets it finish cleanly) and resume later; two runs at once would "
                "share one quota (or one journal) at twice its pace.",
            ) from None
        log.warning("run.waiting_for_lock", lock=self.what, holder=_describe(other))
        # Polled rather than a blocking flock, so that Ctrl-C stops the wait at once.
        while True:
            time.sleep(WAIT_POLL_S)
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                continue

    def release(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        holder = _read_holder(f)
        holder["released_at"] = utc_now()
        _write_holder(f, holder)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"job {holder.get('job', '?')}, pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, started {holder.get('started_at', '?')} "
        f"(run {holder.get('run_id', '?')})"
    )


def _write_holder(f: IO[str], holder: dict[str, Any]) -> None:
    f.seek(0)
    f.truncate()
    json.dump(holder, f)
    f.flush()
    os.fsync(f.fileno())


def _read_holder(f: IO[str]) -> dict[str, Any]:
    f.seek(0)
    try:
        data = json.loads(f.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def job_lock(job_name: str, folder: Path | None = None) -> RunLock:
    """One live run per job name, whatever the working directory or output folder."""
    return RunLock(
        (folder or state_dir() / LOCKS_FOLDER) / f"job-{job_name}.lock", f"job {job_name}"
    )


def api_key_lock(base_url: str, auth: str, principal: str, folder: Path | None = None) -> RunLock:
    """One live run per API key (its quota is shared by every job that uses it)."""
    digest = api_key_hash(base_url, auth, principal)
    return RunLock(
        (folder or state_dir() / LOCKS_FOLDER) / f"key-{digest}.lock",
        f"the API key for {base_url} (key hash {digest})",
    )


@contextmanager
def holding(
    locks: list[RunLock], holder: dict[str, Any], *, wait: bool = False
) -> Iterator[list[dict[str, Any]]]:
    """Hold every lock (taken in order; released in reverse); yields the dead previous holders."""
    taken: list[RunLock] = []
    stale: list[dict[str, Any]] = []
    full = {"pid": os.getpid(), "host": socket.gethostname(), **holder}
    try:
        for lock in locks:
            previous = lock.acquire(full, wait=wait)
            taken.append(lock)
            if previous is not None:
                stale.append({**previous, "lock": lock.what})
        yield stale
    finally:
        for lock in reversed(taken):
            lock.release()
