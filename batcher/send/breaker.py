"""An early stop for a run whose answers nearly all say the same thing is wrong.

A file whose every row names a program the org does not have would otherwise spend the whole
quota learning 10,000 times what the first 200 answers already said. The rule is a rolling
window over answered pairs: once `after_pairs` pairs are answered, and at every later answer,
look at the last `window_pairs` of them (all of them while there are fewer); if `share` or more
are bad, trip. Bad answers carry a *kind* (for failures: the API's code and message), so the
stop can name the dominant one and show a sample.

The breaker is pure (no clock, no I/O, O(1) per answer) and generic in the kind, so any "most
answers are bad" rule can use it. The sender has two, both on the [safety] settings:
`FailureWatch` (permanent failures) and `UnplacedWatch` (answers that name customers otherwise
than they were sent); each hands the loop a `Stop` when it trips.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from batcher.errors import RunStopped
from batcher.present.logs import mask_text
from batcher.results.outcomes import Outcome, Status
from batcher.send import events as ev
from batcher.send import placing
from batcher.send.answers import Applied
from batcher.send.queue import Batch
from batcher.send.verdicts import Stop

K = TypeVar("K")

WINDOW_PAIRS = 1000


@dataclass(frozen=True, slots=True)
class Trip(Generic[K]):
    """Why the breaker tripped: the bad share of a window, and its dominant kind of answer."""

    bad: int  # bad answers in the window
    window: int  # answered pairs in the window
    answered: int  # answered pairs in the whole run so far
    kind: K  # the most frequent kind of bad answer in the window
    kind_count: int
    sample: str | None  # one example of that kind (already masked by the caller)

    @property
    def share(self) -> float:
        return self.bad / self.window

    @property
    def whole_run(self) -> bool:
        """The window is every pair answered so far (the run's first pairs)."""
        return self.window == self.answered

    def window_text(self) -> str:
        """ "the first 250 pairs" or "the last 1,000 pairs"."""
        return f"the {'first' if self.whole_run else 'last'} {self.window:,} pairs"


class ShareBreaker(Generic[K]):
    """Trips when `share` or more of the answered pairs in the rolling window are bad.

    The window is kept as runs of equal answers ([kind, count], None for good), so a caller
    can add a whole answer's good pairs in one call: cheap enough for every request of a run.
    """

    def __init__(self, share: float, after_pairs: int, window_pairs: int = WINDOW_PAIRS) -> None:
        if not 0 < share <= 1 or after_pairs < 1:
            raise ValueError("share must be in (0, 1] and after_pairs positive")
        self.share = share
        self.after_pairs = after_pairs
        self.window_pairs = max(window_pairs, after_pairs)
        self.enabled = share < 1.0  # 1.0 turns it off: "every answer failed" is still an answer
        self.answered = 0
        self.tripped: Trip[K] | None = None
        self._runs: deque[list[Any]] = deque()  # [kind or None, pairs], oldest first
        self._size = 0
        self._bad = 0
        self._kinds: Counter[K] = Counter()
        self._samples: dict[K, str | None] = {}

    def add(
        self,
        bad_kind: K | None,
        sample: str | Callable[[], str] | None = None,
        *,
        pairs: int = 1,
    ) -> Trip[K] | None:
        """`pairs` answered pairs of one kind (`bad_kind` None: good answers). The Trip, the
        first time only.

        `sample` shows what a bad answer of this kind looks like; only the first of each kind is
        kept, so it may be a function, called only then.
        """
        if not self.enabled or self.tripped is not None or pairs <= 0:
            return None
        self.answered += pairs
        runs = self._runs
        if runs and runs[-1][0] == bad_kind:
            runs[-1][1] += pairs
        else:
            runs.append([bad_kind, pairs])
        self._size += pairs
        if bad_kind is not None:
            self._bad += pairs
            self._kinds[bad_kind] += pairs
            if bad_kind not in self._samples:
                self._samples[bad_kind] = sample() if callable(sample) else sample
        excess = self._size - self.window_pairs
        while excess > 0:  # the oldest answers leave the window
            oldest = runs[0]
            dropped = min(excess, oldest[1])
            oldest[1] -= dropped
            excess -= dropped
            self._size -= dropped
            if oldest[0] is not None:
                self._bad -= dropped
                self._kinds[oldest[0]] -= dropped
                if not self._kinds[oldest[0]]:
                    del self._kinds[oldest[0]]
            if not oldest[1]:
                runs.popleft()
        if self.answered < self.after_pairs or self._bad < self.share * self._size:
            return None
        kind, count = self._kinds.most_common(1)[0]
        self.tripped = Trip(self._bad, self._size, self.answered, kind, count, self._samples[kind])
        return self.tripped


# --- permanent failures: the kind is the API's (code, message) --------------------------------

FailureKind = tuple[int | None, str | None]

# What to check, by the dominant code (see docs/api-contract.md's item codes).
_FAILURE_HINTS: dict[int, str] = {
    2006: "check the program names against the org's partner programs",
    2008: "check the programs per customer (programs_per_customer)",
    618: "these customers are marked as fraud",
    1001: "check the mobiles and input.identifier",
    1002: "check the emails and input.identifier",
    1003: "check the external ids and input.identifier",
    **dict.fromkeys(
        (816, 1011, 1012, 8015),
        "check that these customers exist in this org (api.expect_org_id) and input.identifier",
    ),
}
_PROGRAM_CODES = frozenset({2006, 2008})


def failure_sample(code: int | None, customer: str, program: str) -> str:
    """A masked example row for a failure: the program alone when the program is the problem."""
    if code in _PROGRAM_CODES:
        return f"program {program!r}"
    return f"customer {mask_text(customer)}, program {program!r}"


def failure_stop_message(trip: Trip[FailureKind], resume: str) -> str:
    """ "97% of the first 250 pairs failed with 2006 'Cannot find ...' (program 'Gold'): ..." """
    code, message = trip.kind
    what = f"{code} {message!r}" if message else f"code {code}"
    sample = f" ({trip.sample})" if trip.sample else ""
    mixed = (
        ""
        if trip.kind_count == trip.bad
        else f" ({trip.kind_count:,} of the {trip.bad:,} failures)"
    )
    hint = _FAILURE_HINTS.get(code, "check the input") if code is not None else "check the input"
    return (
        f"{int(100 * trip.share)}% of {trip.window_text()} failed"
        f"{' mostly' if mixed else ''} with {what}{mixed}{sample}: {hint}; "
        f"the run stopped early (only requests already in flight were answered); "
        f"resume with {resume}"
    )


class FailureWatch:
    """The early stop on permanent failures: fed each answer's outcomes, it stops the run when
    nearly all of the latest answered pairs failed (retryable ones were not answered)."""

    def __init__(
        self, share: float, after_pairs: int, *, resume_command: str, emit: ev.Hook
    ) -> None:
        breaker: ShareBreaker[FailureKind] = ShareBreaker(share, after_pairs)
        self._breaker = breaker if breaker.enabled else None
        self._resume_command = resume_command
        self._emit = emit

    def judge(self, outcomes: list[Outcome]) -> Stop | None:
        breaker = self._breaker
        if breaker is None or not outcomes:
            return None
        failed = [o for o in outcomes if o.status is Status.FAILED]
        fine = sum(o.status is not Status.RETRYABLE for o in outcomes) - len(failed)
        trip = breaker.add(None, pairs=fine)
        for o in failed:
            if trip is not None:
                break
            trip = breaker.add((o.code, o.message), _sample_of(o))
        if trip is None:
            return None
        self._emit(ev.TooManyFailures(trip.share, trip.window, trip.kind[0], trip.kind[1]))
        return Stop(
            f"{trip.share:.0%} of {trip.window_text()} failed",
            RunStopped(failure_stop_message(trip, self._resume_command)),
        )


def _sample_of(outcome: Outcome) -> Callable[[], str]:
    """A failed pair as the breaker's (masked) example, made only if it is the first of its kind."""
    return lambda: failure_sample(outcome.code, outcome.customer, outcome.program)


class UnplacedWatch:
    """The early stop on answers that cannot be placed: most of them naming customers otherwise
    than they were sent (national numbers sent without their country code, most likely)."""

    def __init__(self, share: float, after_pairs: int, *, identifier: str) -> None:
        breaker: ShareBreaker[str] = ShareBreaker(share, after_pairs)
        self._breaker = breaker if breaker.enabled else None
        self._identifier = identifier

    def judge(self, batch: Batch, applied: Applied) -> Stop | None:
        """Feed every answered pair to the breaker; most of them unplaced stops the run."""
        breaker = self._breaker
        if breaker is None:
            return None
        identifier = self._identifier
        trip = None
        for cust in batch.customers:
            sample = None
            if cust.customer in applied.unconfirmed:
                named = placing.describe(applied.unplaced[0], identifier)
                sample = mask_text(f"sent {identifier} {cust.customer}, answered {named}")
            pairs = len(cust.pairs)  # one call per customer: the window counts pairs
            trip = breaker.add("unplaced" if sample else None, sample, pairs=pairs) or trip
        if trip is None:
            return None
        hint = (
            'if these are national numbers, set input.default_country_code (such as "91") '
            "in the job file so that they are sent in full"
            if identifier == "mobile"
            else "check input.identifier and the values sent"
        )
        return Stop(
            "most answers match no customer sent",
            RunStopped(
                "The API names customers differently from how they were sent: "
                f"{int(100 * trip.share)}% of {trip.window_text()} got answers that match no "
                f"customer sent ({trip.sample}): {hint}. The run stopped early, nothing more was "
                "sent; the pairs sent are retryable (the API most likely processed them).",
            ),
            announce=ev.Aborted("answers name customers differently", trip.share),
        )
