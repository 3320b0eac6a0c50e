"""The job file: load a TOML job, check every key, and freeze it into one settings object."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from batcher.errors import JobError
from batcher.settings import (
    Problem,
    Table,
    convert,
    key,
    keys,
    parse_rate,
    read_toml,
    required,
    sections,
)
from batcher.settings import Quota as Quota  # public here: batcher.job.Quota

Identifier = Literal["mobile", "email", "externalId", "id"]
IDENTIFIERS: tuple[Identifier, ...] = ("mobile", "email", "externalId", "id")
# How the API is authenticated; the credentials themselves come only from the environment.
AuthKind = Literal["basic", "oauth"]
SIMULATOR = "simulator"

_BASE_URL = 'an https:// URL such as "https://eu.api.capillarytech.com", or "simulator"'
_RATE = 'a quota such as "1000/minute" or "20/second"'
# Keys that look like they hold a secret are refused by name, with a pointer to the environment.
_SECRET_KEY_RE = re.compile(r"pass(word)?|secret|token|api_?key|client_?key|md5|credential", re.I)
# storage_options keys that would carry a cloud credential (the values belong in the environment).
_STORAGE_SECRET_RE = re.compile(
    r"secret|token|pass(word)?|sas|access_key|account_key|master_key|service_account|"
    r"credential|client_id|bearer|authorization|session",
    re.I,
)
# Object-storage URL schemes (kept in step with batcher/input/cloud.py, which reads them).
_OBJECT_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "adl", "https", "http")


def _is_object_url(text: str) -> bool:
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in _OBJECT_SCHEMES


def _check_output_url(path: Path, url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise _fail(
            path,
            "output.dir",
            "carries credentials or a query string (a signed URL holds a secret)",
            "the plain bucket URL; credentials come from the cloud's environment variables",
        )
    if parts.scheme.lower() in ("http", "https") or not parts.netloc:
        raise _fail(
            path,
            "output.dir",
            f"has a bad value {url!r}",
            "a local folder, or an s3://, gs:// or az:// URL with a bucket (https:// is read-only)",
        )


@dataclass(frozen=True, slots=True)
class InputSettings:
    path: str
    identifier: Identifier
    identifier_column: str
    program_column: str
    separator: str
    encoding: str
    # Mobiles: a national number (this many digits, or one more with a leading trunk 0) is
    # completed with the country code before validation, deduplication and sending.
    default_country_code: str | None = None
    national_mobile_digits: int = 10
    # Non-secret object-storage settings (region, endpoint...), for s3://, gs://, az:// inputs.
    storage_options: dict[str, str] = field(default_factory=dict)
    # An Excel input's sheet: its name, or its index from 0 (default the first).
    sheet: str | int = 0


@dataclass(frozen=True, slots=True)
class ApiSettings:
    base_url: str
    auth: AuthKind
    quota: Quota
    max_in_flight: int
    customers_per_request: int
    programs_per_customer: int
    timeout_s: float
    connect_timeout_s: float
    throttle_statuses: tuple[int, ...]
    token_refresh_margin_s: float
    expect_org_id: int | None = None  # refuse to act on any other org

    @property
    def is_simulator(self) -> bool:
        return self.base_url == SIMULATOR


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    # An outage (every request failing) longer than this stops the run, resumable (exit 3).
    give_up_after_s: float = 600.0


@dataclass(frozen=True, slots=True)
class SafetySettings:
    """Guardrails: stop when nearly every answer fails; refuse plans larger than a limit."""

    stop_if_failed_share: float = 0.9  # 1.0: never stop on failures
    stop_after_pairs: int = 200  # answered pairs before the share is judged
    max_pairs: int | None = None  # refuse a plan with more valid pairs than this

    @property
    def breaker_on(self) -> bool:
        return self.stop_if_failed_share < 1.0


NotifyEvent = Literal["finished", "stopped", "failed"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("finished", "stopped", "failed")


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """[notify]: Apprise URLs told how a run ended. `${VAR}` in a URL is read from the
    environment when the message is sent, so the secret never reaches a file."""

    urls: tuple[str, ...] = ()
    on: tuple[NotifyEvent, ...] = NOTIFY_EVENTS


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """[metrics]: a Prometheus textfile (node_exporter's collector) and/or a Pushgateway."""

    textfile: Path | None = None
    pushgateway: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """Everything a run needs to know, resolved: paths are absolute."""

    name: str
    path: Path
    input: InputSettings
    api: ApiSettings
    retry: RetrySettings
    output_dir: Path
    simulator_profile: Path | None
    safety: SafetySettings = SafetySettings()
    # [output] dir as an object-storage URL: results are uploaded there, `output_dir` is then
    # the local staging folder (journal, lock and every file, before the upload).
    output_url: str | None = None
    notify: NotifySettings = NotifySettings()
    metrics: MetricsSettings = MetricsSettings()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def input_pattern(self) -> Path:
        """The input path or glob, absolute (relative paths are relative to the job file)."""
        p = Path(self.input.path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def with_overrides(
        self,
        *,
        input_path: str | None = None,
        base_url: str | None = None,
        output_dir: str | None = None,
        max_pairs: int | None = None,
    ) -> Job:
        """Apply command-line overrides; CLI paths are relative to the working directory."""
        job = self
        if max_pairs is not None:
            job = replace(job, safety=replace(job.safety, max_pairs=max_pairs))
        if input_path is not None:
            path = input_path if _is_object_url(input_path) else str(Path(input_path).resolve())
            job = replace(job, input=replace(job.input, path=path))
        if base_url is not None:
            _check_base_url(self.path, base_url)
            job = replace(job, api=replace(job.api, base_url=base_url.rstrip("/")))
        if output_dir is not None:
            if _is_object_url(output_dir):
                _check_output_url(self.path, output_dir)
                job = replace(job, output_url=output_dir.rstrip("/"))
            else:
                job = replace(job, output_dir=Path(output_dir).resolve(), output_url=None)
        return job

    def settings_for_display(self) -> dict[str, Any]:
        """The job's settings as plain values (there are no secrets in a job)."""
        return {
            "name": self.name,
            "job_file": str(self.path),
            "input": {
                "path": self.input.path,
                "identifier": self.input.identifier,
                "identifier_column": self.input.identifier_column,
                "program_column": self.input.program_column,
                "separator": self.input.separator,
                "encoding": self.input.encoding,
                "default_country_code": self.input.default_country_code,
                "national_mobile_digits": self.input.national_mobile_digits,
                "storage_options": dict(self.input.storage_options),
                "sheet": self.input.sheet,
            },
            "api": {
                "base_url": self.api.base_url,
                "auth": self.api.auth,
                "rate": str(self.api.quota),
                "max_in_flight": self.api.max_in_flight,
                "customers_per_request": self.api.customers_per_request,
                "programs_per_customer": self.api.programs_per_customer,
                "timeout_seconds": self.api.timeout_s,
                "connect_timeout_seconds": self.api.connect_timeout_s,
                "throttle_statuses": list(self.api.throttle_statuses),
                "expect_org_id": self.api.expect_org_id,
            },
            "safety": {
                "stop_if_failed_share": self.safety.stop_if_failed_share,
                "stop_after_pairs": self.safety.stop_after_pairs,
                "max_pairs": self.safety.max_pairs,
            },
            "retry": {
                "max_attempts": self.retry.max_attempts,
                "backoff_base_seconds": self.retry.backoff_base_s,
                "backoff_max_seconds": self.retry.backoff_max_s,
                "give_up_after_seconds": self.retry.give_up_after_s,
            },
            "output": {
                "dir": self.output_url or str(self.output_dir),
                "staging": str(self.output_dir),
            }
            if self.output_url
            else {"dir": str(self.output_dir)},
            "simulator": {
                "profile": str(self.simulator_profile) if self.simulator_profile else None
            },
            # Only when set, so summaries of jobs without them are as before. Notify URLs by
            # scheme only: even unexpanded, a URL may carry a token written into the job.
            **(
                {
                    "notify": {
                        "services": [u.partition(":")[0] for u in self.notify.urls],
                        "on": list(self.notify.on),
                    }
                }
                if self.notify.urls
                else {}
            ),
            **(
                {
                    "metrics": {
                        "textfile": str(self.metrics.textfile) if self.metrics.textfile else None,
                        "pushgateway": self.metrics.pushgateway,
                    }
                }
                if self.metrics.textfile or self.metrics.pushgateway
                else {}
            ),
        }


# --- the file's schema (batcher/settings.py: how a mistake becomes a Problem) -----------------

_SECONDS = "a positive number of seconds"
_COLUMN = "a column name"
_Seconds = Annotated[float, key(_SECONDS, gt=0)]


class _Input(Table):
    path: Annotated[
        str,
        key(
            "a CSV, Parquet or Excel (.xlsx) file, or a glob of them; or an s3://, gs://, az:// "
            "URL (globs allowed) or an https:// URL of one file",
            min_length=1,
        ),
    ]
    identifier: Annotated[Identifier, key("one of mobile, email, externalId, id")] = "mobile"
    identifier_column: Annotated[str, key(_COLUMN, min_length=1)] | None = None
    program_column: Annotated[str, key(_COLUMN, min_length=1)] = "partner_program_name"
    separator: Annotated[
        str, key("a single character such as ',' or ';'", min_length=1, max_length=1)
    ] = ","
    encoding: Annotated[
        str,
        key(
            "utf8 (default), utf8-lossy, or a Python codec name such as cp1252 or latin-1",
            min_length=1,
        ),
    ] = "utf8"
    default_country_code: (
        Annotated[
            str,
            key(
                'the country code national mobiles are completed with, 1 to 4 digits such as "91" '
                "(only with identifier = mobile)",
                pattern=r"^[1-9][0-9]{0,3}\Z",
            ),
        ]
        | None
    ) = None
    national_mobile_digits: (
        Annotated[
            int,
            key(
                "the length of a national mobile number without its trunk 0, 4 to 14 (default 10)",
                ge=4,
                le=14,
            ),
        ]
        | None
    ) = None
    storage_options: Annotated[
        dict[str, str | bool | int],
        key(
            'a table of non-secret object-storage settings such as { aws_region = "eu-west-1" } '
            "(credentials come from the environment)"
        ),
    ] = msgspec.field(default_factory=dict)
    sheet: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | Annotated[int, msgspec.Meta(ge=0)],
        key("an Excel sheet's name, or its index from 0 (default 0, the first)"),
    ] = 0


class _Api(Table):
    base_url: Annotated[str, key(_BASE_URL)]
    auth: Annotated[AuthKind, key("basic or oauth")] = "basic"
    rate: Annotated[str, key(_RATE)] = "1000/minute"
    max_in_flight: Annotated[int, key("an integer from 1 to 256", ge=1, le=256)] = 8
    customers_per_request: Annotated[int, key("a positive integer", gt=0)] = 50
    programs_per_customer: Annotated[int, key("a positive integer", gt=0)] = 50
    timeout_seconds: _Seconds = 30.0
    connect_timeout_seconds: _Seconds = 10.0
    throttle_statuses: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=400, le=599)], ...],
        key("a list of HTTP statuses (integers 400-599), such as [429]"),
    ] = (429,)
    token_refresh_margin_seconds: Annotated[
        float, key("a non-negative number of seconds", ge=0)
    ] = 30.0
    expect_org_id: (
        Annotated[int, key("the org id the credentials must act on (a positive integer)", gt=0)]
        | None
    ) = None


