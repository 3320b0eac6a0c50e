"""Simulator profiles: one TOML file says how the stand-in API behaves.

Every *unknown* of the API contract (docs/api-contract.md) is a knob here. A profile is a frozen
value; tests build variants in code with `profile_from_dict({...})` or `dataclasses.replace`.

```toml
seed = 7
response_shape = "current"          # or "legacy"
shuffle_items = false
max_customers_per_request = 50      # over it: 400, code 1060
max_programs_per_customer = 50      # over it: 400, code 2008
mobile_min_digits = 10              # a mobile outside this length, or not digits: 1001
mobile_max_digits = 15
unknown_customer_programs = "empty" # or "echo": program items of an unknown customer, each 8015
default_country_code = "91"         # absent: mobiles are looked up as sent. Set: a national
national_mobile_digits = 10         # mobile (this long, or a trunk 0 and this long) gets the code
                                    # in front first, as an org resolves it; answers carry the
                                    # stored form (919800000001 for a sent 09800000001)
stored_email_case = "lower"         # or "mixed": generated emails stored as Customer7@Example.com,
                                    # and answered so (lookups ignore case either way)
answer_identifiers = "stored"       # or "id": a found customer is answered by its id alone
org_id = 50001                      # the org it acts on: org_id header, org_id claim of tokens
org_headers = true                  # false: answers carry no org_id / till headers

[auth]
basic_username = "demo.till"
basic_password = "demo-password"
oauth_key = "demo-key"
oauth_secret = "demo-secret"
token_ttl_seconds = 300
expired_token_status = 401          # or 498; the body code is 498 "Token expired at ..." either way

[state]                             # generated customers (see state.py), or file = "links.csv"
customers = 2000
program_count = 5                   # or programs = ["gold", "silver"]
link_probability = 0.9

[quota]
rate = "3000/minute"                # absent: unlimited
window = "fixed"                    # or "sliding"
status = 429
retry_after = "seconds"             # or "http-date", "none"
body = "json"                       # or "html", "empty"

[slowdown]                          # the quota drops mid-run
after_requests = 1000               # and/or after_seconds = 30
rate = "10/second"

[latency]
fixed_ms = 20
spread_ms = 60

[faults]                            # probabilities per request unless said otherwise
throttle = 0.02                     # a 429 (as [quota] answers it) whatever the pace
server_error = 0.02
server_error_statuses = [500, 502, 503]
server_error_html_share = 0.5
hang = 0.0                          # never answers (until the client gives up or we stop)
hang_seconds = 3600
disconnect_before = 0.0             # connection closed before the delink is processed
disconnect_after = 0.0              # ... after it was processed: the response is lost
malformed_json = 0.0                # processed, then a truncated JSON body
item_transient = 0.0                # per program item: 521 or 2010, not processed
item_transient_codes = [521, 2010]
item_omitted = 0.0                  # per program item: left out of the response
item_omitted_processed_share = 0.5  # ... and of those, this share was processed anyway
poison_identifiers = []             # a request holding one answers a whole-request 400
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from batcher.errors import JobError
from batcher.settings import (
    Problem,
    Quota,
    Table,
    convert,
    key,
    keys,
    parse_rate,
    read_toml,
    sections,
)

PROFILES_DIR = Path(__file__).parent / "profiles"
DEMO_PROFILE = PROFILES_DIR / "demo.toml"


class ProfileError(JobError):
    """A simulator profile is unusable (exit 2)."""


# A quota: `requests` per `period_s` seconds, parsed by the same parser as the job's rate.
Rate = Quota


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the simulator accepts; secrets stay out of repr."""

    basic_username: str = "demo.till"
    basic_password: str = field(default="demo-password", repr=False)
    oauth_key: str = "demo-key"
    oauth_secret: str = field(default="demo-secret", repr=False)
    token_ttl_s: float = 300.0
    expired_token_status: int = 401


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Generated customers (`customers`, `programs`, `link_probability`) or a file of links."""

    customers: int = 2000
    programs: tuple[str, ...] | None = None  # None: partner-01..05, or those in the file
    link_probability: float = 1.0
    file: Path | None = None  # absolute; CSV or Parquet of (id, mobile, email, externalId, program)


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    rate: Rate | None = None  # None: unlimited
    window: str = "fixed"  # fixed | sliding
    status: int = 429
    retry_after: str = "seconds"  # seconds | http-date | none
    body: str = "json"  # json | html | empty


@dataclass(frozen=True, slots=True)
class SlowdownSettings:
    """After `after_requests` delink requests or `after_s` seconds, the quota becomes `rate`."""

    rate: Rate | None = None
    after_requests: int | None = None
    after_s: float | None = None


@dataclass(frozen=True, slots=True)
class LatencySettings:
    fixed_ms: float = 0.0
    spread_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Probabilities of trouble; all zero means a well-behaved server."""

    throttle: float = 0.0
    server_error: float = 0.0
    server_error_statuses: tuple[int, ...] = (500, 502, 503)
    server_error_html_share: float = 0.5
    hang: float = 0.0
    hang_s: float = 3600.0
    disconnect_before: float = 0.0
    disconnect_after: float = 0.0
    malformed_json: float = 0.0
    item_transient: float = 0.0
    item_transient_codes: tuple[int, ...] = (521, 2010)
    item_omitted: float = 0.0
    item_omitted_processed_share: float = 0.5
    poison_identifiers: frozenset[str] = frozenset()

    @property
    def any_request_fault(self) -> bool:
        return (
            self.throttle
            + self.server_error
            + self.hang
            + self.disconnect_before
            + self.disconnect_after
            + self.malformed_json
        ) > 0


