"""Row outcomes: the six statuses, the journal they stream into, and the result files.

Every input row ends with exactly one status. Sent pairs are journalled as their answers arrive
(one JSON line each, fsynced at least every second), so a run never holds its outcomes in memory
and a crash loses nothing confirmed. The result files are assembled from the journal at the end.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl


class Status(enum.StrEnum):
    DELINKED = "delinked"
    NOT_LINKED = "not_linked"
    FAILED = "failed"
    RETRYABLE = "retryable"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
# Statuses that leave work for the operator (exit code 1).
NEEDS_ATTENTION = frozenset({Status.FAILED, Status.RETRYABLE, Status.REJECTED})
JOURNAL_NAME = "journal.jsonl"
# Write-ahead: the pairs of each request, durable before it is sent. After a crash, a pair here
# without an outcome may have been processed, so a resend answering "not linked" means delinked.
INTENTS_NAME = "intents.jsonl"
HAND_OVER_EVERY_S = 0.02

JOURNAL_SCHEMA = {
    "k": pl.Int64,  # the row's _key in the run that wrote the line
    "cu": pl.String,  # the customer identifier as sent
    "pr": pl.String,  # the program name as sent
    "s": pl.String,  # status
    "c": pl.Int64,  # API code
    "m": pl.String,  # API message
    "cid": pl.Int64,  # customer id when returned
    "rid": pl.String,  # X-CAP-REQUEST-ID
    "a": pl.Int64,  # attempts
    "t": pl.String,  # finished_at, UTC ISO 8601
    "n": pl.String,  # note
    "ms": pl.Boolean,  # retryable only: an attempt may have been processed, its answer lost
    "ai": pl.String,  # the customer's identifier as the API answered it (its stored form)
}

# What an answer says of a row; a later run's answer replaces all of them (see lineage.report).
ANSWER_COLUMNS = (
    "status",
    "code",
    "message",
    "customer_id",
    "api_identifier",
    "request_id",
    "attempts",
    "finished_at",
    "note",
)


class Outcome(NamedTuple):
    """One pair's answer, as the journal records it (a named tuple: one is made per pair)."""

    key: int
    customer: str
    program: str
    status: Status
    code: int | None
    message: str | None
    customer_id: int | None = None
    request_id: str | None = None
    attempts: int = 0
    note: str | None = None
    maybe_sent: bool = False
    api_identifier: str | None = None  # the identifier the answer named, when it was placed


def _fsync_all(*fds: int) -> None:
    sync = getattr(os, "fdatasync", os.fsync)  # the data, not the mtime: all a reader needs
    for fd in fds:
        sync(fd)


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


_clock = [0, ""]  # the last second formatted: answers come thousands a second


def utc_now() -> str:
    """UTC now, ISO 8601 to the millisecond, with a Z."""
    ms = time.time_ns() // 1_000_000
    second, millis = divmod(ms, 1000)
    if second != _clock[0]:
        _clock[0], _clock[1] = (
            second,
            datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        )
    return f"{_clock[1]}.{millis:03d}Z"


class Journal:
    """Append-only, fsynced outcome log of the pairs that were sent (or given up on)."""

    def __init__(self, path: Path, *, flush_every_s: float = 1.0) -> None:
        self.path = path
        for log_path in (path, path.with_name(INTENTS_NAME)):
            drop_torn_tail(log_path)
        # Raw descriptors: each hand-over is one write(2), with no buffering layer between.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd: int | None = os.open(path, flags, 0o600)
        self._intents_fd: int | None = os.open(path.with_name(INTENTS_NAME), flags, 0o600)
        self._buffer: list[str] = []
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self._last_hand_over = 0.0
        self.counts: Counter[str] = Counter()

    @staticmethod
    def _text(value: str | None) -> str:
        """JSON for a string; most values (mobiles, program names) need no escaping at all."""
        if value is None:
            return "null"
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'
        return json.dumps(value, ensure_ascii=False)

    def record(self, outcome: Outcome, finished_at: str | None = None) -> None:
        """Buffer one outcome (a JSON object per line); flushed at least every second."""
        status = outcome.status.value
        text = self._text
        self._buffer.append(
            f'{{"k":{outcome.key},"cu":{text(outcome.customer)},"pr":{text(outcome.program)},'
            f'"s":"{status}","c":{_number(outcome.code)},"m":{text(outcome.message)},'
            f'"cid":{_number(outcome.customer_id)},"rid":{text(outcome.request_id)},'
            f'"a":{outcome.attempts},"t":{text(finished_at or utc_now())},'
            f'"n":{text(outcome.note)},"ms":{"true" if outcome.maybe_sent else "false"},'
            f'"ai":{text(outcome.api_identifier)}}}'
        )
        self.counts[status] += 1

    def hand_over(self) -> None:
        """Give what is buffered to the OS (one write, at most every 20 ms): from then on it
        survives a killed process, though only the fsync of `flush` survives a machine crash.
        A kill loses at most 20 ms of answers, whose pairs the intents mark for the resend."""
        now = time.monotonic()
        if now - self._last_hand_over < HAND_OVER_EVERY_S:
            return
        self._last_hand_over = now
        if self._buffer and self._fd is not None:
            _write_all(self._fd, ("\n".join(self._buffer) + "\n").encode())
            self._buffer.clear()
        if time.monotonic() - self._last_flush >= self._flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Write and fsync what is buffered, and the intents: after this they survive a crash."""
        if self._buffer and self._fd is not None:
            _write_all(self._fd, ("\n".join(self._buffer) + "\n").encode())
            self._buffer.clear()
        _fsync_all(*(fd for fd in (self._fd, self._intents_fd) if fd is not None))
        self._last_flush = time.monotonic()

    def intend(self, pairs: list[tuple[str, str]]) -> None:
        """Record that these pairs are about to be sent, before they are.

        Handed to the OS at once (a write, no fsync: an fsync per request would cost more than
        the request), so a killed process leaves it behind; fsynced with the outcomes.
        """
        if self._intents_fd is not None:
            text = self._text
            line = ",".join(f"[{text(c)},{text(p)}]" for c, p in pairs)
            _write_all(self._intents_fd, f"[{line}]\n".encode())

    def close(self) -> None:
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None
        if self._intents_fd is not None:
            os.close(self._intents_fd)
            self._intents_fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def drop_torn_tail(path: Path) -> None:
    """A kill mid-write can leave half a line: cut it, so that appending starts a clean line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline; everything after it is the torn line.
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(pos - step + cut + 1)
                return
            pos -= step
        f.truncate(0)


