"""The journal: every answered pair, written ahead as answers arrive, folded small at rest.

While a run is live, two append-only logs in its folder make it resumable: `journal.jsonl`
(one JSON line per answered pair, handed to the OS within 20 ms, fsynced every second and at
every stop) and `intents.jsonl` (each request's pairs, handed over before it is sent).

Once the run has written its result files, both are folded into `journal.parquet` (zstd): one
row per answered pair (its last word) plus one intent row (null status) per pair that was about
to be sent without a confirmed answer. A resumed run appends new lines to a fresh
`journal.jsonl` beside it; readers take the folded rows first and the lines after them, so the
folder reads the same at every point of a fold (see `promote_folded`).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import orjson
import polars as pl

from batcher.results.outcomes import CONFIRMED, Outcome, Status, utc_now

JOURNAL_NAME = "journal.jsonl"
# Write-ahead: the pairs of each request, durable before it is sent. After a crash, a pair here
# without an outcome may have been processed, so a resend answering "not linked" means delinked.
INTENTS_NAME = "intents.jsonl"
FOLDED_NAME = "journal.parquet"
HAND_OVER_EVERY_S = 0.02
# Bytes of journal text parsed at a time: bounds the memory of every reader. A block of JSON
# lines takes about 8 times its size once parsed (32 MB blocks: 240 MB at the end of a 10M run).
CHUNK_BYTES = 8 << 20
# The intents' lines (arrays of arrays) take about 17 times their size while decoded.
INTENT_CHUNK_BYTES = 4 << 20
# Program names whose JSON a journal keeps (past this, it starts over).
_MAX_PROGRAMS = 4096

JOURNAL_SCHEMA = {
    "k": pl.Int64,  # the row's _key in the run that wrote the line
    "cu": pl.String,  # the customer identifier as sent
    "pr": pl.String,  # the program name as sent
    "s": pl.String,  # status (null in the folded file: an intent without a confirmed answer)
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
PAIR = ["cu", "pr"]


def _fsync_all(*fds: int) -> None:
    sync = getattr(os, "fdatasync", os.fsync)  # the data, not the mtime: all a reader needs
    for fd in fds:
        sync(fd)


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


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
        # The JSON of each program name seen (an input names a handful).
        self._programs: dict[str, str] = {}

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
        self.record_all((outcome,), finished_at)

    def record_all(self, outcomes: Iterable[Outcome], finished_at: str | None = None) -> None:
        """Buffer the outcomes of one answer, a line each, all stamped with the same time.

        The lines are those `record` writes, built a part at a time: the customer's JSON once
        per customer, the program's once per name, and everything after the program (status,
        code, message, ids, attempts, time, note) once per distinct answer, usually once per
        customer: its programs mostly get the same one. Per pair that leaves a few lookups and
        one f-string, where formatting 13 fields every time cost more than sending the pair.
        """
        text = self._text
        at = text(finished_at or utc_now())
        buffer = self._buffer
        programs = self._programs
        if len(programs) > _MAX_PROGRAMS:  # an input of a great many program names
            programs.clear()
        tails: dict[tuple[object, ...], str] = {}
        status_of: dict[str, str] = {}  # each tail's status
        lines_of: dict[str, int] = {}  # and its lines
        customer: str | None = None
        cu = ""
        for o in outcomes:
            if o.customer is not customer:  # a customer's pairs come together
                customer = o.customer
                cu = text(customer)
            pr = programs.get(o.program)
            if pr is None:
                pr = programs[o.program] = text(o.program)
            answer = o[3:]  # status, code, message, ids, attempts, note, maybe_sent, identifier
            tail = tails.get(answer)
            if tail is None:
                status = o.status.value
                tail = tails[answer] = (
                    f'"s":"{status}","c":{_number(o.code)},"m":{text(o.message)},'
                    f'"cid":{_number(o.customer_id)},"rid":{text(o.request_id)},'
                    f'"a":{o.attempts},"t":{at},'
                    f'"n":{text(o.note)},"ms":{"true" if o.maybe_sent else "false"},'
                    f'"ai":{text(o.api_identifier)}}}'
                )
                status_of[tail], lines_of[tail] = status, 0
            lines_of[tail] += 1
            buffer.append(f'{{"k":{o.key},"cu":{cu},"pr":{pr},{tail}')
        counts = self.counts
        for tail, n in lines_of.items():
            counts[status_of[tail]] += n

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

    def intend(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Record that these pairs are about to be sent, before they are.

        Handed to the OS at once (a write, no fsync: an fsync per request would cost more than
        the request), so a killed process leaves it behind; fsynced with the outcomes.
        """
        if self._intents_fd is not None:
            # The line `[["c","p"],...]`: orjson writes the arrays as the writer always did
            # (compact, UTF-8, every control character escaped), newline included.
            _write_all(self._intents_fd, orjson.dumps(pairs, option=orjson.OPT_APPEND_NEWLINE))

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


