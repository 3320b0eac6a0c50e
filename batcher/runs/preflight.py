"""Before anything is sent: refuse a plan larger than `[safety] max_pairs`, and what a person
confirming the run is shown (the plan, the org, the quota and the time it will take)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from batcher.errors import BatcherError
from batcher.input.source import Source, exact_customer_key
from batcher.job import Job
from batcher.plan import plan_figures

PROGRAMS_SHOWN = 10


class PlanTooLarge(BatcherError):
    """The plan has more valid pairs than `[safety] max_pairs` allows; nothing was sent."""


class NotConfirmed(BatcherError):
    """The person at the terminal did not confirm the run; nothing was sent."""


@dataclass(frozen=True, slots=True)
class PlanPreview:
    """What a run is about to do, for the confirmation question."""

    job: str
    base_url: str
    auth: str
    pairs: int
    customers: int
    requests: int
    programs: tuple[tuple[str, int], ...]  # the largest first, at most PROGRAMS_SHOWN
    more_programs: int  # programs beyond those listed
    expect_org_id: int | None
    quota: str
    expected_send_s: float


# A run asks this before sending; False means "do not send" (see cli.py's question).
Confirm = Callable[[PlanPreview], bool]


def check_max_pairs(job: Job, valid_pairs: int) -> None:
    """Refuse (exit 2, before anything is sent) a plan with more valid pairs than allowed."""
    limit = job.safety.max_pairs
    if limit is not None and valid_pairs > limit:
        raise PlanTooLarge(
            f"The plan has {valid_pairs:,} valid pairs, more than safety.max_pairs allows "
            f"({limit:,}); nothing was sent.",
            hint=f"If {valid_pairs:,} pairs is what you mean, raise max_pairs under [safety] in "
            f"{job.path.name}, or pass --max-pairs {valid_pairs} to `batcher run`.",
        )


def preview_plan(job: Job, source: Source) -> PlanPreview:
    pairs = source.pairs()
    figures, _ = plan_figures(
        pairs,
        job.api.customers_per_request,
        job.api.programs_per_customer,
        customer_key=exact_customer_key(source.identifier),
    )
    per_program = (
        pairs.group_by("_program").len().sort(["len", "_program"], descending=[True, False]).rows()
    )
    return PlanPreview(
        job=job.name,
        base_url=job.api.base_url,
        auth=job.api.auth,
        pairs=figures.pairs,
        customers=figures.customers,
        requests=figures.requests,
        programs=tuple((str(p), int(n)) for p, n in per_program[:PROGRAMS_SHOWN]),
        more_programs=max(0, len(per_program) - PROGRAMS_SHOWN),
        expect_org_id=job.api.expect_org_id,
        quota=str(job.api.quota),
        expected_send_s=job.api.quota.seconds_for(figures.requests),
    )


def preflight(job: Job, source: Source, confirm: Confirm | None) -> None:
    """The checks between loading the input and sending: the size limit, then the question."""
    check_max_pairs(job, source.counts()["valid"])
    if confirm is not None and not confirm(preview_plan(job, source)):
        raise NotConfirmed("Not confirmed: nothing was sent.")
