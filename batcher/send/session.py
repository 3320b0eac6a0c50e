"""The HTTP side of a run: one tuned session, and reading Retry-After."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from batcher.job import Job


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def make_session(job: Job) -> aiohttp.ClientSession:
    """One session per run: a connection per in-flight request, kept alive, TLS always verified."""
    ssl_context = ssl.create_default_context()  # verification on; built once, shared
    connector = aiohttp.TCPConnector(
        limit=job.api.max_in_flight,
        limit_per_host=job.api.max_in_flight,
        keepalive_timeout=30,
        ttl_dns_cache=300,
        ssl=ssl_context,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=job.api.connect_timeout_s,
        sock_connect=job.api.connect_timeout_s,
        sock_read=job.api.timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"Accept": "application/json"},
        raise_for_status=False,
        json_serialize=json.dumps,
        # The API is stateless: no cookie is ever needed, so none is parsed or sent.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