def read_journal(path: Path) -> pl.DataFrame:
    """The journal's outcomes, the last word per row winning (a resumed run may append)."""
    if not path.exists() or path.stat().st_size == 0:
        return pl.DataFrame(schema=JOURNAL_SCHEMA)
    # A kill can leave a torn last line (only the last: a journal reopened for appending has
    # it cut first), so read up to the last newline. Bytes straight to polars: a list of a
    # million Python strings would cost several times the file.
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end == 0:
        return pl.DataFrame(schema=JOURNAL_SCHEMA)
    frame = pl.read_ndjson(data if end == len(data) else data[:end], schema=JOURNAL_SCHEMA)
    return frame.unique(subset=["cu", "pr"], keep="last", maintain_order=True)


def read_intents(path: Path) -> set[tuple[str, str]]:
    """Every pair a run of this folder was about to send (see INTENTS_NAME)."""
    intents = path.with_name(INTENTS_NAME)
    sent: set[tuple[str, str]] = set()
    if not intents.exists():
        return sent
    with open(intents, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                sent.update((str(c), str(p)) for c, p in json.loads(line))
            except (ValueError, TypeError):
                continue  # a torn last line: its request was never sent
    return sent


def unconfirmed_sends(journal_path: Path) -> set[tuple[str, str]]:
    """Pairs of a finished run that may have been processed although no answer said so.

    Those given up as `retryable` after an attempt whose answer was lost, and those sent with
    no journal line at all (in flight when the run was stopped at once, or killed). A later run
    that hears "not linked" for one of them knows the delink was done.
    """
    journal = read_journal(journal_path)
    flagged = journal.filter((pl.col("s") == Status.RETRYABLE.value) & pl.col("ms").fill_null(True))
    answered = set(zip(journal["cu"].to_list(), journal["pr"].to_list(), strict=True))
    return (read_intents(journal_path) - answered) | set(
        zip(flagged["cu"].to_list(), flagged["pr"].to_list(), strict=True)
    )


def assemble_outcomes(
    rows: pl.DataFrame,
    journal: pl.DataFrame,
    columns: list[str],
    unsent: str | None = None,
) -> pl.DataFrame:
    """One outcome per input row: journalled answers for sent rows, validation for the rest.

    A valid row with no journal entry was never answered: it is `retryable` with the message
    `unsent`, never lost.
    Journal lines are matched by pair (customer, program), so that a resume whose input was
    changed (with --force) still gives each row the answer its own pair got.
    """
    valid = pl.col("status") == "valid"
    # Only valid rows were sent: a duplicate shares its pair with the row it repeats, but not
    # that row's answer (null keys never match).
    joined = rows.join(
        journal.drop("k"),
        left_on=[pl.when(valid).then(pl.col("_customer")), pl.when(valid).then(pl.col("_program"))],
        right_on=["cu", "pr"],
        how="left",
        maintain_order="left",
    )
    out = joined.select(
        "row",
        *(["source_file"] if "source_file" in rows.columns else []),
        *(["sheet"] if "sheet" in rows.columns else []),  # an Excel input's sheet
        *columns,
        pl.when(valid)
        .then(pl.col("s").fill_null(Status.RETRYABLE.value))
        .otherwise(pl.col("status"))
        .alias("status"),
        pl.col("c").alias("code"),
        pl.when(valid)
        .then(pl.col("m").fill_null(unsent or "not sent: no answer was recorded"))
        .otherwise(pl.col("message"))
        .alias("message"),
        # The identifier as normalised: what was sent (for a duplicate, what made it one).
        pl.col("_customer").alias("sent_identifier"),
        pl.col("cid").alias("customer_id"),
        pl.col("ai").alias("api_identifier"),
        pl.col("rid").alias("request_id"),
        pl.col("a").fill_null(0).alias("attempts"),
        pl.col("t").alias("finished_at"),
        pl.col("n").alias("note"),
        "reason",
        "duplicate_of",
    )
    return out


def summarise_counts(outcomes: pl.DataFrame) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for status, n in outcomes.group_by("status").len().iter_rows():
        counts[str(status)] = int(n)
    return counts


def codes_table(outcomes: pl.DataFrame, limit: int = 20) -> list[dict[str, Any]]:
    """Counts by (status, API code, message), most frequent first."""
    sent = outcomes.filter(pl.col("code").is_not_null())
    grouped = (
        sent.group_by("status", "code", "message")
        .len()
        .sort(["len", "code"], descending=[True, False])
        .head(limit)
    )
    return [
        {"status": s, "code": c, "message": m, "rows": int(n)} for s, c, m, n in grouped.iter_rows()
    ]


def exit_code_for(counts: dict[str, int]) -> int:
    """0 when nothing needs attention; 1 when some rows are failed, retryable or rejected."""
    return 1 if any(counts.get(s.value, 0) for s in NEEDS_ATTENTION) else 0
