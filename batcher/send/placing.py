"""Which customer of an answer answers which customer of the request (pure, no I/O).

Capillary answers with the customer as it is *stored*, which need not be the form that was
sent: an org completes a national mobile with its country code (sent `09800000001`, answered
`919800000001`), and keeps an email in the case it was registered with. Answers are placed on
the request's customers by rules that can never pair two different customers:

1. the same identifier (emails case-insensitively, every value trimmed: `contract.match_key`);
2. a request that carried exactly one customer and got exactly one customer back: that is its
   answer, whatever it is called;
3. mobiles: the returned digits end with the sent digits (without their trunk 0s), and neither
   side has another candidate among what is left of the request and the answer.

An answer that still fits no customer is returned as `unplaced`: never dropped, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from batcher.send import contract
from batcher.send.contract import CustomerResult

# How an answer was placed (for tests and logs).
EXACT, ONLY_ONE, SUFFIX = "exact", "only_one", "suffix"


class Placement(NamedTuple):
    """Per sent customer (same order as sent), its answer or None; and the answers left over."""

    answers: list[CustomerResult | None]
    rules: list[str | None]
    unplaced: list[CustomerResult]


def _merged(results: Sequence[CustomerResult]) -> list[CustomerResult]:
    """One result per returned customer: the same key twice is one customer, programs merged.

    Results without a key (the answer left out the identifier that was sent) stay apart.
    """
    out: list[CustomerResult] = []
    at: dict[str, int] = {}
    for r in results:
        if not r.key or r.key not in at:
            if r.key:
                at[r.key] = len(out)
            out.append(r)
            continue
        prev = out[at[r.key]]
        out[at[r.key]] = CustomerResult(
            prev.key,
            prev.customer_id or r.customer_id,
            prev.status,
            {**prev.programs, **r.programs},
            prev.returned,
        )
    return out


def _digits(value: str | None) -> str:
    return "".join(c for c in value or "" if "0" <= c <= "9")


def _suffix_fits(sent: str, returned: CustomerResult) -> bool:
    """The returned mobile ends with the sent one's digits (a trunk 0 does not count)."""
    wanted = _digits(sent).lstrip("0")
    got = _digits(returned.returned)
    return bool(wanted) and len(got) > len(wanted) and got.endswith(wanted)


def place_answers(
    identifier: str, sent: Sequence[str], results: Sequence[CustomerResult]
) -> Placement:
    """Place each returned customer on at most one sent customer, and each sent customer on at
    most one returned customer; see the module's docstring for the rules."""
    if len(sent) == 1 and len(results) == 1:  # rule 1 or 2, whatever the name
        only = results[0]
        exact = only.key == contract.match_key(identifier, sent[0])
        return Placement([only], [EXACT if exact else ONLY_ONE], [])
    if len(results) == len(sent):  # the usual answer: each customer once, by its own name
        by_name = {r.key: r for r in results}
        if len(by_name) == len(results):
            found = [by_name.get(contract.match_key(identifier, v) or "") for v in sent]
            if None not in found:
                return Placement(found, [EXACT] * len(sent), [])
    left = _merged(results)
    answers: list[CustomerResult | None] = [None] * len(sent)
    rules: list[str | None] = [None] * len(sent)
    by_key = {r.key: i for i, r in enumerate(left) if r.key}
    taken = [False] * len(left)
    for s, value in enumerate(sent):
        i = by_key.get(contract.match_key(identifier, value) or "")
        if i is not None and not taken[i]:
            answers[s], rules[s], taken[i] = left[i], EXACT, True
    if len(sent) == 1 and len(left) == 1 and answers[0] is None:
        answers[0], rules[0], taken[0] = left[0], ONLY_ONE, True
    if identifier == "mobile" and not all(taken):
        open_sent = [s for s in range(len(sent)) if answers[s] is None]
        open_results = [i for i in range(len(left)) if not taken[i]]
        fits = {(s, i) for s in open_sent for i in open_results if _suffix_fits(sent[s], left[i])}
        for s, i in sorted(fits):
            # Unique both ways: no other open answer fits s, and no other open customer fits i.
            if sum(1 for _, j in fits if j == i) == 1 and sum(1 for t, _ in fits if t == s) == 1:
                answers[s], rules[s], taken[i] = left[i], SUFFIX, True
    unplaced = [r for i, r in enumerate(left) if not taken[i]]
    return Placement(answers, rules, unplaced)


def describe(result: CustomerResult, identifier: str) -> str:
    """What an answer named, for a note: `mobile 916215000000 (id 382741349)`."""
    named = f"{identifier} {result.returned}" if result.returned else f"no {identifier}"
    return named + (f" (id {result.customer_id})" if result.customer_id is not None else "")