class _Retry(Table):
    max_attempts: Annotated[int, key("an integer from 1 to 100", ge=1, le=100)] = 6
    backoff_base_seconds: _Seconds = 0.5
    backoff_max_seconds: _Seconds = 30.0
    give_up_after_seconds: _Seconds = 600.0


class _Safety(Table):
    stop_if_failed_share: Annotated[
        float,
        key("a share above 0 and at most 1, such as 0.9 (1 turns the early stop off)", gt=0, le=1),
    ] = 0.9
    stop_after_pairs: Annotated[int, key("a positive number of answered pairs", gt=0)] = 200
    max_pairs: Annotated[int, key("a positive number of pairs", gt=0)] | None = None


class _Output(Table):
    dir: Annotated[
        str,
        key(
            "a folder path (relative to the working directory), or an s3://, gs://, az:// URL "
            "to upload the results to",
            min_length=1,
        ),
    ] = "output"
    staging_dir: (
        Annotated[
            str,
            key("the local folder a run works in when dir is a URL (default output)", min_length=1),
        ]
        | None
    ) = None


class _Simulator(Table):
    profile: (
        Annotated[str, key("a simulator profile TOML file, relative to the job file", min_length=1)]
        | None
    ) = None


class _Notify(Table):
    urls: Annotated[
        tuple[Annotated[str, msgspec.Meta(pattern="://")], ...],
        key(
            'a list of Apprise URLs such as ["slack://${SLACK_TOKEN}/#ops", '
            '"json://host:8080/hook"]; secrets as ${VAR}, read from the environment'
        ),
    ] = ()
    on: Annotated[
        tuple[NotifyEvent, ...],
        key('a list of "finished", "stopped", "failed" (default all three)'),
    ] = NOTIFY_EVENTS


