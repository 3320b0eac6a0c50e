"""`batcher run`: validate, plan, send through the quota, and write an outcome for every row."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import structlog

from batcher.errors import RunStopped
from batcher.eventloop import loop_factory
from batcher.input.files import input_location
from batcher.input.source import PARKED_ROW_GROUP, Source, load_source
from batcher.job import Job, Quota
from batcher.plan import PairBatches, Plan, PlanFigures, plan_pairs
from batcher.present import logs
from batcher.present.report import write_report
from batcher.results.assemble import assemble_run
from batcher.results.journal import Journal, confirmed_pairs, unconfirmed_intents
from batcher.results.outcomes import exit_code_for, utc_now
from batcher.results.summary import PlanSummary, RunResult, RunSummary
from batcher.runs.lock import RunLock, api_key_lock, holding, job_lock
from batcher.runs.preflight import Confirm, preflight
from batcher.runs.rundir import Manifest, ManifestInput, PlanParameters, RunDir, new_run_id
from batcher.runs.upload import check_output, upload_results_or_log
from batcher.runs.validate import input_file_facts, plan_summary, with_plan, write_rejects
from batcher.send.auth import Authenticator, Credentials, OrgGuard, credentials_from_env
from batcher.send.sender import (
    EARLIER_SESSION_LOST,
    PARENT_RUN_LOST,
    Sender,
    SendResult,
)
from batcher.send.session import make_session
from batcher.send.stats import RunStats

if TYPE_CHECKING:
    from batcher.simulator.profile import Profile

log = structlog.get_logger("batcher.runs.execute")

EXIT_STOPPED = 3


def resolve_credentials(job: Job, profile: Profile | None) -> Credentials:
    """Credentials before anything is sent: the profile's demo ones for the embedded simulator."""
    if profile is not None:
        creds = profile.credentials
        if job.api.auth == "basic":
            from batcher.send.contract import md5_hex

            return Credentials(
                "basic", username=creds.basic_username, password_md5=md5_hex(creds.basic_password)
            )
        return Credentials("oauth", client_key=creds.oauth_key, client_secret=creds.oauth_secret)
    return credentials_from_env(job.api.auth)


@contextlib.asynccontextmanager
async def _api_base_url(job: Job, profile: Profile | None) -> AsyncIterator[str]:
    """The URL to send to: the job's, or an embedded simulator's on a loopback port."""
    if profile is None:
        yield job.api.base_url
        return
    from batcher.simulator.server import Simulator

    async with Simulator(profile) as sim:
        log.info("simulator.started", base_url=sim.base_url)
        yield sim.base_url


def _install_signal_handlers(sender: Sender, main_task: asyncio.Task[Any]) -> list[int]:
    """First SIGINT/SIGTERM: stop taking work, finish in-flight. Second: stop at once."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def on_signal(signum: int) -> None:
        hits["n"] += 1
        name = signal.Signals(signum).name
        if hits["n"] == 1:
            log.warning("run.interrupted", signal=name, action="finishing requests in flight")
            sender.stop(f"interrupted by {name}")
        else:
            log.warning("run.interrupted", signal=name, action="stopping now")
            main_task.cancel()

    installed: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return installed  # run_job_async's worker thread: signals stay with the host
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    return installed


async def _send_all(
    job: Job, profile: Profile | None, credentials: Credentials, sender: Sender, org: OrgGuard
) -> SendResult:
    async with _api_base_url(job, profile) as base_url:
        auth = Authenticator(credentials, base_url, refresh_margin_s=job.api.token_refresh_margin_s)
        task = asyncio.current_task()
        assert task is not None
        installed = _install_signal_handlers(sender, task)
        try:
            async with make_session(job) as session:
                try:
                    # OAuth: the token first, so its claims name the org before anything is sent.
                    org.from_token(await auth.prepare(session))
                except RunStopped as e:  # the wrong org, or the key and secret refused
                    return sender.refuse(e)
                return await sender.run(session, base_url, auth)
        finally:
            org.settle()
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)


# Parked rows read at a time while planning and sending (4 of the parked file's row groups).
_PAIR_SLICE = 4 * PARKED_ROW_GROUP


def _pairs_to_send(parked: Path, confirmed: pl.DataFrame | None) -> PairBatches:
    """The valid pairs still to send (on a resume, those without a confirmed outcome), read
    from the parked rows a slice at a time, in input order."""
    done = None
    if confirmed is not None and confirmed.height:
        done = confirmed.select(
            pl.col("customer").alias("_customer"), pl.col("program").alias("_program")
        )

    def batches() -> Iterator[pl.DataFrame]:
        scan = pl.scan_parquet(parked)
        total = int(scan.select(pl.len()).collect().item())
        for start in range(0, total, _PAIR_SLICE):
            pairs = (
                scan.slice(start, _PAIR_SLICE)
                .filter(pl.col("status") == "valid")
                .select("_key", "_customer", "_program")
                .collect()
            )
            if done is not None:
                pairs = pairs.join(
                    done, on=["_customer", "_program"], how="anti", maintain_order="left"
                )
            yield pairs

    return batches


def _plan(folder: RunDir, confirmed: pl.DataFrame | None, job: Job, valid_pairs: int) -> Plan:
    """The plan of the pairs to send: streamed from the parked rows when the input order is
    the send order (memory then holds a hash per customer), else built in memory, or in the
    run folder a bucket of customers at a time for a big input (see plan.spill_plan)."""
    expected = valid_pairs - (confirmed.height if confirmed is not None else 0)
    return plan_pairs(
        _pairs_to_send(folder.parked_rows_path, confirmed),
        max(expected, 0),
        job.api.customers_per_request,
        job.api.programs_per_customer,
        folder.plan_path,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A run ready to send: its folder and records on disk, its plan, what earlier runs did."""

    job: Job
    profile: Profile | None
    credentials: Credentials
    source: Source
    folder: RunDir
    command: str  # run | resume | retry
    parent: str | None
    plan: Plan
    # Pairs an earlier run or session may have processed, and how its answer was lost.
    maybe_sent: dict[tuple[str, str], str]
    rejects_path: Path | None
    started_at: str
    started_monotonic: float
    validated: PlanSummary  # what validation found, counted before the rows were parked

    def started_fields(self) -> dict[str, Any]:
        """The `run.started` event's figures (it is logged once the org is known)."""
        return {
            "rows": self.source.row_count,
            "pairs": self.plan.figures.pairs,
            "requests_planned": self.plan.requests,
            "quota": str(self.job.api.quota),
            "expected_send_s": round(self.job.api.quota.seconds_for(self.plan.requests), 1),
            "resumed": self.command == "resume",
        }