@dataclass(frozen=True, slots=True)
class Profile:
    seed: int = 0
    response_shape: str = "current"  # current | legacy
    shuffle_items: bool = False
    max_customers_per_request: int = 50
    max_programs_per_customer: int = 50
    mobile_min_digits: int = 10
    mobile_max_digits: int = 15
    unknown_customer_programs: str = "empty"  # empty | echo
    default_country_code: str | None = None  # resolve national mobiles with it (see state.py)
    national_mobile_digits: int = 10
    stored_email_case: str = "lower"  # lower | mixed
    answer_identifiers: str = "stored"  # stored | id
    org_id: int = 50001
    org_headers: bool = True
    credentials: Credentials = field(default_factory=Credentials)
    state: StateSettings = field(default_factory=StateSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    slowdown: SlowdownSettings = field(default_factory=SlowdownSettings)
    latency: LatencySettings = field(default_factory=LatencySettings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    source: Path | None = None  # the TOML file it came from, if any

    def replace(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **changes)


# --- the file's schema (batcher/settings.py: how a mistake becomes a Problem) -----------------

_P = "a probability from 0 to 1"
Probability = Annotated[float, key(_P, ge=0, le=1)]
Text = Annotated[str, key("a non-empty string", min_length=1)]
Flag = Annotated[bool, key("true or false")]
Positive = Annotated[int, key("a positive integer", ge=1, le=1_000_000)]
MobileDigits = Annotated[int, key("an integer from 1 to 32", ge=1, le=32)]
_RATE = 'a quota such as "3000/minute" or "50/second"'


class _Auth(Table):
    basic_username: Text = "demo.till"
    basic_password: Text = "demo-password"
    oauth_key: Text = "demo-key"
    oauth_secret: Text = "demo-secret"
    token_ttl_seconds: Annotated[
        float, key("a positive number of seconds", ge=1e-3, le=10 * 365 * 86400)
    ] = 300.0
    expired_token_status: Annotated[Literal[401, 498], key("401 or 498")] = 401


class _State(Table):
    customers: Annotated[int, key("an integer from 0 to 100000000", ge=0, le=100_000_000)] = 2000
    programs: (
        Annotated[
            tuple[Annotated[str, msgspec.Meta(min_length=1)], ...],
            key("a non-empty list of program names", min_length=1),
        ]
        | None
    ) = None
    program_count: Annotated[int, key("an integer from 1 to 1000", ge=1, le=1000)] | None = None
    link_probability: Probability = 1.0
    file: (
        Annotated[str, key("a CSV or Parquet file of links, relative to the profile", min_length=1)]
        | None
    ) = None


class _Quota(Table):
    rate: Annotated[str, key(_RATE)] | None = None
    window: Annotated[Literal["fixed", "sliding"], key("fixed or sliding")] = "fixed"
    status: Annotated[int, key("an HTTP status from 400 to 599", ge=400, le=599)] = 429
    retry_after: Annotated[
        Literal["seconds", "http-date", "none"], key("seconds, http-date or none")
    ] = "seconds"
    body: Annotated[Literal["json", "html", "empty"], key("json, html or empty")] = "json"


class _Slowdown(Table):
    rate: Annotated[str, key('a quota such as "10/second"')] | None = None
    after_requests: Annotated[int, key("a non-negative integer", ge=0, le=2**62)] | None = None
    after_seconds: (
        Annotated[float, key("a non-negative number of seconds", ge=0, le=1e9)] | None
    ) = None


class _Latency(Table):
    fixed_ms: Annotated[float, key("a number of milliseconds from 0 to 600000", ge=0, le=6e5)] = 0.0
    spread_ms: Annotated[float, key("a number of milliseconds from 0 to 600000", ge=0, le=6e5)] = (
        0.0
    )


class _Faults(Table):
    throttle: Probability = 0.0
    server_error: Probability = 0.0
    server_error_statuses: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=500, le=599)], ...],
        key("a list of HTTP statuses from 500 to 599", min_length=1),
    ] = (500, 502, 503)
    server_error_html_share: Probability = 0.5
    hang: Probability = 0.0
    hang_seconds: Annotated[float, key("a positive number of seconds", ge=1e-3, le=1e6)] = 3600.0
    disconnect_before: Probability = 0.0
    disconnect_after: Probability = 0.0
    malformed_json: Probability = 0.0
    item_transient: Probability = 0.0
    item_transient_codes: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=1, le=10**6)], ...],
        key("a list of item codes such as [521, 2010]", min_length=1),
    ] = (521, 2010)
    item_omitted: Probability = 0.0
    item_omitted_processed_share: Probability = 0.5
    poison_identifiers: Annotated[
        tuple[str | int, ...], key("a list of identifier values (strings)")
    ] = ()


