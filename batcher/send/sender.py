"""Send the plan: one HTTP session, paced by the quota, with retries, splitting and abort.

The loop is thin: the `WorkQueue` says what to send next, `verdicts.classify` what a whole
answer means, and `answers` what it means for each pair. The rest are small parts the loop
asks and tells: the canary (send.canary), the outage watch (send.outage), the batch limit
(send.batch_limit) and the early stops (send.breaker). What happens is emitted once
(send.events): the run's figures and its log lines are hooks. Every pair that is answered is
written to the journal; a pair that is never answered is absent from it and the run calls it
`retryable`, so no row is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import aiohttp
import orjson

from batcher.errors import RunStopped
from batcher.job import Job
from batcher.plan import PlannedRequest
from batcher.results.journal import Journal
from batcher.send import answers, contract, placing
from batcher.send import events as ev
from batcher.send.auth import Authenticator, AuthRefused, OrgGuard, WrongOrg
from batcher.send.batch_limit import BatchLimit, SizeWatch
from batcher.send.breaker import FailureWatch, UnplacedWatch
from batcher.send.canary import Canary
from batcher.send.contract import Entry
from batcher.send.outage import Gate, Outage, OutageWatch
from batcher.send.pace import Pacer, backoff_s
from batcher.send.queue import Batch, PendingCustomer, WorkQueue
from batcher.send.session import retry_after_s
from batcher.send.stats import RunStats
from batcher.send.verdicts import Action, Kind, Stop, classify

# How an earlier attempt's answer was lost, for pairs a run is handed as maybe processed:
# on a resume, sent (its intent written) by an earlier session that never recorded the answer;
# on a retry, given up by the parent run after an attempt whose answer was lost.
EARLIER_SESSION_LOST = (
    "a request of an earlier session of this run, stopped or killed before its answer was recorded"
)
PARENT_RUN_LOST = "an attempt in the parent run whose answer was lost (see its note there)"


@dataclass(frozen=True, slots=True)
class SendResult:
    """How sending ended: why it stopped early (None: it did not), the error that stopped it
    (credentials refused, an answer no retry changes), and the run's figures."""

    stop_reason: str | None
    abort: RunStopped | None
    stats: RunStats


@dataclass(frozen=True, slots=True)
class _Reply:
    """One HTTP answer, read in full."""

    status: int
    raw: bytes
    request_id: str | None
    retry_after: str | None
    latency_ms: float
    wrong_org: WrongOrg | None


def _in_words(action: Action) -> str:
    """A whole answer as an operator reads it: "HTTP 503: Service Unavailable"."""
    words = f"HTTP {action.status}"
    if action.code is not None and action.code != action.status:
        words += f" (code {action.code})"
    if action.message and action.message != f"HTTP {action.status}":
        words += f": {action.message}"
    return words


def _request_id(headers: Mapping[str, str]) -> str | None:
    for name in contract.REQUEST_ID_HEADERS:
        if value := headers.get(name):
            return value
    return None