class _Metrics(Table):
    textfile: (
        Annotated[
            str,
            key(
                "a .prom file path for node_exporter's textfile collector, relative to the job "
                "file",
                pattern=r"\.prom\Z",
            ),
        ]
        | None
    ) = None
    pushgateway: (
        Annotated[
            str,
            key(
                'a Prometheus Pushgateway URL such as "http://pushgateway:9091"',
                pattern="^https?://",
            ),
        ]
        | None
    ) = None


class _JobFile(Table):
    name: Annotated[
        str,
        key(
            "a name of letters, digits, '.', '_' or '-' (at most 100, starting with a letter or "
            "digit); it becomes a folder under the output dir",
            pattern=r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z",
        ),
    ]
    input: _Input
    api: _Api
    safety: _Safety = msgspec.field(default_factory=_Safety)
    retry: _Retry = msgspec.field(default_factory=_Retry)
    output: _Output = msgspec.field(default_factory=_Output)
    simulator: _Simulator = msgspec.field(default_factory=_Simulator)
    notify: _Notify = msgspec.field(default_factory=_Notify)
    metrics: _Metrics = msgspec.field(default_factory=_Metrics)


def _fail(path: Path, key: str, problem: str, allowed: str | None = None) -> JobError:
    text = f"Job file {path}: {problem}"
    if key:
        text = f"Job file {path}: key '{key}' {problem}"
    return JobError(text + (f"; allowed: {allowed}." if allowed else "."))