@dataclass(frozen=True, slots=True)
class Sent:
    """What sending did: the live figures, why it stopped early (None: it did not), the org."""

    stats: RunStats
    stop_reason: str | None
    abort: RunStopped | None
    org: OrgGuard


def execute(
    job: Job,
    *,
    run_dir: Path | None = None,
    parent: str | None = None,
    progress: Any = None,
    maybe_sent: set[tuple[str, str]] | None = None,
    wait_for_lock: bool = False,
    confirm: Confirm | None = None,
) -> RunResult:
    """Run the job end to end and write every result file. Raises BatcherError before sending.

    `run_dir`: a run folder made beforehand (by `retry`), or an earlier run's folder to resume:
    a folder with a manifest is resumed, and its confirmed pairs are not sent again.
    `maybe_sent`: pairs an earlier run may have delinked without hearing so (for `retry`).
    `wait_for_lock`: when another run holds the job's or the API key's lock, wait for it
    instead of failing (RunLockedError, exit 2).
    `confirm`: asked with the plan before anything is sent (the terminal's question); False
    stops here (NotConfirmed, exit 2).
    """
    profile = None
    if job.api.is_simulator:
        from batcher.simulator.profile import load_profile

        profile = load_profile(job.simulator_profile)
    credentials = resolve_credentials(job, profile)
    check_output(job)  # an output bucket that cannot be reached: refused before anything is sent
    source = load_source(job, keep_pairs=False)
    preflight(job, source, confirm)
    run_id = run_dir.name if run_dir is not None else new_run_id()
    holder = {"job": job.name, "run_id": run_id}
    with holding(run_locks(job, credentials), holder, wait=wait_for_lock) as stale_locks:
        folder = RunDir(run_dir) if run_dir is not None else RunDir.create(job, run_id)
        logs.bind(job=job.name, run_id=folder.run_id)
        logs.open_run_log(folder.log_path, credentials.secrets())
        try:
            for stale in stale_locks:
                log.warning(
                    "run.lock_taken_over",
                    lock=stale.get("lock"),
                    previous_job=stale.get("job"),
                    previous_pid=stale.get("pid"),
                    previous_run_id=stale.get("run_id"),
                    previous_started_at=stale.get("started_at"),
                )
            prepared = prepare(
                job, profile, credentials, source, folder, parent, maybe_sent or set()
            )
            return finish(prepared, send(prepared, progress))
        finally:
            logs.close_run_log()


def run_locks(job: Job, credentials: Credentials) -> list[RunLock]:
    """The job's lock, then its API key's (an embedded simulator has a quota of its own)."""
    locks = [job_lock(job.name)]
    if not job.api.is_simulator:
        principal = credentials.username if credentials.kind == "basic" else credentials.client_key
        locks.append(api_key_lock(job.api.base_url, credentials.kind, principal))
    return locks


