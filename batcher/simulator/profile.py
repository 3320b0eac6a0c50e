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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batcher.errors import JobError
from batcher.settings import read_toml

PROFILES_DIR = Path(__file__).parent / "profiles"
DEMO_PROFILE = PROFILES_DIR / "demo.toml"

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute)\s*$", re.IGNORECASE)


class ProfileError(JobError):
    """A simulator profile is unusable (exit 2)."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A quota: `requests` per `period_s` seconds."""

    requests: int
    period_s: float

    def __str__(self) -> str:
        return f"{self.requests}/{'second' if self.period_s == 1 else 'minute'}"


def parse_rate(text: str) -> Rate:
    """Parse "3000/minute" or "50/second"; ValueError otherwise."""
    m = _RATE_RE.match(text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(text)
    return Rate(int(m.group(1)), 1.0 if m.group(2).lower().startswith("s") else 60.0)


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


# --- reading and checking -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    attr: str
    allowed: str
    convert: Callable[[Any], Any]  # raises ValueError/TypeError on a bad value


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(v)
        return v

    return convert


def _number_in(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValueError(v)
        return float(v)

    return convert


def _one_of(*choices: str) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        if v not in choices:
            raise ValueError(v)
        return str(v)

    return convert


def _one_int(*choices: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or v not in choices:
            raise ValueError(v)
        return int(v)

    return convert


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(v)
    return v


def _country_code(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[1-9][0-9]{0,3}", v):
        raise ValueError(v)
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(v)
    return v


def _rate(v: Any) -> Rate:
    if not isinstance(v, str):
        raise ValueError(v)
    return parse_rate(v)


def _int_list(lo: int, hi: int) -> Callable[[Any], tuple[int, ...]]:
    item = _int_in(lo, hi)

    def convert(v: Any) -> tuple[int, ...]:
        if not isinstance(v, list) or not v:
            raise ValueError(v)
        return tuple(item(x) for x in v)

    return convert


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise ValueError(v)
    return tuple(v)


def _program_count(v: Any) -> tuple[str, ...]:
    """program_count = N means the programs partner-01 .. partner-N."""
    return tuple(f"partner-{j:02d}" for j in range(1, _int_in(1, 1000)(v) + 1))


def _identifiers(v: Any) -> frozenset[str]:
    if not isinstance(v, list) or not all(isinstance(x, str | int) for x in v):
        raise ValueError(v)
    return frozenset(str(x).strip().lower() for x in v)


_P = "a probability from 0 to 1"
_SCHEMA: dict[str, dict[str, _Key]] = {
    "": {
        "seed": _Key("seed", "an integer", _int_in(-(2**63), 2**63 - 1)),
        "response_shape": _Key("response_shape", "current or legacy", _one_of("current", "legacy")),
        "shuffle_items": _Key("shuffle_items", "true or false", _flag),
        "max_customers_per_request": _Key(
            "max_customers_per_request", "a positive integer", _int_in(1, 1_000_000)
        ),
        "max_programs_per_customer": _Key(
            "max_programs_per_customer", "a positive integer", _int_in(1, 1_000_000)
        ),
        "mobile_min_digits": _Key("mobile_min_digits", "an integer from 1 to 32", _int_in(1, 32)),
        "mobile_max_digits": _Key("mobile_max_digits", "an integer from 1 to 32", _int_in(1, 32)),
        "unknown_customer_programs": _Key(
            "unknown_customer_programs", "empty or echo", _one_of("empty", "echo")
        ),
        "default_country_code": _Key(
            "default_country_code", 'a country code of 1 to 4 digits, such as "91"', _country_code
        ),
        "national_mobile_digits": _Key(
            "national_mobile_digits", "an integer from 4 to 14", _int_in(4, 14)
        ),
        "stored_email_case": _Key("stored_email_case", "lower or mixed", _one_of("lower", "mixed")),
        "answer_identifiers": _Key("answer_identifiers", "stored or id", _one_of("stored", "id")),
        "org_id": _Key("org_id", "a positive integer", _int_in(1, 2**63 - 1)),
        "org_headers": _Key("org_headers", "true or false", _flag),
    },
    "auth": {
        "basic_username": _Key("basic_username", "a non-empty string", _text),
        "basic_password": _Key("basic_password", "a non-empty string", _text),
        "oauth_key": _Key("oauth_key", "a non-empty string", _text),
        "oauth_secret": _Key("oauth_secret", "a non-empty string", _text),
        "token_ttl_seconds": _Key(
            "token_ttl_s", "a positive number of seconds", _number_in(1e-3, 10 * 365 * 86400)
        ),
        "expired_token_status": _Key("expired_token_status", "401 or 498", _one_int(401, 498)),
    },
    "state": {
        "customers": _Key("customers", "an integer from 0 to 100000000", _int_in(0, 100_000_000)),
        "programs": _Key("programs", "a non-empty list of program names", _names),
        "program_count": _Key("programs", "an integer from 1 to 1000", _program_count),
        "link_probability": _Key("link_probability", _P, _number_in(0, 1)),
        "file": _Key("file", "a CSV or Parquet file of links, relative to the profile", _text),
    },
    "quota": {
        "rate": _Key("rate", 'a quota such as "3000/minute" or "50/second"', _rate),
        "window": _Key("window", "fixed or sliding", _one_of("fixed", "sliding")),
        "status": _Key("status", "an HTTP status from 400 to 599", _int_in(400, 599)),
        "retry_after": _Key(
            "retry_after", "seconds, http-date or none", _one_of("seconds", "http-date", "none")
        ),
        "body": _Key("body", "json, html or empty", _one_of("json", "html", "empty")),
    },
    "slowdown": {
        "rate": _Key("rate", 'a quota such as "10/second"', _rate),
        "after_requests": _Key("after_requests", "a non-negative integer", _int_in(0, 2**62)),
        "after_seconds": _Key("after_s", "a non-negative number of seconds", _number_in(0, 1e9)),
    },
    "latency": {
        "fixed_ms": _Key(
            "fixed_ms", "a number of milliseconds from 0 to 600000", _number_in(0, 6e5)
        ),
        "spread_ms": _Key(
            "spread_ms", "a number of milliseconds from 0 to 600000", _number_in(0, 6e5)
        ),
    },
    "faults": {
        "throttle": _Key("throttle", _P, _number_in(0, 1)),
        "server_error": _Key("server_error", _P, _number_in(0, 1)),
        "server_error_statuses": _Key(
            "server_error_statuses", "a list of HTTP statuses from 500 to 599", _int_list(500, 599)
        ),
        "server_error_html_share": _Key("server_error_html_share", _P, _number_in(0, 1)),
        "hang": _Key("hang", _P, _number_in(0, 1)),
        "hang_seconds": _Key("hang_s", "a positive number of seconds", _number_in(1e-3, 1e6)),
        "disconnect_before": _Key("disconnect_before", _P, _number_in(0, 1)),
        "disconnect_after": _Key("disconnect_after", _P, _number_in(0, 1)),
        "malformed_json": _Key("malformed_json", _P, _number_in(0, 1)),
        "item_transient": _Key("item_transient", _P, _number_in(0, 1)),
        "item_transient_codes": _Key(
            "item_transient_codes", "a list of item codes such as [521, 2010]", _int_list(1, 10**6)
        ),
        "item_omitted": _Key("item_omitted", _P, _number_in(0, 1)),
        "item_omitted_processed_share": _Key("item_omitted_processed_share", _P, _number_in(0, 1)),
        "poison_identifiers": _Key(
            "poison_identifiers", "a list of identifier values (strings)", _identifiers
        ),
    },
}

_SECTIONS: dict[str, type[Any]] = {
    "auth": Credentials,
    "state": StateSettings,
    "quota": QuotaSettings,
    "slowdown": SlowdownSettings,
    "latency": LatencySettings,
    "faults": FaultSettings,
}
_FIELD_OF_SECTION = {"auth": "credentials"}


def _fail(where: str, key: str, problem: str, allowed: str | None = None) -> ProfileError:
    text = (
        f"Simulator profile {where}: key '{key}' {problem}"
        if key
        else (f"Simulator profile {where}: {problem}")
    )
    return ProfileError(text + (f"; allowed: {allowed}." if allowed else "."))


def _check(where: str, section: str, values: object) -> dict[str, Any]:
    schema = _SCHEMA[section]
    prefix = f"{section}." if section else ""
    if not isinstance(values, Mapping):
        raise _fail(
            where, section, "must be a table", f"[{section}] with keys " + ", ".join(schema)
        )
    out: dict[str, Any] = {}
    for key, value in values.items():
        if section == "" and key in _SECTIONS:
            continue
        if key not in schema:
            allowed = ", ".join(prefix + k for k in schema)
            if section == "":
                allowed += ", and the tables " + ", ".join(f"[{s}]" for s in _SECTIONS)
            raise _fail(where, prefix + key, "is not a known key", allowed)
        spec = schema[key]
        try:
            out[spec.attr] = spec.convert(value)
        except (ValueError, TypeError):
            raise _fail(where, prefix + key, f"has a bad value {value!r}", spec.allowed) from None
    return out


def profile_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Profile:
    """Build and check a profile from TOML-shaped data (tests build variants this way)."""
    where = str(source) if source is not None else "(in code)"
    top = _check(where, "", data)
    parts: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values = _check(where, section, data.get(section, {}))
        if section == "state" and "file" in values:
            base = source.parent if source is not None else Path.cwd()
            file = (base / values["file"]).resolve()
            if file.suffix.lower() not in (".csv", ".parquet"):
                raise _fail(where, "state.file", f"is not a .csv or .parquet file ({file})")
            if not file.is_file():
                raise _fail(
                    where,
                    "state.file",
                    f"names a file that does not exist ({file})",
                    "a CSV or Parquet file of links, relative to the profile",
                )
            values["file"] = file
        parts[_FIELD_OF_SECTION.get(section, section)] = cls(**values)
    if "state" in data and "programs" in data["state"] and "program_count" in data["state"]:
        raise _fail(
            where,
            "state.program_count",
            "conflicts with state.programs",
            "one of programs or program_count",
        )
    if top.get("mobile_min_digits", 10) > top.get("mobile_max_digits", 15):
        raise _fail(where, "mobile_min_digits", "is larger than mobile_max_digits")
    slow: SlowdownSettings = parts["slowdown"]
    if (slow.rate is None) != (slow.after_requests is None and slow.after_s is None):
        raise _fail(
            where,
            "slowdown.rate",
            "and after_requests/after_seconds go together",
            "rate together with after_requests and/or after_seconds",
        )
    return Profile(**top, **parts, source=source)


def load_profile(path: str | Path | None) -> Profile:
    """Read and check a profile TOML file; None means the built-in demo profile."""
    file = DEMO_PROFILE if path is None else Path(path).expanduser().resolve()
    data = read_toml(file, "Simulator profile", ProfileError, example=str(DEMO_PROFILE))
    return profile_from_dict(data, source=file)