def _error(path: Path, p: Problem) -> JobError:
    """A Problem in today's words: file, dotted key, what is wrong, what is allowed."""
    section, _, name = p.key.rpartition(".")
    if p.kind == "unknown" and not section and isinstance(p.value, dict):
        # A table the schema does not know: usually a typo, so name the likely one.
        import difflib

        known = list(sections(_JobFile))
        guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean [{guess[0]}]?" if guess else "."
        listed = ", ".join(f"[{s}]" for s in known)
        return JobError(
            f"Job file {path}: section [{name}] is not a known section; allowed sections: "
            f"{listed}{hint}"
        )
    if p.kind == "unknown" and _SECRET_KEY_RE.search(name):
        return JobError(
            f"Job file {path}: key '{p.key}' looks like a secret, and secrets never go in "
            "a job file.",
            hint="Set them in the environment instead: CAPILLARY_USERNAME and "
            'CAPILLARY_PASSWORD (or CAPILLARY_PASSWORD_MD5) for auth = "basic", '
            'CAPILLARY_CLIENT_KEY and CAPILLARY_CLIENT_SECRET for auth = "oauth".',
        )
    if p.kind == "unknown":
        prefix = f"{section}." if section else ""
        known = [k for k in keys(p.table) if k not in sections(p.table)]
        return _fail(
            path, p.key, "is not a known key", ", ".join(sorted(prefix + k for k in known))
        )
    if p.is_section and p.kind == "missing":
        needed = " and ".join(required(sections(p.table)[name]))
        return _fail(path, "", f"has no [{name}] table", f"[{name}] with at least {needed}")
    if p.is_section:
        return _fail(path, p.key, f"must be a table ([{p.key}])")
    if p.kind == "missing":
        return _fail(path, p.key, "is missing", p.allowed)
    if p.kind == "type":
        return _fail(path, p.key, f"has the wrong type ({type(p.value).__name__})", p.allowed)
    return _fail(path, p.key, f"has a bad value {p.value!r}", p.allowed)