# --- reading ---------------------------------------------------------------------------------


def _line_blocks(path: Path, block_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The file's complete lines, about `block_bytes` at a time; a torn last line is left out
    (only the last can be torn: a log reopened for appending has it cut first)."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        carry = b""
        while chunk := f.read(block_bytes):
            data = carry + chunk
            end = data.rfind(b"\n") + 1
            carry = data[end:]
            if end:
                yield data[:end]


def journal_chunks(path: Path, block_bytes: int = CHUNK_BYTES) -> Iterator[pl.DataFrame]:
    """The live journal's lines, in order, a bounded block at a time (JOURNAL_SCHEMA)."""
    for block in _line_blocks(path, block_bytes):
        # Bytes straight to polars: a list of Python strings would cost several times the text.
        yield pl.read_ndjson(block, schema=JOURNAL_SCHEMA)


def intent_chunks(path: Path, block_bytes: int = INTENT_CHUNK_BYTES) -> Iterator[pl.DataFrame]:
    """The live intents' pairs (columns cu, pr), a bounded block at a time."""
    for block in _line_blocks(path, block_bytes):
        # One request per line, a JSON array of [customer, program]; the writer escapes every
        # control character, so \x01 never occurs and each line is one field.
        lines = pl.read_csv(
            block, has_header=False, separator="\x01", quote_char=None, schema={"l": pl.String}
        )
        try:
            decoded = lines.select(pl.col("l").str.json_decode(pl.List(pl.List(pl.String))))
        except pl.exceptions.PolarsError:
            yield _intents_slowly(block)
            continue
        yield (
            decoded.explode("l")
            .select(
                cu=pl.col("l").list.get(0, null_on_oob=True),
                pr=pl.col("l").list.get(1, null_on_oob=True),
            )
            .drop_nulls()
        )


def _intents_slowly(block: bytes) -> pl.DataFrame:
    """Line by line, skipping what does not parse (a hand-edited or damaged file)."""
    pairs: list[tuple[str, str]] = []
    for line in block.decode("utf-8", errors="replace").splitlines():
        try:
            pairs.extend((str(c), str(p)) for c, p in json.loads(line))
        except (ValueError, TypeError):
            continue
    return pl.DataFrame(pairs, schema={"cu": pl.String, "pr": pl.String}, orient="row")


def folded_path(journal_path: Path) -> Path:
    return journal_path.with_name(FOLDED_NAME)


def read_folded(journal_path: Path) -> pl.DataFrame:
    """The folded rows of a run folder (JOURNAL_SCHEMA), empty when it has none."""
    path = folded_path(journal_path)
    if not path.is_file():
        return pl.DataFrame(schema=JOURNAL_SCHEMA)
    return conform(pl.read_parquet(path))


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """JOURNAL_SCHEMA's columns in order; a column a fold older than the schema lacks is null."""
    return frame.select(
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in JOURNAL_SCHEMA.items()
    )


def read_journal(path: Path) -> pl.DataFrame:
    """The journal's outcomes, the last word per pair winning: the folded answers first, then
    the live lines (a resumed run appends; a kill mid-fold may leave both)."""
    folded = read_folded(path)
    parts = [folded.filter(pl.col("s").is_not_null()), *journal_chunks(path)]
    frame = pl.concat(parts) if len(parts) > 1 else parts[0]
    return frame.unique(subset=PAIR, keep="last", maintain_order=True)


def _intent_blocks(
    journal_path: Path, block_bytes: int = INTENT_CHUNK_BYTES
) -> Iterator[pl.DataFrame]:
    """The intents (cu, pr) the fold kept, then the live intents, a bounded block at a time."""
    folded = folded_path(journal_path)
    if folded.is_file():
        # Only the intent rows (null status): the answers are not read.
        yield pl.scan_parquet(folded).filter(pl.col("s").is_null()).select(PAIR).collect()
    yield from intent_chunks(journal_path.with_name(INTENTS_NAME), block_bytes)


def intent_pairs(journal_path: Path) -> pl.DataFrame:
    """Every pair this folder's runs were about to send and that the fold kept (cu, pr)."""
    parts = [block.unique() for block in _intent_blocks(journal_path)]
    if not parts:
        return pl.DataFrame(schema={"cu": pl.String, "pr": pl.String})
    return pl.concat(parts).unique()


def read_intents(path: Path) -> set[tuple[str, str]]:
    """Every pair a run of this folder was about to send, less those the fold found settled
    (see INTENTS_NAME)."""
    pairs = intent_pairs(path)
    return set(zip(pairs["cu"].to_list(), pairs["pr"].to_list(), strict=True))


def _pairs_set(frame: pl.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["cu"].to_list(), frame["pr"].to_list(), strict=True))


