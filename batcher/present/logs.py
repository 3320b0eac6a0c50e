"""structlog, configured once: JSON lines to the run log, human or JSON lines on stderr.

Every event passes the privacy filter first: keys that could hold a secret are dropped, known
secret values are blanked wherever they appear, mobiles become `91******0000` and emails
`j***@example.com`. So nothing a log aggregator receives identifies a customer or opens an account.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["auto", "console", "json"]

_SECRET_KEY_RE = re.compile(
    r"authorization|password|passwd|secret|token|api[-_]?key|client[-_]?key|private[-_]?key"
    r"|cookie|md5|credential|signature|session[-_]?id",
    re.I,
)
_MOBILE_RE = re.compile(r"(?<![0-9A-Za-z])\+?([0-9]{2})[0-9]{2,9}([0-9]{4})(?![0-9A-Za-z])")
_EMAIL_RE = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
# Values of these keys are ours, not customers': leave their digits alone.
_UNMASKED_KEYS = frozenset({"timestamp", "run_id", "request_id", "job", "event", "level", "logger"})
# "silent": nothing on stderr, every event still in the run log (the Python API's default).
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50, "silent": 100}


def mask_text(text: str) -> str:
    """Mask every mobile-looking digit run and every email address in `text`."""
    text = _EMAIL_RE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _MOBILE_RE.sub(
        lambda m: m.group(1) + "*" * (len(m.group(0).lstrip("+")) - 6) + m.group(2), text
    )


class PrivacyFilter:
    """Drop secret-bearing keys, blank known secrets, mask mobiles and emails."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: set[str] = {s for s in secrets if s}

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for s in self.secrets:
                if s in value:
                    value = value.replace(s, "<redacted>")
            return mask_text(value)
        if isinstance(value, dict):
            return {
                k: self._clean(v) for k, v in value.items() if not _SECRET_KEY_RE.search(str(k))
            }
        if isinstance(value, list | tuple | set):
            return [self._clean(v) for v in value]
        return value

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        for key in list(event):
            if _SECRET_KEY_RE.search(key):
                del event[key]
            elif key not in _UNMASKED_KEYS:
                event[key] = self._clean(event[key])
        return event


PRIVACY = PrivacyFilter()


class _Sinks:
    """The last processor: JSON to the run log (always), then stderr as configured."""

    def __init__(self) -> None:
        self.run_log: IO[str] | None = None
        self.stderr_json = False
        self.stderr_level = _LEVELS["info"]
        self.console = structlog.dev.ConsoleRenderer(colors=False)
        # While a live progress display owns the terminal, console lines go through it instead
        # of straight to stderr, so they scroll above the display rather than through it.
        self.echo: Callable[[str], None] | None = None

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        if self.run_log is not None:
            self.run_log.write(json.dumps(event, default=str, ensure_ascii=False) + "\n")
            self.run_log.flush()
        if _LEVELS.get(str(event.get("level", "info")), 20) < self.stderr_level:
            raise structlog.DropEvent
        if self.stderr_json:
            line = json.dumps(event, default=str, ensure_ascii=False)
        else:
            line = str(self.console(logger, name, dict(event)))
        if self.echo is not None:
            self.echo(line)
            raise structlog.DropEvent
        return line


SINKS = _Sinks()


def configure(
    *,
    log_format: LogFormat = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once per process; call again only to change where lines go."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    SINKS.stderr_json = log_format == "json" or (log_format == "auto" and not tty)
    SINKS.stderr_level = _LEVELS.get(level, 20)
    SINKS.console = structlog.dev.ConsoleRenderer(colors=tty)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            PRIVACY,
            SINKS,
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def ensure_configured() -> None:
    """For library use: when nobody configured structlog, route batcher's events to the run log
    only (structlog's default would print them on stdout). A configuration of the host's or the
    CLI's is left as it is."""
    if not structlog.is_configured():
        configure(level="silent")


def open_run_log(path: Path, secrets: Iterable[str]) -> None:
    """Start copying every event, as JSON, to the run's log file; `secrets` are blanked."""
    close_run_log()
    PRIVACY.secrets.update(s for s in secrets if s)
    SINKS.run_log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close_run_log


def add_secrets(*values: str) -> None:
    """Blank these values wherever they appear in later events (e.g. a freshly issued token)."""
    PRIVACY.secrets.update(v for v in values if v)


@contextmanager
def echo_through(echo: Callable[[str], None]) -> Iterator[None]:
    """Send stderr log lines to `echo` (a live display's console) for the duration."""
    previous, SINKS.echo = SINKS.echo, echo
    try:
        yield
    finally:
        SINKS.echo = previous


def close_run_log() -> None:
    if SINKS.run_log is not None:
        SINKS.run_log.close()
        SINKS.run_log = None


def bind(**values: Any) -> None:
    """Fields every later event carries (job, run id)."""
    structlog.contextvars.bind_contextvars(**values)


def scrub_secrets(mapping: MutableMapping[str, Any]) -> None:
    """Remove secret-looking keys from a mapping in place (for settings written to files)."""
    for key in list(mapping):
        if _SECRET_KEY_RE.search(key):
            del mapping[key]
        elif isinstance(mapping[key], dict):
            scrub_secrets(mapping[key])


# How many library calls (commands) are inside `for_call` right now, and what to restore when
# the last of them ends. A lock because run_job_async runs calls in worker threads.
_CALLS_LOCK = threading.Lock()
_calls = 0
_before: tuple[bool, dict[str, Any], tuple[bool, int, Any]] | None = None


@contextmanager
def for_call(log_format: LogFormat | None, level: str) -> Iterator[None]:
    """Logging for one library call (a command run in-process): configured as asked (or, when
    nobody configured structlog, to the run log only), and put back as it was when the call
    ends, so a second call in the same process, or the host's own logging, inherits neither this
    call's stream, level and format nor its bound fields (job, run_id).

    Known secrets are kept blanked for the rest of the process: blanking too much is safe, and a
    concurrent call's secrets must never be forgotten while it still logs. With concurrent calls
    (worker threads) the configuration is restored when the last one ends."""
    global _calls, _before
    with _CALLS_LOCK:
        if _calls == 0:
            _before = (
                structlog.is_configured(),
                structlog.get_config(),
                (SINKS.stderr_json, SINKS.stderr_level, SINKS.console),
            )
        _calls += 1
        if log_format is not None:
            configure(log_format=log_format, level=level)
        else:
            ensure_configured()
    bound = structlog.contextvars.get_contextvars()
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**bound)
        with _CALLS_LOCK:
            _calls -= 1
            if _calls == 0 and _before is not None:
                was_configured, config, sinks = _before
                SINKS.stderr_json, SINKS.stderr_level, SINKS.console = sinks
                if was_configured:
                    structlog.configure(**config)
                else:
                    structlog.reset_defaults()
                _before = None