def prepare(
    job: Job,
    profile: Profile | None,
    credentials: Credentials,
    source: Source,
    folder: RunDir,
    parent: str | None,
    inherited_maybe_sent: set[tuple[str, str]],
) -> Prepared:
    """Record the run (job copy, manifest), read what a resumed run confirmed, plan the rest."""
    started_at = utc_now()
    t0 = time.monotonic()
    resuming = folder.has_manifest()
    if resuming:
        parent = folder.read_manifest().parent
    else:
        shutil.copyfile(job.path, folder.job_copy_path)
        folder.write_manifest(_manifest(job, folder.run_id, source, parent))
    confirmed = None
    maybe_sent = dict.fromkeys(inherited_maybe_sent, PARENT_RUN_LOST)
    if resuming:
        confirmed = confirmed_pairs(folder.journal_path)
        maybe_sent.update(
            dict.fromkeys(unconfirmed_intents(folder.journal_path, confirmed), EARLIER_SESSION_LOST)
        )
        log.info("run.resumed", confirmed_pairs=confirmed.height, maybe_sent_pairs=len(maybe_sent))
    rejects_path = write_rejects(source, folder)
    counted = plan_summary(job, folder.run_id, source, PlanFigures(0, 0, 0))
    # The rows wait on disk while their pairs are sent: memory holds the plan, not the input,
    # and a plan in input order reads its pairs from there as it sends them.
    source.park(folder.parked_rows_path)
    plan = _plan(folder, confirmed, job, source.counts()["valid"])
    if plan.spilled:
        log.info("plan.spilled", buckets=len(plan.spilled), pairs=plan.figures.pairs)
    return Prepared(
        job=job,
        profile=profile,
        credentials=credentials,
        source=source,
        folder=folder,
        command="resume" if resuming else ("retry" if parent else "run"),
        parent=parent,
        plan=plan,
        maybe_sent=maybe_sent,
        rejects_path=rejects_path,
        started_at=started_at,
        started_monotonic=t0,
        validated=with_plan(counted, job, plan.figures),
    )


