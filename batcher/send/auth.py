"""Credentials from the environment, and the headers that carry them.

Secrets live only in these objects: their reprs are redacted, and nothing here logs them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from batcher.errors import CredentialsError, RunStopped
from batcher.job import AuthKind
from batcher.present import logs
from batcher.send.contract import TOKEN_PATH, basic_header, md5_hex

log = structlog.get_logger("batcher.send.auth")

ENV_USERNAME = "CAPILLARY_USERNAME"
ENV_PASSWORD = "CAPILLARY_PASSWORD"
ENV_PASSWORD_MD5 = "CAPILLARY_PASSWORD_MD5"
ENV_CLIENT_KEY = "CAPILLARY_CLIENT_KEY"
ENV_CLIENT_SECRET = "CAPILLARY_CLIENT_SECRET"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Either Basic (username + md5 of the password) or OAuth (client key + secret)."""

    kind: AuthKind
    username: str = ""
    password_md5: str = field(default="", repr=False)
    client_key: str = ""
    client_secret: str = field(default="", repr=False)

    def __repr__(self) -> str:
        who = self.username if self.kind == "basic" else self.client_key
        return f"Credentials(kind={self.kind!r}, principal={who!r}, secret=<redacted>)"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, so output scans and log filters can look for them."""
        return tuple(s for s in (self.password_md5, self.client_secret) if s)


def credentials_from_env(auth: AuthKind, env: Mapping[str, str] | None = None) -> Credentials:
    """Read credentials for `auth` from the environment; missing ones are an error (exit 2)."""
    env = os.environ if env is None else env
    if auth == "basic":
        username = env.get(ENV_USERNAME, "")
        md5 = env.get(ENV_PASSWORD_MD5, "").strip().lower()
        password = env.get(ENV_PASSWORD, "")
        missing = [ENV_USERNAME] if not username else []
        if not md5 and not password:
            missing.append(f"{ENV_PASSWORD} (or {ENV_PASSWORD_MD5})")
        if missing:
            raise CredentialsError(
                f'auth = "basic" needs {" and ".join(missing)} in the environment; '
                "nothing was sent.",
                hint=f"Export {ENV_USERNAME} and {ENV_PASSWORD} (the tool hashes it) or "
                f"{ENV_PASSWORD_MD5} (already hashed), then run again.",
            )
        return Credentials("basic", username=username, password_md5=md5 or md5_hex(password))
    key = env.get(ENV_CLIENT_KEY, "")
    secret = env.get(ENV_CLIENT_SECRET, "")
    missing = [n for n, v in ((ENV_CLIENT_KEY, key), (ENV_CLIENT_SECRET, secret)) if not v]
    if missing:
        raise CredentialsError(
            f'auth = "oauth" needs {" and ".join(missing)} in the environment; nothing was sent.',
            hint=f"Export {ENV_CLIENT_KEY} and {ENV_CLIENT_SECRET}, then run again.",
        )
    return Credentials("oauth", client_key=key, client_secret=secret)


class AuthRefused(RunStopped):
    """The API refused our credentials and a token refresh did not cure it."""


# --- which org the credentials act on --------------------------------------------------------

ORG_HEADER = "org_id"
TILL_HEADER = "till"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What an OAuth token says about itself (decoded, not verified: the API verifies it)."""

    org_id: int | None = None
    client_id: str | None = None
    till: str | None = None
    exp: float | None = None  # Unix seconds