class _ProfileFile(Table):
    seed: Annotated[int, key("an integer", ge=-(2**63), le=2**63 - 1)] = 0
    response_shape: Annotated[Literal["current", "legacy"], key("current or legacy")] = "current"
    shuffle_items: Flag = False
    max_customers_per_request: Positive = 50
    max_programs_per_customer: Positive = 50
    mobile_min_digits: MobileDigits = 10
    mobile_max_digits: MobileDigits = 15
    unknown_customer_programs: Annotated[Literal["empty", "echo"], key("empty or echo")] = "empty"
    default_country_code: (
        Annotated[
            str,
            key('a country code of 1 to 4 digits, such as "91"', pattern=r"^[1-9][0-9]{0,3}\Z"),
        ]
        | None
    ) = None
    national_mobile_digits: Annotated[int, key("an integer from 4 to 14", ge=4, le=14)] = 10
    stored_email_case: Annotated[Literal["lower", "mixed"], key("lower or mixed")] = "lower"
    answer_identifiers: Annotated[Literal["stored", "id"], key("stored or id")] = "stored"
    org_id: Annotated[int, key("a positive integer", ge=1, le=2**63 - 1)] = 50001
    org_headers: Flag = True
    auth: _Auth = msgspec.field(default_factory=_Auth)
    state: _State = msgspec.field(default_factory=_State)
    quota: _Quota = msgspec.field(default_factory=_Quota)
    slowdown: _Slowdown = msgspec.field(default_factory=_Slowdown)
    latency: _Latency = msgspec.field(default_factory=_Latency)
    faults: _Faults = msgspec.field(default_factory=_Faults)


def _fail(where: str, key: str, problem: str, allowed: str | None = None) -> ProfileError:
    text = (
        f"Simulator profile {where}: key '{key}' {problem}"
        if key
        else (f"Simulator profile {where}: {problem}")
    )
    return ProfileError(text + (f"; allowed: {allowed}." if allowed else "."))


def _error(where: str, p: Problem) -> ProfileError:
    """A Problem in today's words: file, dotted key, a bad value, what is allowed."""
    section, _, name = p.key.rpartition(".")
    tables = sections(p.table)
    if p.kind == "unknown":
        prefix = f"{section}." if section else ""
        listed = ", ".join(prefix + k for k in keys(p.table) if k not in tables)
        if not section:
            listed += ", and the tables " + ", ".join(f"[{s}]" for s in tables)
        return _fail(where, p.key, "is not a known key", listed)
    if name in tables:
        return _fail(
            where, p.key, "must be a table", f"[{name}] with keys " + ", ".join(keys(tables[name]))
        )
    return _fail(where, p.key, f"has a bad value {p.value!r}", p.allowed)


def _rate(where: str, key: str, text: str | None, allowed: str) -> Rate | None:
    """The job's rate parser (batcher/settings.py); the simulator counts whole requests."""
    if text is None:
        return None
    try:
        rate: Rate | None = parse_rate(text)
    except ValueError:
        rate = None
    if rate is None or not rate.requests.is_integer():
        raise _fail(where, key, f"has a bad value {text!r}", allowed)
    return rate


