"""Send the plan: one HTTP session, paced by the quota, with retries, splitting and abort.

Work comes from three places, in this order: split halves (sent as they are), retried customers
whose backoff has passed (repacked into full requests), and the plan's next request. Every pair
that is answered is written to the journal; a pair that is never answered is absent from it and
the run calls it `retryable`, so no row is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from batcher.errors import RunStopped
from batcher.job import Job
from batcher.plan import PlannedRequest
from batcher.results.journal import Journal
from batcher.results.outcomes import Outcome, Status
from batcher.send import contract
from batcher.send.auth import Authenticator, AuthRefused, OrgGuard, WrongOrg
from batcher.send.contract import Entry, Verdict
from batcher.send.pace import Pacer, backoff_s
from batcher.send.session import retry_after_s
from batcher.send.stats import RunStats

log = structlog.get_logger("batcher.send.sender")

# Whole-request answers worth another try; everything 5xx is, too.
TRANSIENT_STATUSES = frozenset({408, 425, 500, 502, 503, 504, 521})
# Whole-request answers that mean one item spoiled the batch: split until it stands alone.
SPLIT_STATUSES = frozenset({400, 413})
AUTH_STATUSES = frozenset({401, contract.TOKEN_EXPIRED_CODE})
VERDICT_STATUS = {
    Verdict.DELINKED: Status.DELINKED,
    Verdict.NOT_LINKED: Status.NOT_LINKED,
    Verdict.FAILED: Status.FAILED,
}
# "Not linked" on a resend after an attempt whose answer was lost: that attempt did the delink.
LOST_ANSWER_NOTE = (
    "not linked on this attempt: an earlier attempt whose answer was lost most likely did "
    "the delink"
)
# Throttles do not use up a pair's attempts (nothing was processed), but they are bounded.
THROTTLES_PER_ATTEMPT = 3


@dataclass(slots=True)
class PendingPair:
    key: int
    customer: str
    program: str
    attempts: int = 0  # times sent
    tries: int = 0  # answered or failed sends that count against retry.max_attempts
    maybe_sent: bool = False  # an earlier attempt may have reached the server, answer lost
    throttles: int = 0
    last_code: int | None = None
    last_message: str | None = None


@dataclass(slots=True)
class PendingCustomer:
    customer: str
    pairs: list[PendingPair]


@dataclass(slots=True)
class Batch:
    customers: list[PendingCustomer]
    auth_retried: bool = False


class Sender:
    """Delinks every planned pair, recording each answered pair in the journal."""

    def __init__(
        self,
        job: Job,
        requests: Iterator[PlannedRequest],
        journal: Journal,
        *,
        stats: RunStats | None = None,
        maybe_sent: set[tuple[str, str]] | None = None,
        org: OrgGuard | None = None,
    ) -> None:
        self._job = job
        self._identifier = job.input.identifier
        self._plan = requests
        # Pairs an earlier, crashed session may have sent without recording the answer.
        self._maybe_sent = maybe_sent or set()
        self._journal = journal
        # Set by run(): where to send (known once an embedded simulator listens), and as whom.
        self._url: str
        self._auth: Authenticator
        self._basic_headers: dict[str, str]
        self.stats = stats or RunStats()
        self.pacer = Pacer(
            job.api.quota,
            backoff_base_s=job.retry.backoff_base_s,
            backoff_max_s=job.retry.backoff_max_s,
        )
        self._max_attempts = job.retry.max_attempts
        self._cpr = job.api.customers_per_request
        self._fixed: deque[Batch] = deque()
        self._pool: list[tuple[float, int, PendingCustomer]] = []
        self._seq = itertools.count()
        self._plan_done = False
        self._in_flight = 0
        self._changed: asyncio.Event | None = None
        self.stop_reason: str | None = None
        self.abort: RunStopped | None = None
        self.org = org or OrgGuard(job.api.expect_org_id)

    # --- work selection ----------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Take no new work; requests in flight finish. Unsent pairs stay out of the journal."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("run.stopping", reason=reason)
        self._wake()

    def refuse(self, error: RunStopped) -> None:
        """Stop before sending anything (the wrong org, credentials refused): every pair unsent."""
        if self.abort is None:
            self.abort = error
            log.error("run.aborted", reason=error.message)
        self.stop("the wrong org" if isinstance(error, WrongOrg) else "authentication refused")

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _from_plan(self) -> Batch | None:
        if self._plan_done:
            return None
        planned = next(self._plan, None)
        if planned is None:
            self._plan_done = True
            return None
        customers = []
        for entry, keys in zip(planned.entries, planned.keys, strict=True):
            pairs = [
                PendingPair(k, entry.customer, p) for k, p in zip(keys, entry.programs, strict=True)
            ]
            if self._maybe_sent:
                for pair in pairs:
                    pair.maybe_sent = (pair.customer, pair.program) in self._maybe_sent
            customers.append(PendingCustomer(entry.customer, pairs))
        return Batch(customers)

    def _from_pool(self, now: float) -> Batch | None:
        """Repack ready retries into one request: distinct customers, at most the request size."""
        if not self._pool or self._pool[0][0] > now:
            return None
        chosen: list[PendingCustomer] = []
        seen: set[str] = set()
        held: list[tuple[float, int, PendingCustomer]] = []
        while self._pool and self._pool[0][0] <= now and len(chosen) < self._cpr:
            item = heapq.heappop(self._pool)
            if item[2].customer in seen:
                held.append(item)  # same customer twice in one request: next time
                continue
            seen.add(item[2].customer)
            chosen.append(item[2])
        for item in held:
            heapq.heappush(self._pool, item)
        return Batch(chosen) if chosen else None

    async def _next_batch(self) -> Batch | None:
        assert self._changed is not None
        loop = asyncio.get_running_loop()
        while self.stop_reason is None:
            if self._fixed:
                return self._fixed.popleft()
            now = loop.time()
            batch = self._from_pool(now) or self._from_plan()
            if batch is not None:
                return batch
            if not self._pool and self._in_flight == 0:
                return None  # plan done, nothing waiting, nothing that could add work
            self._changed.clear()
            timeout = self._pool[0][0] - now if self._pool else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return None

    # --- the loop --------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession, base_url: str, auth: Authenticator) -> None:
        """Send to `base_url` until the plan and every retry are done, or the run is stopped."""
        self._url = base_url + contract.DELINK_PATH
        self._auth = auth
        # Basic auth: the same headers on every request, built once.
        self._basic_headers = {**auth.static_headers, "Content-Type": "application/json"}
        self._changed = asyncio.Event()
        self.stats.started_at = time.monotonic()
        workers = [
            asyncio.create_task(self._worker(session), name=f"sender-{i}")
            for i in range(self._job.api.max_in_flight)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.stats.finished_at = time.monotonic()
            self._journal.flush()

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while (batch := await self._next_batch()) is not None:
            self._in_flight += 1
            try:
                await self._send(session, batch)
            finally:
                self._journal.hand_over()  # this answer's outcomes survive a killed process
                self._in_flight -= 1
                self._wake()

    def pending_pairs(self) -> int:
        """Pairs waiting for a retry (for progress)."""
        return sum(len(c.pairs) for _, _, c in self._pool) + sum(
            len(c.pairs) for b in self._fixed for c in b.customers
        )

    # --- one request ---------------------------------------------------------------------------

    async def _send(self, session: aiohttp.ClientSession, batch: Batch) -> None:
        entries = [Entry(c.customer, tuple(p.program for p in c.pairs)) for c in batch.customers]
        body = orjson.dumps(contract.build_body(self._identifier, entries))
        # Write-ahead: after a crash, these pairs may have been processed.
        self._journal.intend([(c.customer, p.program) for c in batch.customers for p in c.pairs])
        sent_at = await self.pacer.slot()
        if self.stop_reason is not None:
            self._fixed.appendleft(batch)  # stopped while waiting: it was never sent
            return
        if self._auth.uses_tokens:
            auth_headers, token = await self._auth.headers(session)
            headers = {**auth_headers, "Content-Type": "application/json"}
        else:
            headers, token = self._basic_headers, None
        for c in batch.customers:
            for p in c.pairs:
                p.attempts += 1
        self.stats.requests += 1
        started = time.monotonic()
        request_id: str | None = None
        try:
            async with session.post(
                self._url,
                data=body,
                headers=headers,
            ) as resp:
                status = resp.status
                answer_headers = resp.headers
                request_id = answer_headers.get(contract.REQUEST_ID_HEADERS[0]) or next(
                    (v for h in contract.REQUEST_ID_HEADERS[1:] if (v := answer_headers.get(h))),
                    None,
                )
                retry_after = answer_headers.get("Retry-After")
                raw = await resp.read()
        except aiohttp.ClientConnectorError as e:
            self._transport_error(batch, f"cannot connect: {type(e).__name__}", maybe_sent=False)
            return
        except (aiohttp.ClientError, TimeoutError) as e:
            # The request may have been processed before the connection or the wait failed.
            what = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            self._transport_error(batch, f"no answer: {what}", maybe_sent=True)
            return
        latency_ms = (time.monotonic() - started) * 1000
        self.stats.responses[status] += 1
        if len(self.stats.latencies_ms) < 200_000:
            self.stats.latencies_ms.append(latency_ms)
        throttled = status in self._job.api.throttle_statuses
        self.stats.tick(throttled)
        if throttled:
            self._throttled(batch, sent_at, retry_after_s(retry_after), request_id)
            return
        self.pacer.answered()
        parsed: Any = None
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        env_code, env_message = contract.error_envelope(parsed)
        if status in AUTH_STATUSES or env_code == contract.TOKEN_EXPIRED_CODE or status == 403:
            await self._refused(session, batch, status, env_code, env_message, token, request_id)
            return
        if status in SPLIT_STATUSES or env_code == contract.BATCH_LIMIT_CODE:
            self._split(batch, status, env_code, env_message, request_id)
            return
        if status in TRANSIENT_STATUSES or status >= 500:
            self._retry_all(
                batch,
                env_code or status,
                env_message or f"HTTP {status}",
                request_id,
                maybe_sent=True,
            )
            return
        if not 200 <= status < 300:
            self.abort = RunStopped(
                f"The API answered HTTP {status} to {self._url}"
                + (f" (code {env_code}: {env_message})" if env_code else "")
                + "; that is not an answer a retry will change.",
                hint="Check api.base_url; nothing more was sent.",
            )
            log.error("run.aborted", status=status, code=env_code, request_id=request_id)
            self.stop(f"HTTP {status} from the API")
            self._fixed.appendleft(batch)
            return
        try:
            results, oddities = contract.parse_response(self._identifier, parsed)
        except contract.ShapeError as e:
            self._retry_all(batch, None, f"unreadable answer: {e}", request_id, maybe_sent=True)
            return
        if oddities:
            log.warning("response.odd_items", request_id=request_id, oddities=oddities[:5])
        self._match(batch, results, request_id)

    # --- answers -------------------------------------------------------------------------------

    def _record(
        self,
        pair: PendingPair,
        status: Status,
        code: int | None,
        message: str | None,
        *,
        customer_id: int | None = None,
        request_id: str | None = None,
        note: str | None = None,
        maybe_sent: bool = False,
        api_identifier: str | None = None,
    ) -> None:
        self._journal.record(
            Outcome(
                pair.key,
                pair.customer,
                pair.program,
                status,
                code,
                message,
                customer_id,
                request_id,
                pair.attempts,
                note,
                maybe_sent,
                api_identifier,
            )
        )

    def _match(
        self, batch: Batch, results: list[contract.CustomerResult], request_id: str | None
    ) -> None:
        by_key: dict[str, contract.CustomerResult] = {}
        for r in results:
            if r.key in by_key:  # the same customer twice: merge its programs
                prev = by_key[r.key]
                r = contract.CustomerResult(
                    r.key,
                    r.customer_id or prev.customer_id,
                    prev.status,
                    {**prev.programs, **r.programs},
                    prev.returned,
                )
            by_key[r.key] = r
        retry: list[PendingCustomer] = []
        found = 0
        for cust in batch.customers:
            res = by_key.get(contract.match_key(self._identifier, cust.customer) or "")
            found += res is not None
            if res is None:
                again = self._give_up_or_retry(
                    cust.pairs,
                    None,
                    "customer omitted from the answer",
                    request_id,
                    maybe_sent=True,
                )
                if again:
                    retry.append(PendingCustomer(cust.customer, again))
                continue
            if not res.status.status:
                verdict = res.status.verdict
                if verdict is Verdict.TRANSIENT:
                    again = self._give_up_or_retry(
                        cust.pairs,
                        res.status.code,
                        res.status.message,
                        request_id,
                        maybe_sent=False,
                    )
                    if again:
                        retry.append(PendingCustomer(cust.customer, again))
                    continue
                # A customer-level failure applies to every program asked for that customer.
                for p in cust.pairs:
                    p.tries += 1
                    self._record(
                        p,
                        Status.FAILED,
                        res.status.code,
                        res.status.message,
                        customer_id=res.customer_id,
                        request_id=request_id,
                        api_identifier=res.returned,
                    )
                continue
            again_pairs: list[PendingPair] = []
            for p in cust.pairs:
                st = res.programs.get(p.program)
                if st is None:
                    st = next(
                        (
                            s
                            for n, s in res.programs.items()
                            if n.casefold() == p.program.casefold()
                        ),
                        None,
                    )
                p.tries += 1
                if st is None:
                    again_pairs += self._give_up_or_retry(
                        [p],
                        None,
                        "program omitted from the answer",
                        request_id,
                        maybe_sent=True,
                        counted=True,
                    )
                    continue
                if st.verdict is Verdict.TRANSIENT:
                    again_pairs += self._give_up_or_retry(
                        [p], st.code, st.message, request_id, maybe_sent=False, counted=True
                    )
                    continue
                status, note = VERDICT_STATUS[st.verdict], None
                if status is Status.NOT_LINKED and p.maybe_sent:
                    status, note = Status.DELINKED, LOST_ANSWER_NOTE
                self._record(
                    p,
                    status,
                    st.code,
                    st.message,
                    customer_id=res.customer_id,
                    request_id=request_id,
                    note=note,
                    api_identifier=res.returned,
                )
            if again_pairs:
                retry.append(PendingCustomer(cust.customer, again_pairs))
        if len(by_key) > found:  # customers the request did not ask for: ignored
            log.warning(
                "response.unexpected_items", request_id=request_id, count=len(by_key) - found
            )
        self._schedule(retry)

    def _give_up_or_retry(
        self,
        pairs: list[PendingPair],
        code: int | None,
        message: str | None,
        request_id: str | None,
        *,
        maybe_sent: bool,
        counted: bool = False,
    ) -> list[PendingPair]:
        """Record pairs out of attempts as `retryable`; return the ones to try again."""
        again: list[PendingPair] = []
        for p in pairs:
            if not counted:
                p.tries += 1
            p.maybe_sent = p.maybe_sent or maybe_sent
            p.last_code, p.last_message = code, message
            if p.tries >= self._max_attempts:
                self._record(
                    p,
                    Status.RETRYABLE,
                    code,
                    message,
                    request_id=request_id,
                    note=f"gave up after {p.attempts} attempts",
                    maybe_sent=p.maybe_sent,
                )
            else:
                again.append(p)
        return again

    def _schedule(self, customers: list[PendingCustomer]) -> None:
        if not customers:
            return
        now = asyncio.get_running_loop().time()
        self.stats.retries += 1
        for c in customers:
            tries = max(p.tries for p in c.pairs)
            delay = backoff_s(tries, self._job.retry.backoff_base_s, self._job.retry.backoff_max_s)
            heapq.heappush(self._pool, (now + delay, next(self._seq), c))
        self._wake()

    def _retry_all(
        self,
        batch: Batch,
        code: int | None,
        message: str,
        request_id: str | None,
        *,
        maybe_sent: bool,
    ) -> None:
        log.info(
            "request.retry",
            request_id=request_id,
            code=code,
            reason=message,
            customers=len(batch.customers),
        )
        retry = []
        for c in batch.customers:
            again = self._give_up_or_retry(
                c.pairs, code, message, request_id, maybe_sent=maybe_sent
            )
            if again:
                retry.append(PendingCustomer(c.customer, again))
        self._schedule(retry)

    def _transport_error(self, batch: Batch, message: str, *, maybe_sent: bool) -> None:
        self.stats.transport_errors += 1
        self.stats.tick(False)
        self._retry_all(batch, None, message, None, maybe_sent=maybe_sent)

    def _throttled(
        self, batch: Batch, sent_at: float, retry_after: float | None, request_id: str | None
    ) -> None:
        self.stats.throttles += 1
        pause_s = self.pacer.throttled(sent_at, retry_after)
        log.warning(
            "request.throttled",
            request_id=request_id,
            retry_after_s=retry_after,
            pause_s=round(pause_s, 3),
            rate_per_s=round(self.pacer.state.rate_per_s, 3),
        )
        retry: list[PendingCustomer] = []
        for c in batch.customers:
            again = []
            for p in c.pairs:
                p.attempts -= 1  # a throttled request was not processed: not an attempt
                p.throttles += 1
                if p.throttles >= THROTTLES_PER_ATTEMPT * self._max_attempts:
                    self._record(
                        p, Status.RETRYABLE, 429, "throttled too many times", request_id=request_id
                    )
                else:
                    again.append(p)
            if again:
                retry.append(PendingCustomer(c.customer, again))
        # Back in line at once: the pacer's pause is what holds everyone back.
        now = asyncio.get_running_loop().time()
        for c in retry:
            heapq.heappush(self._pool, (now, next(self._seq), c))
        self._wake()

    def _split(
        self,
        batch: Batch,
        status: int,
        code: int | None,
        message: str | None,
        request_id: str | None,
    ) -> None:
        """A whole-request refusal: halve until the offending customer (or program) stands alone."""
        if len(batch.customers) > 1:
            mid = len(batch.customers) // 2
            halves = [Batch(batch.customers[:mid]), Batch(batch.customers[mid:])]
        elif len(batch.customers[0].pairs) > 1:
            c = batch.customers[0]
            mid = len(c.pairs) // 2
            halves = [
                Batch([PendingCustomer(c.customer, c.pairs[:mid])]),
                Batch([PendingCustomer(c.customer, c.pairs[mid:])]),
            ]
        else:
            pair = batch.customers[0].pairs[0]
            self._record(
                pair,
                Status.FAILED,
                code or status,
                message or f"HTTP {status}: the API refused this pair on its own",
                request_id=request_id,
            )
            return
        self.stats.splits += 1
        log.info(
            "request.split",
            request_id=request_id,
            status=status,
            code=code,
            customers=len(batch.customers),
        )
        self._fixed.extendleft(reversed(halves))
        self._wake()

    async def _refused(
        self,
        session: aiohttp.ClientSession,
        batch: Batch,
        status: int,
        code: int | None,
        message: str | None,
        token: str | None,
        request_id: str | None,
    ) -> None:
        for c in batch.customers:
            for p in c.pairs:
                p.attempts -= 1  # refused before processing
        if status != 403 and not batch.auth_retried:
            try:
                fresh = await self._auth.refused(session, token)
            except AuthRefused as e:
                self._abort(e, batch)
                return
            if fresh:
                self.stats.token_refreshes += 1
                log.info("auth.token_refreshed", request_id=request_id, status=status, code=code)
                batch.auth_retried = True
                self._fixed.appendleft(batch)
                self._wake()
                return
        what = "access denied" if status == 403 else "authentication failed"
        self._abort(
            AuthRefused(
                f"The API refused the credentials ({what}: HTTP {status}"
                + (f", code {code}: {message}" if code else "")
                + "); the run stopped and nothing more was sent.",
                hint="Check the credentials in the environment (and that the account may use "
                "the v2 API), then resume the run.",
            ),
            batch,
        )

    def _abort(self, error: RunStopped, batch: Batch) -> None:
        if self.abort is None:
            self.abort = error
            log.error("run.aborted", reason=error.message)
        self._fixed.appendleft(batch)
        self.stop("authentication refused")