def send(prepared: Prepared, progress: Any = None) -> Sent:
    """Send the plan through the quota, journalling every answer; handles interrupts."""
    job = prepared.job
    started = prepared.started_fields()
    # `run.started` names the org the run acts on, so it waits until the org is known:
    # from the OAuth token, or from the first answer (Basic auth's canary).
    org = OrgGuard(
        job.api.expect_org_id,
        on_settled=lambda o: log.info(
            "run.started", **started, org_id=o.org_id, till=o.till, org_seen_in=o.seen_in
        ),
    )
    journal = Journal(prepared.folder.journal_path)
    stats = RunStats(
        pairs_total=prepared.plan.figures.pairs, requests_planned=prepared.plan.requests
    )
    sender = Sender(
        job,
        prepared.plan.iter_requests(job.input.identifier),
        journal,
        stats=stats,
        maybe_sent=prepared.maybe_sent,
        org=org,
        resume_command=f"batcher resume {shlex.quote(str(prepared.folder.path))}",
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            result = runner.run(
                _run_with_progress(
                    job,
                    prepared.profile,
                    prepared.credentials,
                    sender,
                    org,
                    progress,
                    (journal, stats, lambda: sender.pacer.state),
                )
            )
    except (KeyboardInterrupt, asyncio.CancelledError):
        return Sent(stats, "interrupted twice: stopped at once", None, org)
    finally:
        journal.close()
    return Sent(result.stats, result.stop_reason, result.abort, org)


def finish(prepared: Prepared, sent: Sent) -> RunResult:
    """Assemble one outcome per row from the journal; write outcomes, failures, summary, report."""
    job, source, folder = prepared.job, prepared.source, prepared.folder
    stats, stop_reason = sent.stats, sent.stop_reason
    unsent = f"not sent: the run stopped ({stop_reason})" if stop_reason else None
    shutil.rmtree(folder.plan_path, ignore_errors=True)  # a plan spilled to disk: sent
    # Streamed a range of rows at a time; the journal is folded small once they are written.
    assembly = assemble_run(
        folder.journal_path,
        folder.parked_rows_path,
        source.columns,
        source.format,
        unsent,
        outcomes_path=folder.outcomes_path,
        failures_path=folder.failures_path(source.format),
        sheet=source.sheet,
        original_names=source.original_names,
        dialect=source.dialect,
    )
    counts, failures_path = assembly.counts, assembly.failures_path
    if sent.abort is not None:
        exit_code = sent.abort.exit_code  # 2 when refused before anything was sent
    else:
        exit_code = EXIT_STOPPED if stop_reason else exit_code_for(counts)
    elapsed_s = time.monotonic() - prepared.started_monotonic
    send_s = stats.elapsed_s() if stats.requests else 0.0
    validated = prepared.validated
    head = validated.plan_fields()
    head["counts"] = counts  # validate's counts (valid, rejected, duplicate) go under `validation`
    summary = RunSummary(
        **head,
        command=prepared.command,
        parent=prepared.parent,
        started_at=prepared.started_at,
        finished_at=utc_now(),
        validation=validated.counts,
        codes=assembly.codes,
        requests_sent=stats.requests,
        responses_by_status={str(k): v for k, v in sorted(stats.responses.items())},
        throttled=stats.throttles,
        retries=stats.retries,
        splits=stats.splits,
        transport_errors=stats.transport_errors,
        token_refreshes=stats.token_refreshes,
        outages=stats.outages,
        size_refusals=stats.size_refusals,
        learned_customers_per_request=stats.learned_customers_per_request,
        elapsed_seconds=round(elapsed_s, 3),
        send_seconds=round(send_s, 3),
        achieved_requests_per_second=round(stats.requests / send_s, 3) if send_s else 0.0,
        quota_requests_per_second=round(job.api.quota.rate_per_s, 3),
        quota_period_seconds=job.api.quota.period_s,
        quota_use=quota_use(stats.timeline, job.api.quota),
        latency_ms=_percentiles(stats.latencies_ms),
        timeline=[
            {"second": s, "requests": v[0], "throttled": v[1]}
            for s, v in sorted(stats.timeline.items())
        ],
        # Where the run acted: the org and till the API reported (token or headers).
        org=sent.org.as_json(),
        unmatched_answers=stats.unmatched_answers,
        stopped=stop_reason,
        abort=sent.abort.message if sent.abort else None,
        exit_code=exit_code,
        files={
            "outcomes": str(folder.outcomes_path),
            "failures": str(failures_path),
            "rejects": str(prepared.rejects_path) if prepared.rejects_path else None,
            "summary": str(folder.summary_path),
            "log": str(folder.log_path),
        },
    )
    assert sum(counts.values()) == source.row_count, "every row has exactly one outcome"
    folder.write_summary(summary)
    write_report(summary, folder.report_path)
    if not upload_results_or_log(job, folder.path):  # not in the bucket: it needs a look
        exit_code = max(exit_code, 1)
    log.info("run.finished", counts=counts, exit_code=exit_code, elapsed_s=round(elapsed_s, 3))
    return RunResult(folder.path, exit_code, summary)


async def _run_with_progress(
    job: Job,
    profile: Profile | None,
    credentials: Credentials,
    sender: Sender,
    org: OrgGuard,
    progress: Any,
    watch: tuple[Any, ...],
) -> SendResult:
    if progress is None:
        return await _send_all(job, profile, credentials, sender, org)
    # watch = (journal, stats, pace): what the display reads (see present.progress.Progress.live).
    async with progress.live(*watch):
        return await _send_all(job, profile, credentials, sender, org)


def quota_use(timeline: dict[int, list[int]], quota: Quota) -> dict[str, Any]:
    """The most requests sent in any window of the quota's period (whole seconds of the run).

    An average over a short run says nothing of the quota (three requests in 20 ms are "150
    per second"); the busiest window is what the API counts.
    """
    window = max(1, round(quota.period_s))
    per_second = [0] * (max(timeline) + 1 if timeline else 0)
    for second, (requests, _) in timeline.items():
        per_second[second] = requests
    busiest = running = 0
    for i, n in enumerate(per_second):
        running += n - (per_second[i - window] if i >= window else 0)
        busiest = max(busiest, running)
    return {
        "window_seconds": window,
        "busiest_window_requests": busiest,
        "quota_requests": quota.requests,
        "percent": round(100 * busiest / quota.requests, 1) if quota.requests else None,
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1], 2)}


def _manifest(job: Job, run_id: str, source: Source, parent: str | None) -> Manifest:
    """What a resume needs: the job as it was, the inputs' fingerprints, the plan's parameters."""
    return Manifest(
        run_id=run_id,
        job=job.name,
        job_file=str(job.path),
        parent=parent,
        created_at=utc_now(),
        settings=job.settings_for_display(),
        input=ManifestInput(
            pattern=input_location(job),
            columns=source.columns,
            columns_as_written=[source.original_names.get(c, c) for c in source.columns],
            format=source.format,
            files=input_file_facts(source),
            rows=source.row_count,
            sheet=source.sheet,
        ),
        output_dir=str(job.output_dir),
        output_url=job.output_url,
        base_url=job.api.base_url,
        plan=PlanParameters(
            identifier=job.input.identifier,
            customers_per_request=job.api.customers_per_request,
            programs_per_customer=job.api.programs_per_customer,
        ),
    )
