"""Tell people how a run ended: one message per run to every `[notify] urls` target, via Apprise.

Apprise turns a URL into a service (slack://, msteams://, mailto://, json://, ...), so there is
no code of ours per service. Secrets in a URL are written `${VAR}` in the job and read from the
environment only here, when the message is sent: the job copy in the run folder, the summary
and the logs keep the `${VAR}` form, and the values are added to the log's blanked secrets.
A message that cannot be delivered is logged and retried a few times; it never changes a run's
exit code or touches its files.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass

import structlog

from batcher.job import NotifyEvent, NotifySettings
from batcher.present import logs

log = structlog.get_logger("batcher.present.notify")

ATTEMPTS = 3
BACKOFF_S = 1.0
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Apprise logs through the standard library; without a handler of the host's, Python's
# last-resort handler would print its warnings on stderr. A NullHandler keeps the library quiet
# unless the host configures logging itself (it does not change anyone's configuration).
logging.getLogger("apprise").addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Message:
    event: NotifyEvent
    title: str
    body: str
    failed: bool  # the run needs a person: shown as a failure/warning where the service can


class MissingVariable(Exception):
    """A `${VAR}` in a notify URL names no environment variable."""


def expand(url: str, env: dict[str, str] | None = None) -> str:
    """`${VAR}` replaced by the environment's value (MissingVariable when it is not set)."""
    env = dict(os.environ) if env is None else env

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise MissingVariable(name)
        return env[name]

    return _VAR_RE.sub(value, url)


def service_of(url: str) -> str:
    """What a log line may say about a URL: its scheme only."""
    return url.partition("://")[0] or "?"


def send(settings: NotifySettings, message: Message) -> int:
    """Deliver `message` to every URL (if its event is wanted); returns how many took it."""
    if message.event not in settings.on or not settings.urls:
        return 0
    import apprise

    delivered = 0
    for template in settings.urls:
        service = service_of(template)
        try:
            url = expand(template)
        except MissingVariable as e:
            log.warning("notify.skipped", service=service, missing_variable=str(e))
            continue
        logs.add_secrets(*(os.environ[v] for v in _VAR_RE.findall(template)))
        target = apprise.Apprise()
        if not target.add(url):
            log.warning("notify.bad_url", service=service)
            continue
        kind = apprise.NotifyType.FAILURE if message.failed else apprise.NotifyType.SUCCESS
        for attempt in range(1, ATTEMPTS + 1):
            if target.notify(title=message.title, body=message.body, notify_type=kind):
                log.info("notify.sent", service=service, notify_event=message.event)
                delivered += 1
                break
            log.warning("notify.failed", service=service, attempt=attempt, attempts=ATTEMPTS)
            if attempt < ATTEMPTS:
                time.sleep(BACKOFF_S * attempt)
    return delivered


def event_for_exit(exit_code: int) -> NotifyEvent:
    """0 or 1: finished; 3: stopped early; anything else: failed (nothing or little was done)."""
    return "finished" if exit_code in (0, 1) else "stopped" if exit_code == 3 else "failed"


def run_message(
    *,
    job: str,
    run_id: str | None,
    exit_code: int,
    counts: dict[str, int],
    org: str | None,
    elapsed_s: float | None,
    stop_reason: str | None,
    run_dir: str | None,
    error: str | None = None,
) -> Message:
    """The one message of a run: job, run id, org, counts per status, exit code, elapsed time,
    stop reason, run folder; one `key: value` per line so a webhook can read it back."""
    event = event_for_exit(exit_code)
    lines = [f"job: {job}", f"run: {run_id or '-'}", f"event: {event}", f"exit code: {exit_code}"]
    lines.append(f"org: {org or 'unknown'}")
    lines += [f"{status}: {n}" for status, n in counts.items()]
    if elapsed_s is not None:
        lines.append(f"elapsed seconds: {elapsed_s:.1f}")
    if stop_reason:
        lines.append(f"stopped: {stop_reason}")
    if error:
        lines.append(f"error: {error}")
    if run_dir:
        lines.append(f"folder: {run_dir}")
    title = f"batcher {job}: run {event} (exit {exit_code})"
    return Message(event, title, "\n".join(lines), failed=exit_code != 0)