def profile_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Profile:
    """Build and check a profile from TOML-shaped data (tests build variants this way)."""
    where = str(source) if source is not None else "(in code)"
    try:
        f = convert(dict(data), _ProfileFile)
    except Problem as p:
        raise _error(where, p) from None
    state, faults = f.state, f.faults
    file: Path | None = None
    if state.file is not None:
        base = source.parent if source is not None else Path.cwd()
        file = (base / state.file).resolve()
        if file.suffix.lower() not in (".csv", ".parquet"):
            raise _fail(where, "state.file", f"is not a .csv or .parquet file ({file})")
        if not file.is_file():
            raise _fail(
                where,
                "state.file",
                f"names a file that does not exist ({file})",
                "a CSV or Parquet file of links, relative to the profile",
            )
    if state.programs is not None and state.program_count is not None:
        raise _fail(
            where,
            "state.program_count",
            "conflicts with state.programs",
            "one of programs or program_count",
        )
    if f.mobile_min_digits > f.mobile_max_digits:
        raise _fail(where, "mobile_min_digits", "is larger than mobile_max_digits")
    quota_rate = _rate(where, "quota.rate", f.quota.rate, _RATE)
    slow_rate = _rate(where, "slowdown.rate", f.slowdown.rate, 'a quota such as "10/second"')
    slow = f.slowdown
    if (slow_rate is None) != (slow.after_requests is None and slow.after_seconds is None):
        raise _fail(
            where,
            "slowdown.rate",
            "and after_requests/after_seconds go together",
            "rate together with after_requests and/or after_seconds",
        )
    return Profile(
        seed=f.seed,
        response_shape=f.response_shape,
        shuffle_items=f.shuffle_items,
        max_customers_per_request=f.max_customers_per_request,
        max_programs_per_customer=f.max_programs_per_customer,
        mobile_min_digits=f.mobile_min_digits,
        mobile_max_digits=f.mobile_max_digits,
        unknown_customer_programs=f.unknown_customer_programs,
        default_country_code=f.default_country_code,
        national_mobile_digits=f.national_mobile_digits,
        stored_email_case=f.stored_email_case,
        answer_identifiers=f.answer_identifiers,
        org_id=f.org_id,
        org_headers=f.org_headers,
        credentials=Credentials(
            basic_username=f.auth.basic_username,
            basic_password=f.auth.basic_password,
            oauth_key=f.auth.oauth_key,
            oauth_secret=f.auth.oauth_secret,
            token_ttl_s=f.auth.token_ttl_seconds,
            expired_token_status=f.auth.expired_token_status,
        ),
        state=StateSettings(
            customers=state.customers,
            programs=state.programs
            if state.program_count is None
            else tuple(f"partner-{j:02d}" for j in range(1, state.program_count + 1)),
            link_probability=state.link_probability,
            file=file,
        ),
        quota=QuotaSettings(
            rate=quota_rate,
            window=f.quota.window,
            status=f.quota.status,
            retry_after=f.quota.retry_after,
            body=f.quota.body,
        ),
        slowdown=SlowdownSettings(
            rate=slow_rate, after_requests=slow.after_requests, after_s=slow.after_seconds
        ),
        latency=LatencySettings(fixed_ms=f.latency.fixed_ms, spread_ms=f.latency.spread_ms),
        faults=FaultSettings(
            throttle=faults.throttle,
            server_error=faults.server_error,
            server_error_statuses=faults.server_error_statuses,
            server_error_html_share=faults.server_error_html_share,
            hang=faults.hang,
            hang_s=faults.hang_seconds,
            disconnect_before=faults.disconnect_before,
            disconnect_after=faults.disconnect_after,
            malformed_json=faults.malformed_json,
            item_transient=faults.item_transient,
            item_transient_codes=faults.item_transient_codes,
            item_omitted=faults.item_omitted,
            item_omitted_processed_share=faults.item_omitted_processed_share,
            poison_identifiers=frozenset(str(x).strip().lower() for x in faults.poison_identifiers),
        ),
        source=source,
    )


def load_profile(path: str | Path | None) -> Profile:
    """Read and check a profile TOML file; None means the built-in demo profile."""
    file = DEMO_PROFILE if path is None else Path(path).expanduser().resolve()
    data = read_toml(file, "Simulator profile", ProfileError, example=str(DEMO_PROFILE))
    return profile_from_dict(data, source=file)
