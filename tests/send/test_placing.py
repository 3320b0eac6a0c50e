"""Placing answers that name the customer differently from the request (send/placing.py).

The rules never give one answer to two customers, never give an answer to a customer the
request did not carry, and never guess between two candidates.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.results.outcomes import Status
from batcher.send import contract
from batcher.send.answers import UNPLACED_MESSAGE, apply_answer
from batcher.send.contract import CustomerResult, ItemStatus
from batcher.send.placing import EXACT, ONLY_ONE, SUFFIX, place_answers
from batcher.send.queue import Batch, PendingCustomer, PendingPair

FOUND = ItemStatus(True, 1000, "found")


def answer(value: str | None, identifier: str = "mobile", cid: int = 1) -> CustomerResult:
    key = contract.match_key(identifier, value) or ""
    return CustomerResult(key, cid, FOUND, {}, value)


def test_exact_answers_are_placed_in_any_order() -> None:
    sent = ["919800000001", "919800000002"]
    placed = place_answers("mobile", sent, [answer(sent[1], cid=2), answer(sent[0], cid=1)])
    assert [a.customer_id if a else None for a in placed.answers] == [1, 2]
    assert placed.rules == [EXACT, EXACT]
    assert placed.unplaced == []


def test_one_customer_sent_and_one_back_is_its_answer_whatever_its_name() -> None:
    placed = place_answers("mobile", ["919800000000"], [answer("916215000000")])
    assert placed.rules == [ONLY_ONE]
    # Even without the identifier at all.
    placed = place_answers("mobile", ["919800000000"], [answer(None)])
    assert placed.rules == [ONLY_ONE]


def test_national_and_trunk_forms_are_placed_by_their_digits() -> None:
    sent = ["9800000001", "09800000002", "919800000003"]
    back = [answer("919800000003"), answer("919800000002"), answer("919800000001")]
    placed = place_answers("mobile", sent, back)
    assert [a.returned if a else None for a in placed.answers] == [
        "919800000001",
        "919800000002",
        "919800000003",
    ]
    assert placed.rules == [SUFFIX, SUFFIX, EXACT]


def test_two_candidates_are_never_guessed_between() -> None:
    # 9800000001 fits both answers; nothing else tells them apart.
    sent = ["9800000001", "8800000002"]
    back = [answer("919800000001"), answer("449800000001")]
    placed = place_answers("mobile", sent, back)
    assert placed.answers == [None, None]
    assert len(placed.unplaced) == 2


def test_emails_in_another_case_and_trimmed_external_ids_are_exact() -> None:
    placed = place_answers("email", ["ann@x.org"], [answer("Ann@X.org", "email")])
    assert placed.rules == [EXACT]
    placed = place_answers("externalId", ["E1", "E2"], [answer(" E2 ", "externalId")])
    assert placed.rules == [None, EXACT]


def test_an_answer_for_nobody_sent_is_unplaced_when_the_request_had_several() -> None:
    placed = place_answers("mobile", ["919800000001", "919800000002"], [answer("916215000000")])
    assert placed.answers == [None, None]
    assert [r.returned for r in placed.unplaced] == ["916215000000"]


# --- the property ---------------------------------------------------------------------------

NATIONAL = st.integers(10**7, 10**10 - 1).map(str)  # 8 to 10 digits, no leading 0


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[str], list[CustomerResult]]:
    """Distinct sent mobiles in any form, and answers: exact, completed, foreign, repeated, or
    without the identifier, shuffled."""
    nationals = draw(st.lists(NATIONAL, min_size=1, max_size=8, unique=True))
    # Customers whose digits end another's: the answers for one fit both.
    shadows = draw(st.lists(st.sampled_from(nationals), max_size=3))
    nationals = list(dict.fromkeys(nationals + [n[1:].lstrip("0") or n for n in shadows]))
    forms = draw(st.lists(st.sampled_from(["n", "0n", "cc"]), min_size=len(nationals)))
    sent = list(
        dict.fromkeys(
            {"n": n, "0n": "0" + n, "cc": "91" + n}[f]
            for n, f in zip(nationals, forms, strict=False)
        )
    )
    back: list[CustomerResult] = []
    for i, n in enumerate(nationals):
        how = draw(st.sampled_from(["exact", "stored", "other-code", "omitted", "twice"]))
        value = sent[i] if i < len(sent) else "91" + n
        if how == "exact":
            back.append(answer(value, cid=i))
        elif how == "stored":
            back.append(answer("91" + n, cid=i))
        elif how == "other-code":
            back.append(answer("44" + n, cid=i))
        elif how == "twice":
            back += [answer("91" + n, cid=i), answer("91" + n, cid=i)]
    back += [answer(v, cid=100 + j) for j, v in enumerate(draw(st.lists(NATIONAL, max_size=3)))]
    back += [answer(None, cid=200)] * draw(st.integers(0, 1))
    return sent, draw(st.permutations(back))


@settings(max_examples=100, deadline=None)
@given(requests())
def test_property_one_answer_never_goes_to_two_customers_nor_to_one_not_sent(
    request: tuple[list[str], list[CustomerResult]],
) -> None:
    sent, back = request
    placed = place_answers("mobile", sent, back)
    assert len(placed.answers) == len(sent)
    given_out = [a for a in placed.answers if a is not None]
    # Each placed answer is one of the answers, placed once; what is left is unplaced, once.
    keys = [(a.key, a.returned, a.customer_id) for a in given_out]
    assert len(set(keys)) == len(keys)
    left = [(a.key, a.returned, a.customer_id) for a in placed.unplaced]
    assert not set(keys) & set(left)
    returned_customers = {(a.key, a.returned, a.customer_id) for a in back}
    assert set(keys) | set(left) <= returned_customers
    for s, a, rule in zip(sent, placed.answers, placed.rules, strict=True):
        if a is None:
            assert rule is None
            continue
        # Never an answer to a customer the request did not carry: each placement is justified.
        if rule == EXACT:
            assert a.key == contract.match_key("mobile", s)
        elif rule == SUFFIX:
            assert (a.returned or "").endswith(s.lstrip("0"))
        else:
            assert rule == ONLY_ONE and len(sent) == 1
            assert len({(b.key or id(b)) for b in back}) == 1


# --- apply_answer with answers that cannot be placed ------------------------------------------


def _asked(*customers: str) -> Batch:
    return Batch(
        [
            PendingCustomer(c, [PendingPair(10 * i + j, c, p) for j, p in enumerate(["a", "b"])])
            for i, c in enumerate(customers)
        ]
    )


def _found(value: str | None, cid: int, programs: list[str]) -> CustomerResult:
    done = {p: ItemStatus(True, 200, "Success") for p in programs}
    return CustomerResult(contract.match_key("mobile", value) or "", cid, FOUND, done, value)


def test_apply_answer_places_stored_forms_and_records_what_came_back() -> None:
    batch = _asked("09800000001", "9800000002")
    results = [_found("919800000002", 2, ["a", "b"]), _found("919800000001", 1, ["a", "b"])]
    applied = apply_answer(batch, results, "rid", identifier="mobile", max_attempts=3)
    assert [(o.customer, o.status, o.api_identifier, o.customer_id) for o in applied.outcomes] == [
        ("09800000001", Status.DELINKED, "919800000001", 1),
        ("09800000001", Status.DELINKED, "919800000001", 1),
        ("9800000002", Status.DELINKED, "919800000002", 2),
        ("9800000002", Status.DELINKED, "919800000002", 2),
    ]
    assert applied.retries == [] and applied.unexpected == 0


def test_an_unplaced_answer_makes_the_unanswered_pairs_retryable_now_not_resent() -> None:
    batch = _asked("919800000001", "919800000002", "919800000003")
    results = [_found("919800000001", 1, ["a", "b"]), _found("916215000000", 9, ["a", "b"])]
    applied = apply_answer(batch, results, "rid", identifier="mobile", max_attempts=5)
    by_customer = {(o.customer, o.program): o for o in applied.outcomes}
    assert len(by_customer) == 6 and applied.retries == []  # nothing goes back for a resend
    assert by_customer[("919800000001", "a")].status is Status.DELINKED
    for c in ("919800000002", "919800000003"):
        o = by_customer[(c, "b")]
        assert o.status is Status.RETRYABLE and o.code is None and o.maybe_sent
        assert o.message == UNPLACED_MESSAGE
        assert o.note == "the answer named mobile 916215000000 (id 9), matching no customer sent"
    assert applied.unexpected == 1
    assert applied.unconfirmed == {"919800000002", "919800000003"}


def test_an_omitted_customer_without_an_unplaced_answer_is_still_retried() -> None:
    batch = _asked("919800000001", "919800000002")
    applied = apply_answer(
        batch, [_found("919800000001", 1, ["a", "b"])], "rid", identifier="mobile", max_attempts=5
    )
    assert [c.customer for c in applied.retries] == ["919800000002"]
    assert applied.unexpected == 0 and not applied.unconfirmed