def _org_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def decode_claims(token: str) -> TokenClaims | None:
    """The claims of a JWT (base64url JSON between the first two dots); None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeEncodeError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    client_id, till = claims.get("client_id"), claims.get("default_till")
    return TokenClaims(
        org_id=_org_number(claims.get("org_id")),
        client_id=client_id if isinstance(client_id, str) else None,
        till=till if isinstance(till, str) else None,
        exp=float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
    )


class WrongOrg(RunStopped):
    """The credentials act on another org than the job expects."""


def wrong_org(expected: int, actual: int | str, seen_in: str, *, sent: bool) -> WrongOrg:
    """The refusal: both org ids, where the other one was seen, and what to fix."""
    error = WrongOrg(
        f"These credentials act on org {actual} ({seen_in}), but the job expects org "
        f"{expected} (api.expect_org_id); "
        + (
            "the run stopped after its first request and nothing more was sent."
            if sent
            else "nothing was sent."
        ),
        hint="Use the credentials of org "
        f"{expected}, or correct api.expect_org_id if {actual} is the org you mean"
        + (", then resume the run." if sent else "."),
    )
    # Refused before anything was sent: like missing credentials, an unusable job (exit 2).
    error.exit_code = 3 if sent else 2
    return error


class OrgGuard:
    """Learns which org (and till) the run acts on, from the token or the answers, and checks it.

    `expected` is `api.expect_org_id`. The first org seen is the run's; any answer naming
    another org than the expected one stops the run.
    """

    def __init__(
        self, expected: int | None, *, on_settled: Callable[[OrgGuard], None] | None = None
    ) -> None:
        self.expected = expected
        self.org_id: int | str | None = None
        self.till: str | None = None
        self.seen_in: str | None = None  # "token" | "response headers"
        self._warned = False
        # Called once, when the org is as known as it will get before the bulk of the sending:
        # from the token, or from the first answer (so `run.started` can name it).
        self._on_settled = on_settled
        self.settled = False

    def settle(self) -> None:
        """The org is as known as it gets (idempotent): tell whoever waits for it."""
        if not self.settled:
            self.settled = True
            if self._on_settled is not None:
                self._on_settled(self)

    @property
    def known(self) -> bool:
        return self.org_id is not None

    def from_token(self, claims: TokenClaims | None) -> None:
        """Before anything is sent: the token's org. Raises WrongOrg (exit 2) on a mismatch."""
        if claims is None or claims.org_id is None:
            return
        self.org_id, self.till, self.seen_in = claims.org_id, claims.till, "token"
        if self.expected is not None and claims.org_id != self.expected:
            log.error("run.wrong_org", expected_org_id=self.expected, org_id=claims.org_id)
            raise wrong_org(self.expected, claims.org_id, "from the OAuth token", sent=False)
        self.settle()

    def from_answer(self, headers: Mapping[str, str], *, answered: bool) -> WrongOrg | None:
        """An answer's org_id/till headers; the refusal if it names another org than expected.

        `answered`: the API processed the request (2xx), so a missing org_id means the API
        does not send one, worth a warning (once) when an org is expected.
        """
        raw = headers.get(ORG_HEADER)
        if raw is None:
            if answered and self.expected is not None and not self._warned and not self.known:
                self._warned = True
                log.warning(
                    "org.not_reported",
                    expected_org_id=self.expected,
                    note="the API sent no org_id header: the org cannot be checked; carrying on",
                )
            if answered:
                self.settle()
            return None
        number = _org_number(raw)
        org: int | str = number if number is not None else raw.strip()
        if self.org_id is None:
            self.org_id, self.seen_in = org, "response headers"
        if self.till is None:
            self.till = headers.get(TILL_HEADER)
        self.settle()
        if self.expected is not None and org != self.expected:
            log.error("run.wrong_org", expected_org_id=self.expected, org_id=org)
            return wrong_org(self.expected, org, "from the API's org_id header", sent=True)
        return None

    def as_json(self) -> dict[str, object]:
        return {
            "org_id": self.org_id,
            "till": self.till,
            "expected_org_id": self.expected,
            "seen_in": self.seen_in,
        }


