"""Send the plan: one HTTP session, paced by the quota, with retries, splitting and abort.

The loop is thin: the `WorkQueue` says what to send next, `verdicts.classify` what a whole
answer means, and `answers` what it means for each pair. Every pair that is answered is written
to the journal; a pair that is never answered is absent from it and the run calls it
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
from batcher.present.logs import mask_text
from batcher.results.journal import Journal
from batcher.results.outcomes import Outcome, Status
from batcher.send import answers, contract, placing
from batcher.send import events as ev
from batcher.send.auth import Authenticator, AuthRefused, OrgGuard, WrongOrg
from batcher.send.batch_limit import BatchLimit, refused_for_size
from batcher.send.breaker import FailureKind, ShareBreaker, failure_sample, failure_stop_message
from batcher.send.contract import Entry
from batcher.send.outage import Gate, Outage
from batcher.send.pace import Pacer, backoff_s
from batcher.send.queue import Batch, PendingCustomer, PendingPair, WorkQueue
from batcher.send.session import retry_after_s
from batcher.send.stats import RunStats
from batcher.send.verdicts import Action, Kind, classify

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


def _sample_of(outcome: Outcome) -> Callable[[], str]:
    """A failed pair as the breaker's (masked) example, made only if it is the first of its kind."""
    return lambda: failure_sample(outcome.code, outcome.customer, outcome.program)


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
        self._job = job
        self._identifier = job.input.identifier
        self._journal = journal
        self._max_attempts = job.retry.max_attempts
        self._throttle_statuses = job.api.throttle_statuses
        self._queue = WorkQueue(
            requests,
            customers_per_request=job.api.customers_per_request,
            lost=maybe_sent,
        )
        self.stats = stats or RunStats()
        # Whatever happens is emitted once: counted by the stats, logged, then `hooks`.
        self._emit = ev.Emitter((self.stats.record, ev.log_event, *hooks))
        self.pacer = pacer or Pacer(
            job.api.quota,
            backoff_base_s=job.retry.backoff_base_s,
            backoff_max_s=job.retry.backoff_max_s,
        )
        self._outage = Outage(
            backoff_base_s=job.retry.backoff_base_s,
            backoff_max_s=job.retry.backoff_max_s,
            give_up_after_s=job.retry.give_up_after_s,
        )
        # Pairs of the failures in a row so far: if they turn out to be an outage, the
        # attempts they spent are given back (an outage does not use up max_attempts).
        self._streak_pairs: list[PendingPair] = []
        self._limit = BatchLimit(job.api.customers_per_request)
        # Set by run(): where to send (known once an embedded simulator listens), and as whom.
        self._url = ""
        self._auth: Authenticator
        self._basic_headers: dict[str, str] = {}
        self._clock: Callable[[], float] = time.monotonic
        self._changed: asyncio.Event | None = None
        self._in_flight = 0
        self._stop_reason: str | None = None
        self._abort: RunStopped | None = None
        self.org = org or OrgGuard(job.api.expect_org_id)
        # The canary: until an answer names the org, one request of one customer at a time.
        self._canary = False
        self._resume_command = resume_command
        safety = job.safety
        self._breaker: ShareBreaker[FailureKind] | None = (
            ShareBreaker(safety.stop_if_failed_share, safety.stop_after_pairs)
            if safety.breaker_on
            else None
        )
        # Answers that cannot be placed: the failure breaker's rule and settings ([safety]).
        self._unplaced_breaker: ShareBreaker[str] = ShareBreaker(
            job.safety.stop_if_failed_share, job.safety.stop_after_pairs
        )

    def stop(self, reason: str) -> None:
        """Take no new work; requests in flight finish. Unsent pairs stay out of the journal."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._emit(ev.Stopping(reason))
        self._wake()

    def refuse(self, error: RunStopped) -> SendResult:
        """Stop before sending anything (the wrong org, credentials refused): every pair unsent."""
        if self._abort is None:
            self._abort = error
            self._emit(ev.Aborted(error.message))
        self.stop("the wrong org" if isinstance(error, WrongOrg) else "authentication refused")
        return SendResult(self._stop_reason, self._abort, self.stats)

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
        # Basic auth names no org before an answer does: the first request goes alone, so a
        # wrong org costs one customer, not a request of 50 times max_in_flight.
        self._canary = not self.org.known
        self._emit(ev.SendingStarted(time.monotonic()))
        try:
            async with asyncio.TaskGroup() as workers:
                for i in range(self._job.api.max_in_flight):
                    workers.create_task(self._worker(session), name=f"sender-{i}")
        finally:
            self._emit(ev.SendingEnded(time.monotonic()))
            self._journal.flush()
        return SendResult(self._stop_reason, self._abort, self.stats)

    async def _next_batch(self) -> Batch | None:
        changed = self._changed
        assert changed is not None
        queue, outage, limit = self._queue, self._outage, self._limit
        while self._stop_reason is None:
            if self._canary:
                if self.org.settled:
                    self._canary = False
                    self._emit(ev.CanaryAnswered(self.org.org_id))
                elif self._in_flight:
                    changed.clear()  # the canary is out: everyone else waits for its answer
                    await changed.wait()
                    continue
            now = self._clock()
            gate = outage.decide(now)
            wake_at: float | None = None
            if gate.gate is Gate.GIVE_UP:
                self._give_up(now)
                return None
            if gate.gate is Gate.WAIT:
                wake_at = gate.until  # None: until the probe's answer
            elif (sizing := limit.next_size()).customers:
                batch = queue.take(now, 1 if self._canary else sizing.customers)
                if batch is not None:
                    batch.canary = self._canary
                    batch.outage_probe = gate.gate is Gate.PROBE
                    if batch.outage_probe:
                        outage.probe_sent()
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
            await self._send_now(session, batch, body, sent_at)
        finally:
            if batch.size_probe:
                batch.size_probe = False
                self._limit.probe_done()

    async def _send_now(
        self, session: aiohttp.ClientSession, batch: Batch, body: bytes, sent_at: float
    ) -> None:
        if self._auth.uses_tokens:
            auth_headers, token = await self._auth.headers(session)
            headers = {**auth_headers, "Content-Type": "application/json"}
        else:
            headers, token = self._basic_headers, None
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
            return
        except (aiohttp.ClientError, TimeoutError) as e:
            # The request may have been processed before the connection or the wait failed.
            what = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            how = "timed out" if isinstance(e, TimeoutError) else f"connection dropped ({what})"
            self._transport_error(batch, f"no answer: {what}", lost=how)
            return
        if wrong_org is not None:
            # Take no more work at once; this answer is still recorded below: it is what the
            # API did (in the wrong org).
            self.refuse(wrong_org)
        latency_ms = (time.monotonic() - started) * 1000
        action = classify(
            status, raw, identifier=self._identifier, throttle_statuses=self._throttle_statuses
        )
        kind = action.kind
        self._emit(ev.Answered(status, latency_ms, kind is Kind.THROTTLED))
        if kind is Kind.TRANSIENT and status >= 500:
            self._retry_all(batch, action, request_id, failure=_in_words(action))
            return
        self._api_answered()
        if kind is Kind.THROTTLED:
            self._throttled(batch, sent_at, retry_after_s(retry_after), request_id)
            return
        self.pacer.answered()
        if kind is Kind.ITEMS:
            self._size_worked(len(batch.customers))
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
                self._emit(
                    ev.UnexpectedItems(
                        request_id,
                        applied.unexpected,
                        [placing.describe(r, self._identifier) for r in applied.unplaced[:3]],
                        len(applied.unconfirmed),
                    )
                )
            self._settle(applied)
            if self._unplaced_breaker.enabled:
                self._judge_unplaced(batch, applied)
        elif kind is Kind.TRANSIENT:
            self._retry_all(batch, action, request_id)
        elif kind is Kind.SPLIT:
            self._split(batch, action, request_id)
        elif kind is Kind.REFUSED:
            await self._refused(session, batch, action, token, request_id)
        else:
            self._stop_on(batch, action, request_id)

    # --- acting on an answer -------------------------------------------------------------------

    def _judge_unplaced(self, batch: Batch, applied: answers.Applied) -> None:
        """Feed every answered pair to the breaker; most of them unplaced stops the run."""
        breaker = self._unplaced_breaker
        trip = None
        for cust in batch.customers:
            sample = None
            if cust.customer in applied.unconfirmed:
                named = placing.describe(applied.unplaced[0], self._identifier)
                sample = mask_text(f"sent {self._identifier} {cust.customer}, answered {named}")
            pairs = len(cust.pairs)  # one call per customer: the window counts pairs
            trip = breaker.add("unplaced" if sample else None, sample, pairs=pairs) or trip
        if trip is None or self._abort is not None:
            return
        hint = (
            'if these are national numbers, set input.default_country_code (such as "91") '
            "in the job file so that they are sent in full"
            if self._identifier == "mobile"
            else "check input.identifier and the values sent"
        )
        self._abort = RunStopped(
            "The API names customers differently from how they were sent: "
            f"{int(100 * trip.share)}% of {trip.window_text()} got answers that match no "
            f"customer sent ({trip.sample}): {hint}. The run stopped early, nothing more was "
            "sent; the pairs sent are retryable (the API most likely processed them).",
        )
        self._emit(ev.Aborted("answers name customers differently", trip.share))
        self.stop("most answers match no customer sent")

    def _settle(self, applied: answers.Applied) -> None:
        """Journal the outcomes; queue the retries after their backoff."""
        record = self._journal.record
        for o in applied.outcomes:
            record(o)
        if self._breaker is not None and applied.outcomes:
            self._judge(applied.outcomes)
        self._schedule(applied.retries)

    def _judge(self, outcomes: list[Outcome]) -> None:
        """Feed the early stop one answer's pairs (retryable ones were not answered); stop the
        run when nearly all of the latest answered pairs failed."""
        breaker = self._breaker
        assert breaker is not None
        failed = [o for o in outcomes if o.status is Status.FAILED]
        fine = sum(o.status is not Status.RETRYABLE for o in outcomes) - len(failed)
        trip = breaker.add(None, pairs=fine)
        for o in failed:
            if trip is not None:
                break
            trip = breaker.add((o.code, o.message), _sample_of(o))
        if trip is None:
            return
        self._emit(ev.TooManyFailures(trip.share, trip.window, trip.kind[0], trip.kind[1]))
        if self._abort is None:
            self._abort = RunStopped(failure_stop_message(trip, self._resume_command))
        self.stop(f"{trip.share:.0%} of {trip.window_text()} failed")

    def _schedule(self, customers: list[PendingCustomer]) -> None:
        if not customers:
            return
        now = self._clock()
        base_s, max_s = self._job.retry.backoff_base_s, self._job.retry.backoff_max_s
        # One wait for all of an answer's retries, so they come back together, a full request.
        delay = backoff_s(max(p.attempts for c in customers for p in c.pairs), base_s, max_s)
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
            self._api_failed(batch, failure)
        applied = answers.retry_all(
            batch,
            action.code,
            action.message or "",
            request_id,
            lost=action.lost,
            max_attempts=self._max_attempts,
        )
        if failure is not None and not self._outage.active:
            self._streak_pairs.extend(p for c in applied.retries for p in c.pairs)
        self._settle(applied)

    # --- outages -------------------------------------------------------------------------------

    def _api_failed(self, batch: Batch, what: str) -> None:
        """A whole request failed (no answer, or a 5xx): one more failure in a row."""
        outage = self._outage
        was_active = outage.active
        now = self._clock()
        if outage.failed(now, what):
            self._emit(ev.OutageStarted(outage.streak, what))
            for p in self._streak_pairs:  # the failures that led here were the outage too
                p.attempts = max(0, p.attempts - 1)
            self._streak_pairs.clear()
        elif was_active and batch.outage_probe:
            self._emit(ev.ProbeFailed(what, outage.failing_for_s(now), outage.next_probe_at - now))
        if outage.active or batch.canary:
            # Not an attempt: the outage, not this request, is the problem (see retry_all). So
            # is a failed canary's: alone, it cannot join the streak that declares an outage.
            for p in batch.pairs():
                p.attempts -= 1

    def _api_answered(self) -> None:
        """The API answered (anything but a 5xx): no outage, or the end of one."""
        self._streak_pairs.clear()
        lasted_s = self._outage.answered(self._clock())
        if lasted_s is not None:
            self._emit(ev.OutageEnded(lasted_s))
            self._wake()

    def _give_up(self, now: float) -> None:
        outage = self._outage
        failing_s = outage.failing_for_s(now)
        self._abort = RunStopped(
            f"The API has been failing for {failing_s:.0f} seconds: every request got a 5xx or "
            f"no answer, then every probe, one at a time; it last answered {outage.last_answer}. "
            f"The run stopped (retry.give_up_after_seconds = {outage.give_up_after_s:g}); "
            "nothing more was sent.",
            hint="Resume the run when the API is back (batcher resume RUN_DIR): pairs with an "
            "outcome are not sent again.",
        )
        self._emit(ev.GaveUp(failing_s, outage.last_answer, outage.give_up_after_s))
        self.stop(f"the API has been failing for {failing_s:.0f} s")

    # --- the batch limit -----------------------------------------------------------------------

    def _size_worked(self, customers: int) -> None:
        limit = self._limit
        before = limit.learned
        limit.accepted(customers)
        self._note_learned(before)

    def _note_learned(self, before: int | None) -> None:
        learned = self._limit.learned
        if learned != before:
            limit = self._limit
            self._emit(ev.BatchLimitChanged(learned, limit.configured, limit.refusals))
            self._wake()

    def _too_big(self, batch: Batch, action: Action, request_id: str | None) -> bool:
        """A refusal of the request's size: its customers go back to be packed smaller."""
        if not refused_for_size(action.status, action.code, action.message):
            return False
        limit = self._limit
        before = limit.learned
        if not limit.refused(len(batch.customers)):
            return False
        self._emit(ev.TooBig(request_id, action.status, action.code, len(batch.customers)))
        now = self._clock()
        for c in batch.customers:  # nothing was processed: not an attempt
            self._queue.retry_at(c, now)
        self._note_learned(before)
        self._wake()
        return True

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
        for o in applied.outcomes:
            self._journal.record(o)
        # Back in line at once: the pacer's pause is what holds everyone back.
        now = self._clock()
        for c in applied.retries:
            self._queue.retry_at(c, now)
        self._wake()

    def _split(self, batch: Batch, action: Action, request_id: str | None) -> None:
        if self._too_big(batch, action, request_id):
            return
        halves = answers.split(batch, action.status, action.code, action.message, request_id)
        if not isinstance(halves, list):
            self._journal.record(halves)
            if self._breaker is not None:
                self._judge([halves])
            return
        self._emit(ev.Split(request_id, action.status, action.code, len(batch.customers)))
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
        if self._abort is None:
            self._abort = error
            self._emit(ev.Aborted(error.message))
        self._queue.put_first(batch)
        self.stop("authentication refused")