def confirmed_pairs(journal_path: Path) -> pl.DataFrame:
    """The pairs (columns `customer`, `program`, as sent) whose last word is a confirmed
    answer: a resume does not send them. The journal's short on-disk keys stay in this module.

    Read a block at a time, keeping three columns: a resume of a big run needs a fraction of
    what `read_journal` would hold.
    """
    kept = [pl.col("cu"), pl.col("pr"), pl.col("s").is_in(CONFIRMED).alias("ok")]
    folded = folded_path(journal_path)
    parts = []
    if folded.is_file():
        parts.append(
            pl.scan_parquet(folded).filter(pl.col("s").is_not_null()).select(kept).collect()
        )
    parts += [block.select(kept) for block in journal_chunks(journal_path)]
    if not parts:
        return pl.DataFrame(schema={"customer": pl.String, "program": pl.String})
    last = pl.concat(parts).unique(subset=PAIR, keep="last", maintain_order=True)
    return last.filter(pl.col("ok")).select(
        pl.col("cu").alias("customer"), pl.col("pr").alias("program")
    )


def unconfirmed_intents(
    journal_path: Path,
    confirmed: pl.DataFrame | None = None,
    *,
    block_bytes: int = INTENT_CHUNK_BYTES,
) -> set[tuple[str, str]]:
    """Pairs that were about to be sent and have no confirmed answer: a resume marks them as
    maybe processed.

    The intents are read a block at a time (INTENT_CHUNK_BYTES of text) and each block keeps
    only its pairs without a confirmed answer (usually those of the requests in flight at the
    kill), so memory does not grow with the intents file; only the survivors become Python.
    """
    confirmed = confirmed_pairs(journal_path) if confirmed is None else confirmed
    done = confirmed.select(pl.col("customer").alias("cu"), pl.col("program").alias("pr"))
    left: list[pl.DataFrame] = []
    for block in _intent_blocks(journal_path, block_bytes):
        unanswered = block.join(done, on=PAIR, how="anti")
        if unanswered.height:
            left.append(unanswered.unique())
    return _pairs_set(pl.concat(left)) if left else set()


def unconfirmed_sends(journal_path: Path) -> set[tuple[str, str]]:
    """Pairs of a finished run that may have been processed although no answer said so.

    Those given up as `retryable` after an attempt whose answer was lost, and those sent with
    no journal line at all (in flight when the run was stopped at once, or killed). A later run
    that hears "not linked" for one of them reports it `delinked_unconfirmed`.
    """
    journal = read_journal(journal_path)
    flagged = journal.filter((pl.col("s") == Status.RETRYABLE.value) & pl.col("ms").fill_null(True))
    unanswered = intent_pairs(journal_path).join(journal.select(PAIR), on=PAIR, how="anti")
    return _pairs_set(unanswered) | _pairs_set(flagged)


# --- folding ---------------------------------------------------------------------------------


def promote_folded(tmp: Path, journal_path: Path) -> None:
    """Make `tmp` (complete, fsynced) the folded journal, then drop the live logs.

    Crash-safe at every step: before the rename the live logs are whole; after it the folded
    file holds all they say (the same last word per pair), so a folder holding both reads the
    same as either.
    """
    os.replace(tmp, folded_path(journal_path))
    _fsync_dir(journal_path.parent)
    for name in (JOURNAL_NAME, INTENTS_NAME):
        journal_path.with_name(name).unlink(missing_ok=True)
    _fsync_dir(journal_path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
