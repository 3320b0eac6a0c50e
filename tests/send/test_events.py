"""The event hook: what each event counts and logs, without a sender or a server."""

from __future__ import annotations

from structlog.testing import capture_logs

from batcher.send import events as ev
from batcher.send.stats import RunStats


def test_the_stats_hook_counts_what_summary_json_reports() -> None:
    stats = RunStats()
    emit = ev.Emitter([stats.record])
    for event in (
        ev.REQUEST_SENT,
        ev.Answered(200, 12.5, throttled=False),
        ev.REQUEST_SENT,
        ev.Answered(429, 3.0, throttled=True),
        ev.REQUEST_SENT,
        ev.TRANSPORT_FAILED,
        ev.RetriesScheduled(2, 0.5),
        ev.Throttled("q2", None, 0.5, 10.0),
        ev.Split("q3", 400, None, 4),
        ev.TooBig("q4", 400, 1060, 50),
        ev.BatchLimitChanged(25, 50, 2),
        ev.TokenRefreshed("q5", 401, None),
        ev.UnexpectedItems("q6", 3, [], 1),
        ev.OutageStarted(5, "HTTP 503"),
        ev.Retry("q7", 503, "HTTP 503", 1),  # logged only
    ):
        emit(event)

    assert stats.requests == 3
    assert stats.responses == {200: 1, 429: 1}
    assert stats.latencies_ms == [12.5, 3.0]
    assert sum(r for r, _ in stats.timeline.values()) == 3  # every request, answered or not
    assert sum(t for _, t in stats.timeline.values()) == 1
    assert (stats.transport_errors, stats.retries, stats.throttles, stats.splits) == (1, 1, 1, 1)
    assert (stats.size_refusals, stats.learned_customers_per_request) == (1, 25)
    assert (stats.token_refreshes, stats.unmatched_answers, stats.outages) == (1, 3, 1)

    emit(ev.BatchLimitChanged(None, 50, 2))  # the search started over
    assert stats.learned_customers_per_request is None


def test_the_log_hook_keeps_the_event_names_and_fields_operators_know() -> None:
    with capture_logs() as logged:
        for event in (
            ev.REQUEST_SENT,
            ev.Answered(200, 1.0, throttled=False),
            ev.Throttled("q1", 2.0, 2.00049, 12.34567),
            ev.BatchLimitChanged(None, 50, 1),  # not learned yet: nothing to say
            ev.BatchLimitChanged(25, 50, 2),
            ev.Aborted("credentials refused"),
            ev.Aborted("answers name customers differently", 0.95),
            ev.StoppedByAnswer(404, None, None),
            ev.OutageEnded(12.345),
        ):
            ev.log_event(event)

    assert logged == [
        {
            "event": "request.throttled",
            "log_level": "warning",
            "request_id": "q1",
            "retry_after_s": 2.0,
            "pause_s": 2.0,
            "rate_per_s": 12.346,
        },
        {
            "event": "request.batch_limit_learned",
            "log_level": "warning",
            "customers_per_request": 25,
            "configured": 50,
            "refusals": 2,
        },
        {"event": "run.aborted", "log_level": "error", "reason": "credentials refused"},
        {
            "event": "run.aborted",
            "log_level": "error",
            "reason": "answers name customers differently",
            "share": 0.95,
        },
        {
            "event": "run.aborted",
            "log_level": "error",
            "status": 404,
            "code": None,
            "request_id": None,
        },
        {
            "event": "api.back",
            "log_level": "warning",
            "outage_s": 12.3,
            "action": "full pace again",
        },
    ]


def test_hooks_run_in_order_and_a_late_subscriber_hears_later_events() -> None:
    heard: list[str] = []
    emit = ev.Emitter([lambda e: heard.append(f"a:{type(e).__name__}")])
    emit(ev.Stopping("interrupted"))
    emit.subscribe(lambda e: heard.append(f"b:{type(e).__name__}"))
    emit(ev.REQUEST_SENT)
    assert heard == ["a:Stopping", "a:RequestSent", "b:RequestSent"]