class Sender:
    """Delinks every planned pair, recording each answered pair in the journal."""

    def __init__(
        self,
        job: Job,
        requests: Iterator[PlannedRequest],
        journal: Journal,
        *,
        stats: RunStats | None = None,
        maybe_sent: Mapping[tuple[str, str], str] | None = None,
        pacer: Pacer | None = None,
        org: OrgGuard | None = None,
        resume_command: str = "batcher resume RUN_DIR",
        hooks: Iterable[ev.Hook] = (),
    ) -> None:
        api, retry, safety = job.api, job.retry, job.safety
        self._identifier = job.input.identifier
        self._journal = journal
        self._max_attempts = retry.max_attempts
        self._max_in_flight = api.max_in_flight
        self._backoff = (retry.backoff_base_s, retry.backoff_max_s)
        self._throttle_statuses = api.throttle_statuses
        self._queue = WorkQueue(
            requests, customers_per_request=api.customers_per_request, lost=maybe_sent
        )
        self.stats = stats or RunStats()
        # Whatever happens is emitted once: counted by the stats, logged, then `hooks`.
        emit = self._emit = ev.Emitter((self.stats.record, ev.log_event, *hooks))
        self.pacer = pacer or Pacer(
            api.quota, backoff_base_s=retry.backoff_base_s, backoff_max_s=retry.backoff_max_s
        )
        self.org = org or OrgGuard(api.expect_org_id)
        self._canary = Canary(self.org, emit)
        self._outage = OutageWatch(
            Outage(
                backoff_base_s=retry.backoff_base_s,
                backoff_max_s=retry.backoff_max_s,
                give_up_after_s=retry.give_up_after_s,
            ),
            emit,
        )
        self._sizes = SizeWatch(BatchLimit(api.customers_per_request), emit)
        share, after = safety.stop_if_failed_share, safety.stop_after_pairs
        self._failures = FailureWatch(share, after, resume_command=resume_command, emit=emit)
        # Answers that cannot be placed: the failure breaker's rule and settings ([safety]).
        self._unplaced = UnplacedWatch(share, after, identifier=self._identifier)
        # Set by run(): where to send (known once an embedded simulator listens), and as whom.
        self._url = ""
        self._auth: Authenticator
        self._basic_headers: dict[str, str] = {}
        self._clock: Callable[[], float] = time.monotonic
        self._changed: asyncio.Event | None = None
        self._in_flight = 0
        self._stop_reason: str | None = None
        self._abort: RunStopped | None = None

    def stop(self, reason: str) -> None:
        """Take no new work; requests in flight finish. Unsent pairs stay out of the journal."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._emit(ev.Stopping(reason))
        self._wake()

    def refuse(self, error: RunStopped) -> SendResult:
        """Stop before sending anything (the wrong org, credentials refused): every pair unsent."""
        reason = "the wrong org" if isinstance(error, WrongOrg) else "authentication refused"
        self._halt(Stop(reason, error, ev.Aborted(error.message)))
        return SendResult(self._stop_reason, self._abort, self.stats)

    def _halt(self, stop: Stop | None) -> None:
        """Stop the run; the first error to stop it is the run's (later ones are not logged)."""
        if stop is None:
            return
        if self._abort is None:
            self._abort = stop.error
            if stop.announce is not None:
                self._emit(stop.announce)
        self.stop(stop.reason)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(
        self, session: aiohttp.ClientSession, base_url: str, auth: Authenticator
    ) -> SendResult:
        """Send to `base_url` until the plan and every retry are done, or the run is stopped."""
        self._url = base_url + contract.DELINK_PATH
        self._auth = auth
        # Basic auth: the same headers on every request, built once.
        self._basic_headers = {**auth.static_headers, "Content-Type": "application/json"}
        self._clock = asyncio.get_running_loop().time
        self._changed = asyncio.Event()
        self._canary.start()
        self._emit(ev.SendingStarted(time.monotonic()))
        try:
            async with asyncio.TaskGroup() as workers:
                for i in range(self._max_in_flight):
                    workers.create_task(self._worker(session), name=f"sender-{i}")
        finally:
            self._emit(ev.SendingEnded(time.monotonic()))
            self._journal.flush()
        return SendResult(self._stop_reason, self._abort, self.stats)

    async def _next_batch(self) -> Batch | None:
        changed = self._changed
        assert changed is not None
        queue, outage, limit, canary = self._queue, self._outage, self._sizes.limit, self._canary
        while self._stop_reason is None:
            if canary.waits(self._in_flight):
                changed.clear()  # the canary is out: everyone else waits for its answer
                await changed.wait()
                continue
            now = self._clock()
            gate = outage.outage.decide(now)
            wake_at: float | None = None
            if gate.gate is Gate.GIVE_UP:
                self._halt(outage.give_up(now))
                return None
            if gate.gate is Gate.WAIT:
                wake_at = gate.until  # None: until the probe's answer
            elif (sizing := limit.next_size()).customers:
                batch = queue.take(now, canary.size(sizing.customers))
                if batch is not None:
                    batch.canary = canary.out
                    batch.outage_probe = gate.gate is Gate.PROBE
                    if batch.outage_probe:
                        outage.outage.probe_sent()
                    if sizing.probe:
                        limit.probe_sent()
                        batch.size_probe = True
                    return batch
                wake_at = queue.next_ready_at()
                if wake_at is None and self._in_flight == 0:
                    return None  # plan done, nothing waiting, nothing that could add work
            # else: no request size is known to work yet; the size probe's answer will tell.
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), None if wake_at is None else wake_at - now)
        return None

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while (batch := await self._next_batch()) is not None:
            self._in_flight += 1
            try:
                await self._send(session, batch)
            finally:
                self._journal.hand_over()  # this answer's outcomes survive a killed process
                self._in_flight -= 1
                self._wake()

    # --- one request ---------------------------------------------------------------------------

    async def _send(self, session: aiohttp.ClientSession, batch: Batch) -> None:
        entries = [Entry(c.customer, tuple(p.program for p in c.pairs)) for c in batch.customers]
        body = orjson.dumps(contract.build_body(self._identifier, entries))
        sent_at = await self.pacer.slot()
        if self._stop_reason is not None:
            self._queue.put_first(batch)  # stopped while waiting: it was never sent
            return
        try:
            if self._auth.uses_tokens:
                auth_headers, token = await self._auth.headers(session)
                headers = {**auth_headers, "Content-Type": "application/json"}
            else:
                headers, token = self._basic_headers, None
            reply = await self._post(session, batch, body, headers)
            if reply is not None:
                await self._answered(session, batch, reply, sent_at, token)
        finally:
            if batch.size_probe:
                batch.size_probe = False
                self._sizes.limit.probe_done()

    async def _post(
        self, session: aiohttp.ClientSession, batch: Batch, body: bytes, headers: dict[str, str]
    ) -> _Reply | None:
        """The HTTP exchange; None when no answer came (then the batch is already retried)."""
        # Write-ahead, once nothing stands between the request and the network (no slot or
        # token to wait for): after a crash, these pairs may have been processed.
        self._journal.intend([(c.customer, p.program) for c in batch.customers for p in c.pairs])
        self._emit(ev.REQUEST_SENT)
        started = time.monotonic()
        try:
            async with session.post(self._url, data=body, headers=headers) as resp:
                status = resp.status
                request_id = _request_id(resp.headers)
                retry_after = resp.headers.get("Retry-After")
                wrong_org = self.org.from_answer(resp.headers, answered=200 <= status < 300)
                raw = await resp.read()
        except aiohttp.ClientConnectorError as e:
            # Never connected: the request surely was not processed.
            self._transport_error(batch, f"cannot connect: {type(e).__name__}", lost=None)
            return None
        except (aiohttp.ClientError, TimeoutError) as e:
            # The request may have been processed before the connection or the wait failed.
            what = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            how = "timed out" if isinstance(e, TimeoutError) else f"connection dropped ({what})"
            self._transport_error(batch, f"no answer: {what}", lost=how)
            return None
        latency_ms = (time.monotonic() - started) * 1000
        return _Reply(status, raw, request_id, retry_after, latency_ms, wrong_org)

    # --- acting on an answer -------------------------------------------------------------------

    async def _answered(
        self,
        session: aiohttp.ClientSession,
        batch: Batch,
        reply: _Reply,
        sent_at: float,
        token: str | None,
    ) -> None:
        if reply.wrong_org is not None:
            # Take no more work at once; this answer is still recorded below: it is what the
            # API did (in the wrong org).
            self.refuse(reply.wrong_org)
        status, request_id = reply.status, reply.request_id
        action = classify(
            status,
            reply.raw,
            identifier=self._identifier,
            throttle_statuses=self._throttle_statuses,
        )
        kind = action.kind
        self._emit(ev.Answered(status, reply.latency_ms, kind is Kind.THROTTLED))
        if kind is Kind.TRANSIENT and status >= 500:
            self._retry_all(batch, action, request_id, failure=_in_words(action))
            return
        # The API answered (anything but a 5xx): no outage, or the end of one.
        if self._outage.answered(self._clock()):
            self._wake()
        if kind is Kind.THROTTLED:
            self._throttled(batch, sent_at, retry_after_s(reply.retry_after), request_id)
            return
        self.pacer.answered()
        if kind is Kind.ITEMS:
            self._items(batch, action, request_id)
        elif kind is Kind.TRANSIENT:
            self._retry_all(batch, action, request_id)
        elif kind is Kind.SPLIT:
            self._split(batch, action, request_id)
        elif kind is Kind.REFUSED:
            await self._refused(session, batch, action, token, request_id)
        else:
            self._stop_on(batch, action, request_id)

    def _items(self, batch: Batch, action: Action, request_id: str | None) -> None:
        """A readable answer: an outcome or a retry for every pair asked for."""
        if self._sizes.accepted(len(batch.customers)):
            self._wake()
        if action.oddities:
            self._emit(ev.OddItems(request_id, action.oddities))
        applied = answers.apply_answer(
            batch,
            action.results,
            request_id,
            identifier=self._identifier,
            max_attempts=self._max_attempts,
        )
        if applied.unexpected:  # never dropped: counted, logged, their pairs retryable
            answered = [placing.describe(r, self._identifier) for r in applied.unplaced[:3]]
            self._emit(
                ev.UnexpectedItems(
                    request_id, applied.unexpected, answered, len(applied.unconfirmed)
                )
            )
        self._settle(applied)
        self._halt(self._unplaced.judge(batch, applied))

    def _settle(self, applied: answers.Applied) -> None:
        """Journal the outcomes; queue the retries after their backoff."""
        self._journal.record_all(applied.outcomes)
        self._halt(self._failures.judge(applied.outcomes))
        self._schedule(applied.retries)

    def _schedule(self, customers: list[PendingCustomer]) -> None:
        if not customers:
            return
        now = self._clock()
        # One wait for all of an answer's retries, so they come back together, a full request.
        delay = backoff_s(max(p.attempts for c in customers for p in c.pairs), *self._backoff)
        self._emit(ev.RetriesScheduled(len(customers), delay))
        for c in customers:
            self._queue.retry_at(c, now + delay)
        self._wake()

    def _retry_all(
        self, batch: Batch, action: Action, request_id: str | None, *, failure: str | None = None
    ) -> None:
        """Try the whole request again; `failure` (in words) when it counts toward an outage."""
        self._emit(ev.Retry(request_id, action.code, action.message, len(batch.customers)))
        if failure is not None:
            self._outage.failed(self._clock(), batch, failure)
        applied = answers.retry_all(
            batch,
            action.code,
            action.message or "",
            request_id,
            lost=action.lost,
            max_attempts=self._max_attempts,
        )
        if failure is not None:
            self._outage.retrying(p for c in applied.retries for p in c.pairs)
        self._settle(applied)

    def _transport_error(self, batch: Batch, message: str, *, lost: str | None) -> None:
        self._emit(ev.TRANSPORT_FAILED)
        self._retry_all(
            batch, Action(Kind.TRANSIENT, 0, None, message, lost=lost), None, failure=message
        )

    def _throttled(
        self, batch: Batch, sent_at: float, retry_after: float | None, request_id: str | None
    ) -> None:
        pause_s = self.pacer.throttled(sent_at, retry_after)
        self._emit(ev.Throttled(request_id, retry_after, pause_s, self.pacer.state.rate_per_s))
        applied = answers.throttled(batch, request_id, max_attempts=self._max_attempts)
        self._journal.record_all(applied.outcomes)
        # Back in line at once: the pacer's pause is what holds everyone back.
        self._again_now(applied.retries)

    def _again_now(self, customers: list[PendingCustomer]) -> None:
        now = self._clock()
        for c in customers:
            self._queue.retry_at(c, now)
        self._wake()

    def _split(self, batch: Batch, action: Action, request_id: str | None) -> None:
        status, code, customers = action.status, action.code, len(batch.customers)
        if self._sizes.too_big(request_id, status, code, action.message, customers):
            self._again_now(batch.customers)  # to be packed smaller; not an attempt
            return
        halves = answers.split(batch, status, code, action.message, request_id)
        if not isinstance(halves, list):
            self._journal.record(halves)
            self._halt(self._failures.judge([halves]))
            return
        self._emit(ev.Split(request_id, status, code, customers))
        self._queue.put_first(*halves)
        self._wake()

    def _stop_on(self, batch: Batch, action: Action, request_id: str | None) -> None:
        """An answer no retry will change: stop, and leave this batch unsent."""
        status, code = action.status, action.code
        self._abort = RunStopped(
            f"The API answered HTTP {status} to {self._url}"
            + (f" (code {code}: {action.message})" if code else "")
            + "; that is not an answer a retry will change.",
            hint="Check api.base_url; nothing more was sent.",
        )
        self._emit(ev.StoppedByAnswer(status, code, request_id))
        self.stop(f"HTTP {status} from the API")
        self._queue.put_first(batch)

    async def _refused(
        self,
        session: aiohttp.ClientSession,
        batch: Batch,
        action: Action,
        token: str | None,
        request_id: str | None,
    ) -> None:
        """Credentials refused (nothing was processed): one fresh token, else stop the run."""
        status, code, message = action.status, action.code, action.message
        if action.may_refresh and not batch.auth_retried:
            try:
                fresh = await self._auth.refused(session, token)
            except AuthRefused as e:
                self._abort_with(e, batch)
                return
            if fresh:
                self._emit(ev.TokenRefreshed(request_id, status, code))
                batch.auth_retried = True
                self._queue.put_first(batch)
                self._wake()
                return
        what = "access denied" if not action.may_refresh else "authentication failed"
        self._abort_with(
            AuthRefused(
                f"The API refused the credentials ({what}: HTTP {status}"
                + (f", code {code}: {message}" if code else "")
                + "); the run stopped and nothing more was sent.",
                hint="Check the credentials in the environment (and that the account may use "
                "the v2 API), then resume the run.",
            ),
            batch,
        )

    def _abort_with(self, error: RunStopped, batch: Batch) -> None:
        self._queue.put_first(batch)
        self._halt(Stop("authentication refused", error, ev.Aborted(error.message)))
