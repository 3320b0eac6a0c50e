"""The simulator's HTTP server: deLinkCustomer, OAuth tokens, and the inspection endpoint.

Endpoints:
- `POST /v2/partnerProgram/deLinkCustomer` and `POST /v3/oauth/token/generate`, as the
  contract describes (see responses.py for the bodies). Tokens are JWT-shaped (claims
  `org_id`, `client_id`, `default_till`, `exp`), and every answer to an authenticated delink
  carries `org_id` and `till` headers (the profile's `org_id`; `org_headers = false` drops them).
- `GET /__simulator/state` (read-only): the snapshot below. `?pairs=0` leaves out the per-pair
  list; `?linked=1` lists only the touched pairs still linked.
- `POST /__simulator/still-linked` (read-only, a query with a body):
  `{"identifier": "mobile", "pairs": [["919800000001", "partner-01"], ...]}` ->
  `{"checked": n, "still_linked": [[value, program], ...]}`: how a test checks that every linked
  pair of a 200,000-row input is unlinked on the server, whatever the client touched.

Snapshot JSON (also `Simulator.snapshot()`):
```
{"counters": {"requests": n,              # API requests (not /__simulator), all outcomes
              "by_status": {"200": n, "429": n, "closed": n, "hang": n, ...},
              "delink_requests": n, "customers": n, "items": n,
              "throttled": n,             # quota refusals and random 429s
              "auth_failures": n, "tokens_issued": n,
              "faults": {"server_error": n, "hang": n, "disconnect_before": n, ...}},
 "quota": {"rate": "3000/minute" | null, "window": "fixed", "slowed_down": false},
 "links_initial": n, "links_remaining": n,
 "pairs": [{"customer": "10000042",          # customer id, or "<identifier>:<value>" if unknown
            "id": 10000042, "mobile": "...", "email": "...", "externalId": "...",  # when known
            "program": "partner-01",
            "attempts": n,                 # times the server processed a delink of this pair
            "delinked": n,                 # times it answered success (0 or 1)
            "linked_now": false}, ...]}
```
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from email.utils import formatdate
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from batcher.send.contract import DELINK_PATH, TOKEN_PATH, basic_header, md5_hex
from batcher.simulator import responses as r
from batcher.simulator.delink import BadRequest, Delinker
from batcher.simulator.faults import RequestFault, Trouble
from batcher.simulator.profile import FaultSettings, LatencySettings, Profile
from batcher.simulator.quota import Quota
from batcher.simulator.state import IDENTIFIERS, Counters, State

STATE_PATH = "/__simulator/state"
ORG_KEY = web.RequestKey("till", str)  # set once a delink request is authenticated: as which till
STILL_LINKED_PATH = "/__simulator/still-linked"
T = TypeVar("T")
RequestLog = Callable[[dict[str, Any]], None]

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    429: "Too Many Requests",
}


class Simulator:
    """State, counters and the aiohttp app; `async with Simulator(profile) as sim:` serves it."""

    def __init__(
        self,
        profile: Profile,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_request: RequestLog | None = None,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.state = State(profile)
        self.counters = Counters()
        self.quota = Quota(profile.quota.rate, profile.quota.window, clock)
        self.trouble = Trouble(profile.seed, profile.faults, profile.latency)
        self._log_request = log_request
        self.delinker = Delinker(profile, self.state, self.trouble, self.counters)
        creds = profile.credentials
        self._basic = basic_header(creds.basic_username, md5_hex(creds.basic_password))
        self._tokens: dict[str, float] = {}  # token -> expiry on `clock`
        self._request_seq = 0
        self._first_request_at: float | None = None
        self._slowed = False
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle ----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(DELINK_PATH, self._delink)
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get(STATE_PATH, self._state)
        app.router.add_post(STILL_LINKED_PATH, self._still_linked)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        # asyncio's Server, or uvloop's when the run uses uvloop: both list their sockets.
        sockets = getattr(site._server, "sockets", None)
        assert sockets, "the site is listening"
        bound = sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.base_url = f"http://{shown}:{bound[1]}"

    async def stop(self) -> None:
        self._stopping.set()  # wakes hanging requests so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def set_faults(
        self, faults: FaultSettings | None = None, latency: LatencySettings | None = None
    ) -> None:
        """Change the trouble mid-life (None: none at all), e.g. before a retry run."""
        self.trouble.set(faults or FaultSettings(), latency or LatencySettings())

    # --- inspection ---------------------------------------------------------------------

    def snapshot(self, *, pairs: bool = True, linked_only: bool = False) -> dict[str, Any]:
        state = self.state
        out: dict[str, Any] = {
            "counters": self.counters.as_json(),
            "quota": {
                "rate": None if self.quota.rate is None else str(self.quota.rate),
                "window": self.profile.quota.window,
                "slowed_down": self._slowed,
            },
            "links_initial": state.initial_links,
            "links_remaining": state.links_remaining,
        }
        if pairs:
            listed = []
            for (key, program), counter in state.pairs.items():
                if isinstance(key, int):
                    linked = state.is_linked(key, program)
                    if linked_only and not linked:
                        continue
                    customer = state.customer(key)
                    entry = {"customer": str(customer.id), **customer.as_json()}
                else:
                    if linked_only:
                        continue
                    identifier, _, value = key.partition(":")
                    linked = False
                    entry = {"customer": key, identifier: value}
                entry.update(
                    program=program,
                    attempts=counter.attempts,
                    delinked=counter.delinked,
                    linked_now=linked,
                )
                listed.append(entry)
            out["pairs"] = listed
        return out

    def still_linked(
        self, identifier: str, pairs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Of these (identifier value, program) pairs, those the server still links."""
        return self.state.still_linked(identifier, pairs)

    async def _state(self, request: web.Request) -> web.Response:
        q = request.query
        snap = self.snapshot(pairs=q.get("pairs", "1") != "0", linked_only=q.get("linked") == "1")
        return web.json_response(snap)

    async def _still_linked(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            identifier = body["identifier"]
            pairs = [(str(v), str(p)) for v, p in body["pairs"]]
            if identifier not in IDENTIFIERS:
                raise ValueError(identifier)
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"error": 'expected {"identifier": "mobile", "pairs": [[value, program], ...]}'},
                status=400,
            )
        still = self.still_linked(identifier, pairs)
        return web.json_response({"checked": len(pairs), "still_linked": still})

    # --- answering ----------------------------------------------------------------------

    def _answer(
        self,
        request: web.Request,
        status: int,
        body: bytes,
        *,
        content_type: str = r.JSON,
        headers: dict[str, str] | None = None,
        note: str = "",
    ) -> web.Response:
        self._request_seq += 1
        request_id = f"sim-{self.profile.seed & 0xFFFF:04x}-{self._request_seq:08d}"
        all_headers = {"X-CAP-REQUEST-ID": request_id, "Content-Type": content_type}
        all_headers.update(self._org_headers(request))
        if headers:
            all_headers.update(headers)
        self._count(request, str(status), request_id, note)
        return web.Response(status=status, body=body, headers=all_headers)

    def _org_headers(self, request: web.Request) -> dict[str, str]:
        """`org_id` and `till` on every v2 answer to an authenticated call (as the real API)."""
        if not self.profile.org_headers or ORG_KEY not in request:
            return {}
        return {"org_id": str(self.profile.org_id), "till": request[ORG_KEY]}

    def _count(self, request: web.Request, status: str, request_id: str, note: str) -> None:
        self.counters.requests += 1
        self.counters.by_status[status] += 1
        if self._log_request is not None:
            self._log_request(
                {
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "request_id": request_id,
                    "note": note,
                }
            )

    def _error(
        self, request: web.Request, status: int, code: int, message: str, note: str = ""
    ) -> web.Response:
        return self._answer(request, status, r.envelope(code, message), note=note)

    def _throttled(self, request: web.Request, wait_s: float, note: str) -> web.Response:
        self.counters.throttled += 1
        q = self.profile.quota
        headers = {}
        if q.retry_after == "seconds":
            headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        elif q.retry_after == "http-date":
            headers["Retry-After"] = formatdate(time.time() + wait_s, usegmt=True)
        reason = _REASONS.get(q.status, "Too Many Requests")
        if q.body == "json":
            body, kind = r.envelope(q.status, f"Rate limit exceeded: {reason}"), r.JSON
        elif q.body == "html":
            body, kind = r.html_page(q.status, reason), r.HTML
        else:
            body, kind = b"", "text/plain"
        return self._answer(request, q.status, body, content_type=kind, headers=headers, note=note)

    def _authenticate(self, request: web.Request) -> str | web.Response:
        """The credential's quota key, or the refusal."""
        creds = self.profile.credentials
        token = request.headers.get("X-CAP-API-OAUTH-TOKEN")
        if token is not None:
            expires_at = self._tokens.get(token)
            if expires_at is None:
                self.counters.auth_failures += 1
                return self._error(request, 401, 401, "Invalid OAuth token", "auth")
            now = self.clock()
            if now >= expires_at:
                self.counters.auth_failures += 1
                when = formatdate(time.time() - (now - expires_at), usegmt=True)
                return self._error(
                    request,
                    creds.expired_token_status,
                    498,
                    f"Token expired at {when}",
                    "auth.expired",
                )
            request[ORG_KEY] = creds.basic_username  # the token's default till
            return "oauth:" + creds.oauth_key
        header = request.headers.get("Authorization", "")
        if header == self._basic or (
            header[:6].lower() == "basic " and header[6:].strip() == self._basic[6:]
        ):
            request[ORG_KEY] = creds.basic_username
            return "basic:" + creds.basic_username
        self.counters.auth_failures += 1
        return self._error(
            request,
            401,
            401,
            "Invalid username or password" if header else "Authentication required",
            "auth",
        )

    async def _token(self, request: web.Request) -> web.StreamResponse:
        creds = self.profile.credentials
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or body.get("key") != creds.oauth_key
            or body.get("secret") != creds.oauth_secret
        ):
            self.counters.auth_failures += 1
            return self._answer(request, 401, r.token_refused(), note="auth")
        self.counters.tokens_issued += 1
        token = self._jwt(self.counters.tokens_issued)
        self._tokens[token] = self.clock() + creds.token_ttl_s
        return self._answer(request, 200, r.token_body(token, creds.token_ttl_s))

    def _jwt(self, n: int) -> str:
        """A token shaped like Capillary's: a JWT whose claims name the org, client and till."""
        creds = self.profile.credentials

        def part(value: dict[str, Any]) -> str:
            raw = json.dumps(value, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        claims = {
            "org_id": self.profile.org_id,
            "client_id": creds.oauth_key,
            "default_till": creds.basic_username,
            "exp": round(time.time() + creds.token_ttl_s, 3),
            "n": n,
        }
        signed = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
        key = f"simulator-{self.profile.seed}".encode()
        signature = hmac.new(key, signed.encode(), hashlib.sha256).digest()
        return signed + "." + base64.urlsafe_b64encode(signature).decode().rstrip("=")

    def _maybe_slow_down(self) -> None:
        slow = self.profile.slowdown
        if self._slowed or slow.rate is None:
            return
        now = self.clock()
        if self._first_request_at is None:
            self._first_request_at = now
        by_count = slow.after_requests is not None and (
            self.counters.delink_requests > slow.after_requests
        )
        by_time = slow.after_s is not None and now - self._first_request_at >= slow.after_s
        if by_count or by_time:
            self._slowed = True
            self.quota.set_rate(slow.rate)

    async def _delink(self, request: web.Request) -> web.StreamResponse:
        self.counters.delink_requests += 1
        trouble = self.trouble
        fault = trouble.request_fault()
        latency_s = trouble.latency_s()
        if latency_s:
            await asyncio.sleep(latency_s)
        credential = self._authenticate(request)
        if not isinstance(credential, str):
            return credential
        if self.profile.slowdown.rate is not None:
            self._maybe_slow_down()
        wait_s = self.quota.acquire(credential)
        if wait_s is not None:
            return self._throttled(request, wait_s, "quota")
        if fault is not None:
            self.counters.faults[fault.value] += 1
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
        if request.content_type != r.JSON:
            return self._error(request, 415, 415, "Unsupported Media Type: send application/json")
        try:
            customers = self.delinker.process(await request.read())
        except BadRequest as e:
            return self._error(request, e.status, e.code, e.message)
        body = r.delink_body(self.profile.response_shape, customers)
        if fault is RequestFault.DISCONNECT_AFTER:
            return await self._close_mid_response(request, body)
        if fault is RequestFault.MALFORMED_JSON:
            return self._answer(
                request, 200, body[: max(1, len(body) // 2)] + b"<!--", note=fault.value
            )
        return self._answer(request, 200, body)

    async def _early_fault(
        self, request: web.Request, fault: RequestFault
    ) -> web.StreamResponse | None:
        """Trouble that strikes before the delink is processed; None for the later kinds."""
        if fault is RequestFault.THROTTLE:
            return self._throttled(request, 1.0, fault.value)
        if fault is RequestFault.SERVER_ERROR:
            status, html = self.trouble.server_error()
            reason = _REASONS.get(status, "Server Error")
            if html:
                return self._answer(
                    request,
                    status,
                    r.html_page(status, reason),
                    content_type=r.HTML,
                    note=fault.value,
                )
            return self._error(request, status, status, reason, fault.value)
        if fault is RequestFault.HANG:
            self._count(request, "hang", "", fault.value)  # counted now: it may never end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.trouble.faults.hang_s)
            return self._drop(request, None)
        if fault is RequestFault.DISCONNECT_BEFORE:
            return self._drop(request, "closed")
        return None

    def _drop(self, request: web.Request, status: str | None) -> web.StreamResponse:
        """Close the connection without an answer."""
        if status is not None:
            self._count(request, status, "", status)
        if request.transport is not None:
            request.transport.close()
        # aiohttp cannot send this on a closed transport and drops it quietly: what we want.
        return web.Response(status=204)

    async def _close_mid_response(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Send the headers and half the body, then hang up: the delink is done, the answer lost."""
        self._count(request, "closed", "", "disconnect_after")
        self._request_seq += 1
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": r.JSON,
                "X-CAP-REQUEST-ID": f"sim-lost-{self._request_seq:08d}",
                **self._org_headers(request),
            },
        )
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()  # flushes the half body, then hangs up
        return response


class SimulatorThread:
    """A Simulator on its own event loop in a background thread (for CLI subprocess tests)."""

    def __init__(self, profile: Profile, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.profile = profile
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="simulator", daemon=True
        )
        self.simulator: Simulator | None = None

    def start(self) -> None:
        self._thread.start()
        self.simulator = self._call(self._start())

    async def _start(self) -> Simulator:
        sim = Simulator(self.profile)
        await sim.start(self._host, self._port)
        return sim

    def stop(self) -> None:
        if self.simulator is not None:
            self._call(self.simulator.stop())
            self.simulator = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def _sim(self) -> Simulator:
        if self.simulator is None:
            raise RuntimeError("SimulatorThread is not running")
        return self.simulator

    @property
    def base_url(self) -> str:
        return self._sim().base_url

    def snapshot(self, *, pairs: bool = True, linked_only: bool = False) -> dict[str, Any]:
        """The same JSON as GET /__simulator/state, taken on the server's loop."""
        sim = self._sim()

        async def take() -> dict[str, Any]:
            return sim.snapshot(pairs=pairs, linked_only=linked_only)

        return self._call(take())

    def still_linked(
        self, identifier: str, pairs: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        sim, listed = self._sim(), list(pairs)

        async def check() -> list[tuple[str, str]]:
            return sim.still_linked(identifier, listed)

        return self._call(check())

    def set_faults(
        self, faults: FaultSettings | None = None, latency: LatencySettings | None = None
    ) -> None:
        sim = self._sim()

        async def change() -> None:
            sim.set_faults(faults, latency)

        self._call(change())