def _is_loopback(host: str | None) -> bool:
    # An address, not a prefix: "127.0.0.1.nip.io" is a public name that resolves anywhere.
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_base_url(path: Path, url: str) -> None:
    from urllib.parse import urlsplit

    if url == SIMULATOR:
        return
    allowed = _BASE_URL
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here, not at the first request
    except ValueError:
        raise _fail(path, "api.base_url", "is not a valid URL", allowed) from None
    # Userinfo may hold a password, and a query or fragment a key: the URL is echoed in no
    # message and written nowhere until it is known to be the host only.
    if "@" in parts.netloc:
        raise _fail(
            path,
            "api.base_url",
            "holds a user name or password (user:password@host); it would be written to "
            "summary.json, job.toml and manifest.json",
            allowed + "; credentials come only from the environment (CAPILLARY_USERNAME and "
            "CAPILLARY_PASSWORD, or CAPILLARY_CLIENT_KEY and CAPILLARY_CLIENT_SECRET)",
        )
    if "?" in url or "#" in url:
        which = "a query (?...)" if "?" in url.split("#", 1)[0] else "a fragment (#...)"
        raise _fail(
            path,
            "api.base_url",
            f"has {which}: it must be the host only ({parts.scheme}://{parts.netloc})",
            allowed,
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(path, "api.base_url", f"has a bad value {url!r}", allowed)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise _fail(
            path,
            "api.base_url",
            f"is plain http to a non-loopback host ({parts.hostname}): credentials and customer "
            "data would cross the network unencrypted",
            "https:// for any remote host; http:// only for 127.0.0.1, ::1 or localhost",
        )
    if parts.path not in ("", "/"):
        raise _fail(
            path,
            "api.base_url",
            f"must be the host only, without a path ({url!r}); batcher adds "
            "/v2/partnerProgram/deLinkCustomer itself",
            allowed,
        )


def load_job(path: str | Path, *, as_path: Path | None = None) -> Job:
    """Read and check a job file; every problem is a JobError naming the file and the key.

    `as_path`: read `path` (a run folder's copy) but resolve relative paths as if the file
    still stood at `as_path`, where the original was.
    """
    job_path = Path(path).expanduser().resolve()
    raw = read_toml(job_path, "Job file", JobError, example="jobs/demo.toml")
    if as_path is not None:
        job_path = as_path
    try:
        f = convert(raw, _JobFile)
    except Problem as p:
        raise _error(job_path, p) from None
    inp, api, retry, output = f.input, f.api, f.retry, f.output

    base_url = api.base_url.rstrip("/") if api.base_url != SIMULATOR else SIMULATOR
    _check_base_url(job_path, base_url)
    try:
        quota = parse_rate(api.rate)
    except ValueError:
        raise _fail(job_path, "api.rate", f"has a bad value {api.rate!r}", _RATE) from None
    if retry.backoff_max_seconds < retry.backoff_base_seconds:
        raise _fail(
            job_path,
            "retry.backoff_max_seconds",
            f"({retry.backoff_max_seconds:g}) is below retry.backoff_base_seconds "
            f"({retry.backoff_base_seconds:g})",
            "a value at least the base",
        )
    for name in ("default_country_code", "national_mobile_digits"):
        if getattr(inp, name) is not None and inp.identifier != "mobile":
            raise _fail(
                job_path,
                f"input.{name}",
                f"applies to mobiles only, and input.identifier is {inp.identifier!r}",
                'remove it, or set input.identifier = "mobile"',
            )
    for name in inp.storage_options:
        if _STORAGE_SECRET_RE.search(name):
            raise JobError(
                f"Job file {job_path}: key 'input.storage_options.{name}' looks like a secret, "
                "and secrets never go in a job file.",
                hint="Set the cloud's standard environment variables instead (for S3: "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE).",
            )
    output_dir_text, output_url = output.dir, None
    if _is_object_url(output.dir):
        _check_output_url(job_path, output.dir)
        output_dir_text, output_url = output.staging_dir or "output", output.dir.rstrip("/")
    elif output.staging_dir is not None:
        raise _fail(
            job_path,
            "output.staging_dir",
            "is only for an output.dir that is an object-storage URL",
            "remove it, or set output.dir to an s3://, gs:// or az:// URL",
        )
    profile: Path | None = None
    if f.simulator.profile is not None:
        profile = (job_path.parent / f.simulator.profile).resolve()
        if not profile.is_file():
            raise _fail(
                job_path,
                "simulator.profile",
                f"names a file that does not exist ({profile})",
                "a simulator profile TOML file, relative to the job file",
            )

    return Job(
        name=f.name,
        path=job_path,
        input=InputSettings(
            path=inp.path,
            identifier=inp.identifier,
            identifier_column=inp.identifier_column or inp.identifier,
            program_column=inp.program_column,
            separator=inp.separator,
            encoding=inp.encoding,
            default_country_code=inp.default_country_code,
            national_mobile_digits=inp.national_mobile_digits or 10,
            storage_options={
                k: (str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in inp.storage_options.items()
            },
            sheet=inp.sheet,
        ),
        api=ApiSettings(
            base_url=base_url,
            auth=api.auth,
            quota=quota,
            max_in_flight=api.max_in_flight,
            customers_per_request=api.customers_per_request,
            programs_per_customer=api.programs_per_customer,
            timeout_s=api.timeout_seconds,
            connect_timeout_s=api.connect_timeout_seconds,
            throttle_statuses=api.throttle_statuses,
            token_refresh_margin_s=api.token_refresh_margin_seconds,
            expect_org_id=api.expect_org_id,
        ),
        retry=RetrySettings(
            max_attempts=retry.max_attempts,
            backoff_base_s=retry.backoff_base_seconds,
            backoff_max_s=retry.backoff_max_seconds,
            give_up_after_s=retry.give_up_after_seconds,
        ),
        output_dir=Path(output_dir_text).expanduser().resolve(),
        simulator_profile=profile,
        safety=SafetySettings(
            stop_if_failed_share=f.safety.stop_if_failed_share,
            stop_after_pairs=f.safety.stop_after_pairs,
            max_pairs=f.safety.max_pairs,
        ),
        output_url=output_url,
        notify=NotifySettings(urls=f.notify.urls, on=f.notify.on),
        metrics=MetricsSettings(
            textfile=(job_path.parent / f.metrics.textfile).resolve()
            if f.metrics.textfile is not None
            else None,
            pushgateway=f.metrics.pushgateway,
        ),
    )