class Authenticator:
    """Produces auth headers; for OAuth, fetches and refreshes one token shared by all requests."""

    def __init__(
        self,
        credentials: Credentials,
        base_url: str,
        *,
        refresh_margin_s: float,
        clock: Any = time.monotonic,
        wall_clock: Any = time.time,
    ) -> None:
        self._credentials = credentials
        self._token_url = base_url + TOKEN_PATH
        self._margin_s = refresh_margin_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._token: str | None = None
        self.claims: TokenClaims | None = None
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None
        if credentials.kind == "basic":
            self._static = {
                "Authorization": basic_header(credentials.username, credentials.password_md5)
            }
        else:
            self._static = {}

    def __repr__(self) -> str:
        return f"Authenticator({self._credentials!r})"

    @property
    def static_headers(self) -> dict[str, str]:
        """The headers of Basic auth (empty for OAuth, whose token changes)."""
        return self._static

    @property
    def uses_tokens(self) -> bool:
        return self._credentials.kind == "oauth"

    async def prepare(self, session: aiohttp.ClientSession) -> TokenClaims | None:
        """Before anything is sent: fetch the OAuth token (so its claims name the org)."""
        if self.uses_tokens and self._token is None:
            await self._refresh(session, stale=None)
        return self.claims

    async def headers(self, session: aiohttp.ClientSession) -> tuple[dict[str, str], str | None]:
        """Headers for the next request, and the token they carry (to report it if refused)."""
        if not self.uses_tokens:
            return self._static, None
        if self._token is None or self._clock() >= self._expires_at - self._margin_s:
            await self._refresh(session, stale=self._token)
        assert self._token is not None
        return {"X-CAP-API-OAUTH-TOKEN": self._token}, self._token

    async def refused(self, session: aiohttp.ClientSession, token: str | None) -> bool:
        """A request was refused (401/498); True if a fresh token is worth one more try."""
        if not self.uses_tokens or token is None:
            return False
        await self._refresh(session, stale=token)
        return True

    async def _refresh(self, session: aiohttp.ClientSession, *, stale: str | None) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            # Someone else refreshed while we waited: a single refresh serves everyone.
            if (
                self._token is not None
                and self._token != stale
                and self._clock() < (self._expires_at - self._margin_s)
            ):
                return
            creds = self._credentials
            try:
                async with session.post(
                    self._token_url,
                    json={"key": creds.client_key, "secret": creds.client_secret},
                    headers={"Accept": "application/json"},
                ) as resp:
                    status = resp.status
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                raise AuthRefused(
                    f"Could not get an OAuth token from {self._token_url}: {type(e).__name__}.",
                    hint="Check api.base_url and the network; nothing more was sent.",
                ) from e
            data = body.get("data") if isinstance(body, dict) else None
            token = data.get("accessToken") if isinstance(data, dict) else None
            if status != 200 or not isinstance(token, str) or not token:
                code = None
                if (
                    isinstance(body, dict)
                    and isinstance(body.get("errors"), list)
                    and body["errors"]
                ):
                    first = body["errors"][0]
                    code = first.get("code") if isinstance(first, dict) else None
                raise AuthRefused(
                    "The API refused the OAuth client key and secret "
                    f"(HTTP {status}, code {code}).",
                    hint=f"Check {ENV_CLIENT_KEY} and {ENV_CLIENT_SECRET}.",
                )
            ttl_s = data.get("ttlSeconds") if isinstance(data, dict) else None
            ttl = float(ttl_s) if isinstance(ttl_s, int | float) and ttl_s > 0 else 300.0
            claims = decode_claims(token)
            if claims is not None and claims.exp is not None:
                # The token's own expiry beats the answer's ttlSeconds; one already past means
                # our clock and the server's disagree, and ttlSeconds is the safer guess.
                left_s = claims.exp - self._wall_clock()
                if left_s > 0:
                    ttl = left_s
                else:
                    log.warning("auth.token_exp_in_the_past", exp=claims.exp, ttl_s=ttl)
            self.claims = claims
            self._token = token
            logs.add_secrets(token)  # a token is a secret too: blank it in any later event
            # Refresh early by the margin, but never so early that a short-lived token is useless.
            self._margin_s = min(self._margin_s, ttl / 4)
            self._expires_at = self._clock() + ttl
