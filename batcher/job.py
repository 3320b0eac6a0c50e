"""The job file: load a TOML job, check every key, and freeze it into one settings object."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from batcher.errors import JobError

Identifier = Literal["mobile", "email", "externalId", "id"]
IDENTIFIERS: tuple[Identifier, ...] = ("mobile", "email", "externalId", "id")
# How the API is authenticated; the credentials themselves come only from the environment.
AuthKind = Literal["basic", "oauth"]
SIMULATOR = "simulator"

# A job name becomes a folder under the output dir: keep it to one safe path segment.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute)\s*$", re.IGNORECASE)
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
class Quota:
    """A hard request quota: `requests` per `period_s` seconds."""

    requests: float
    period_s: float

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.period_s

    def seconds_for(self, requests: int) -> float:
        """How long `requests` take when sent at the quota (the least a run can take)."""
        return requests / self.rate_per_s

    def __str__(self) -> str:
        unit = "second" if self.period_s == 1 else "minute"
        return f"{self.requests:g}/{unit}"


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


# --- checking ---------------------------------------------------------------------------------

Check = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class _Key:
    kind: type | tuple[type, ...]
    allowed: str
    check: Check | None = None
    required: bool = False


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


_SCHEMA: dict[str, dict[str, _Key]] = {
    "": {
        "name": _Key(
            str,
            "a name of letters, digits, '.', '_' or '-' (at most 100, starting with a letter or "
            "digit); it becomes a folder under the output dir",
            lambda v: bool(_NAME_RE.match(v)) and ".." not in v,
            required=True,
        ),
    },
    "input": {
        "path": _Key(
            str,
            "a CSV, Parquet or Excel (.xlsx) file, or a glob of them; or an s3://, gs://, az:// "
            "URL (globs allowed) or an https:// URL of one file",
            bool,
            required=True,
        ),
        "identifier": _Key(str, "one of mobile, email, externalId, id", IDENTIFIERS.__contains__),
        "identifier_column": _Key(str, "a column name", bool),
        "program_column": _Key(str, "a column name", bool),
        "separator": _Key(str, "a single character such as ',' or ';'", lambda v: len(v) == 1),
        "encoding": _Key(
            str,
            "utf8 (default), utf8-lossy, or a Python codec name such as cp1252 or latin-1",
            bool,
        ),
        "default_country_code": _Key(
            str,
            'the country code national mobiles are completed with, 1 to 4 digits such as "91" '
            "(only with identifier = mobile)",
            lambda v: bool(re.fullmatch(r"[1-9][0-9]{0,3}", v)),
        ),
        "national_mobile_digits": _Key(
            int,
            "the length of a national mobile number without its trunk 0, 4 to 14 (default 10)",
            lambda v: _positive_int(v) and 4 <= v <= 14,
        ),
        "storage_options": _Key(
            dict,
            'a table of non-secret object-storage settings such as { aws_region = "eu-west-1" } '
            "(credentials come from the environment)",
            lambda v: all(isinstance(x, str | bool | int) for x in v.values()),
        ),
        "sheet": _Key(
            (str, int),
            "an Excel sheet's name, or its index from 0 (default 0, the first)",
            lambda v: bool(v) if isinstance(v, str) else v >= 0,
        ),
    },
    "api": {
        "base_url": _Key(
            str,
            'an https:// URL such as "https://eu.api.capillarytech.com", or "simulator"',
            required=True,
        ),
        "auth": _Key(str, "basic or oauth", ("basic", "oauth").__contains__),
        "rate": _Key(str, 'a quota such as "1000/minute" or "20/second"'),
        "max_in_flight": _Key(
            int, "an integer from 1 to 256", lambda v: _positive_int(v) and v <= 256
        ),
        "customers_per_request": _Key(int, "a positive integer", _positive_int),
        "programs_per_customer": _Key(int, "a positive integer", _positive_int),
        "timeout_seconds": _Key((int, float), "a positive number of seconds", _positive_number),
        "connect_timeout_seconds": _Key(
            (int, float), "a positive number of seconds", _positive_number
        ),
        "throttle_statuses": _Key(
            list,
            "a list of HTTP statuses (integers 400-599), such as [429]",
            lambda v: all(isinstance(s, int) and 400 <= s <= 599 for s in v),
        ),
        "token_refresh_margin_seconds": _Key(
            (int, float), "a non-negative number of seconds", lambda v: v >= 0
        ),
        "expect_org_id": _Key(
            int, "the org id the credentials must act on (a positive integer)", _positive_int
        ),
    },
    "safety": {
        "stop_if_failed_share": _Key(
            (int, float),
            "a share above 0 and at most 1, such as 0.9 (1 turns the early stop off)",
            lambda v: 0 < v <= 1,
        ),
        "stop_after_pairs": _Key(int, "a positive number of answered pairs", _positive_int),
        "max_pairs": _Key(int, "a positive number of pairs", _positive_int),
    },
    "retry": {
        "max_attempts": _Key(
            int, "an integer from 1 to 100", lambda v: _positive_int(v) and v <= 100
        ),
        "backoff_base_seconds": _Key(
            (int, float), "a positive number of seconds", _positive_number
        ),
        "backoff_max_seconds": _Key((int, float), "a positive number of seconds", _positive_number),
        "give_up_after_seconds": _Key(
            (int, float), "a positive number of seconds", _positive_number
        ),
    },
    "output": {
        "dir": _Key(
            str,
            "a folder path (relative to the working directory), or an s3://, gs://, az:// URL "
            "to upload the results to",
            bool,
        ),
        "staging_dir": _Key(
            str,
            "the local folder a run works in when dir is a URL (default output)",
            bool,
        ),
    },
    "simulator": {
        "profile": _Key(str, "a simulator profile TOML file, relative to the job file", bool),
    },
    "notify": {
        "urls": _Key(
            list,
            'a list of Apprise URLs such as ["slack://${SLACK_TOKEN}/#ops", '
            '"json://host:8080/hook"]; secrets as ${VAR}, read from the environment',
            lambda v: all(isinstance(u, str) and "://" in u for u in v),
        ),
        "on": _Key(
            list,
            'a list of "finished", "stopped", "failed" (default all three)',
            lambda v: all(e in NOTIFY_EVENTS for e in v),
        ),
    },
    "metrics": {
        "textfile": _Key(
            str,
            "a .prom file path for node_exporter's textfile collector, relative to the job file",
            lambda v: v.endswith(".prom"),
        ),
        "pushgateway": _Key(
            str,
            'a Prometheus Pushgateway URL such as "http://pushgateway:9091"',
            lambda v: v.startswith(("http://", "https://")),
        ),
    },
}


def _fail(path: Path, key: str, problem: str, allowed: str | None = None) -> JobError:
    text = f"Job file {path}: {problem}"
    if key:
        text = f"Job file {path}: key '{key}' {problem}"
    return JobError(text + (f"; allowed: {allowed}." if allowed else "."))


def _unknown_section(path: Path, name: str) -> JobError:
    """A table the schema does not know: usually a typo, so name the likely one."""
    import difflib

    known = [s for s in _SCHEMA if s]
    guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean [{guess[0]}]?" if guess else "."
    listed = ", ".join(f"[{s}]" for s in known)
    return JobError(
        f"Job file {path}: section [{name}] is not a known section; allowed sections: "
        f"{listed}{hint}"
    )


def _check_section(path: Path, section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    schema = _SCHEMA[section]
    prefix = f"{section}." if section else ""
    out: dict[str, Any] = {}
    for key, value in values.items():
        full = prefix + key
        if key not in schema:
            if _SECRET_KEY_RE.search(key):
                raise JobError(
                    f"Job file {path}: key '{full}' looks like a secret, and secrets never go in "
                    "a job file.",
                    hint="Set them in the environment instead: CAPILLARY_USERNAME and "
                    'CAPILLARY_PASSWORD (or CAPILLARY_PASSWORD_MD5) for auth = "basic", '
                    'CAPILLARY_CLIENT_KEY and CAPILLARY_CLIENT_SECRET for auth = "oauth".',
                )
            raise _fail(
                path, full, "is not a known key", ", ".join(sorted(prefix + k for k in schema))
            )
        spec = schema[key]
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise _fail(path, full, f"has the wrong type ({type(value).__name__})", spec.allowed)
        if spec.check is not None and not spec.check(value):
            raise _fail(path, full, f"has a bad value {value!r}", spec.allowed)
        out[key] = value
    for key, spec in schema.items():
        if spec.required and key not in out:
            raise _fail(path, prefix + key, "is missing", spec.allowed)
    return out


def parse_quota(text: str) -> Quota:
    """Parse "1000/minute" or "20/second" (also /s, /sec, /m, /min)."""
    m = _RATE_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(text)
    period_s = 1.0 if m.group(2).lower().startswith("s") else 60.0
    return Quota(float(m.group(1)), period_s)


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
    allowed = 'an https:// URL such as "https://eu.api.capillarytech.com", or "simulator"'
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


def read_toml(path: Path, what: str, error: type[JobError], *, example: str) -> dict[str, Any]:
    """A TOML file's tables; a missing, unreadable or malformed file is `error` (exit 2)."""
    if not path.is_file():
        raise error(
            f"{what} {path} does not exist or is not a file.",
            hint=f"Pass the path of a TOML file, such as {example}.",
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} cannot be read: {e}.") from e
    except tomllib.TOMLDecodeError as e:
        raise error(f"{what} {path} is not valid TOML: {e}.") from e


def load_job(path: str | Path, *, as_path: Path | None = None) -> Job:
    """Read and check a job file; every problem is a JobError naming the file and the key.

    `as_path`: read `path` (a run folder's copy) but resolve relative paths as if the file
    still stood at `as_path`, where the original was.
    """
    job_path = Path(path).expanduser().resolve()
    raw = read_toml(job_path, "Job file", JobError, example="jobs/demo.toml")
    if as_path is not None:
        job_path = as_path

    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SCHEMA and key != "":
            if not isinstance(value, dict):
                raise _fail(job_path, key, "must be a table ([" + key + "])", None)
            sections[key] = value
        elif isinstance(value, dict):
            raise _unknown_section(job_path, key)
        else:
            top[key] = value
    top_checked = _check_section(job_path, "", top)
    if "input" not in sections:
        raise _fail(job_path, "", "has no [input] table", "[input] with at least path")
    if "api" not in sections:
        raise _fail(job_path, "", "has no [api] table", "[api] with at least base_url")
    inp = _check_section(job_path, "input", sections["input"])
    api = _check_section(job_path, "api", sections["api"])
    retry = _check_section(job_path, "retry", sections.get("retry", {}))
    output = _check_section(job_path, "output", sections.get("output", {}))
    sim = _check_section(job_path, "simulator", sections.get("simulator", {}))
    safety = _check_section(job_path, "safety", sections.get("safety", {}))
    notify = _check_section(job_path, "notify", sections.get("notify", {}))
    metrics = _check_section(job_path, "metrics", sections.get("metrics", {}))

    base_url = api["base_url"].rstrip("/") if api["base_url"] != SIMULATOR else SIMULATOR
    _check_base_url(job_path, base_url)
    rate_text = api.get("rate", "1000/minute")
    try:
        quota = parse_quota(rate_text)
    except ValueError:
        raise _fail(
            job_path, "api.rate", f"has a bad value {rate_text!r}", _SCHEMA["api"]["rate"].allowed
        ) from None
    backoff_base = float(retry.get("backoff_base_seconds", 0.5))
    backoff_max = float(retry.get("backoff_max_seconds", 30.0))
    if backoff_max < backoff_base:
        raise _fail(
            job_path,
            "retry.backoff_max_seconds",
            f"({backoff_max:g}) is below retry.backoff_base_seconds ({backoff_base:g})",
            "a value at least the base",
        )

    identifier: Identifier = inp.get("identifier", "mobile")
    for key in ("default_country_code", "national_mobile_digits"):
        if key in inp and identifier != "mobile":
            raise _fail(
                job_path,
                f"input.{key}",
                f"applies to mobiles only, and input.identifier is {identifier!r}",
                'remove it, or set input.identifier = "mobile"',
            )
    options = dict(inp.get("storage_options", {}))
    for key in options:
        if _STORAGE_SECRET_RE.search(key):
            raise JobError(
                f"Job file {job_path}: key 'input.storage_options.{key}' looks like a secret, "
                "and secrets never go in a job file.",
                hint="Set the cloud's standard environment variables instead (for S3: "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE).",
            )
    output_dir_text = output.get("dir", "output")
    output_url = None
    if _is_object_url(output_dir_text):
        _check_output_url(job_path, output_dir_text)
        output_url = output_dir_text.rstrip("/")
        output_dir_text = output.get("staging_dir", "output")
    elif "staging_dir" in output:
        raise _fail(
            job_path,
            "output.staging_dir",
            "is only for an output.dir that is an object-storage URL",
            "remove it, or set output.dir to an s3://, gs:// or az:// URL",
        )
    profile: Path | None = None
    if "profile" in sim:
        profile = (job_path.parent / sim["profile"]).resolve()
        if not profile.is_file():
            raise _fail(
                job_path,
                "simulator.profile",
                f"names a file that does not exist ({profile})",
                "a simulator profile TOML file, relative to the job file",
            )

    return Job(
        name=top_checked["name"],
        path=job_path,
        input=InputSettings(
            path=inp["path"],
            identifier=identifier,
            identifier_column=inp.get("identifier_column", identifier),
            program_column=inp.get("program_column", "partner_program_name"),
            separator=inp.get("separator", ","),
            encoding=inp.get("encoding", "utf8"),
            default_country_code=inp.get("default_country_code"),
            national_mobile_digits=inp.get("national_mobile_digits", 10),
            storage_options={
                k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items()
            },
            sheet=inp.get("sheet", 0),
        ),
        api=ApiSettings(
            base_url=base_url,
            auth=api.get("auth", "basic"),
            quota=quota,
            max_in_flight=api.get("max_in_flight", 8),
            customers_per_request=api.get("customers_per_request", 50),
            programs_per_customer=api.get("programs_per_customer", 50),
            timeout_s=float(api.get("timeout_seconds", 30)),
            connect_timeout_s=float(api.get("connect_timeout_seconds", 10)),
            throttle_statuses=tuple(api.get("throttle_statuses", [429])),
            token_refresh_margin_s=float(api.get("token_refresh_margin_seconds", 30)),
            expect_org_id=api.get("expect_org_id"),
        ),
        retry=RetrySettings(
            max_attempts=retry.get("max_attempts", 6),
            backoff_base_s=backoff_base,
            backoff_max_s=backoff_max,
            give_up_after_s=float(retry.get("give_up_after_seconds", 600.0)),
        ),
        output_dir=Path(output_dir_text).expanduser().resolve(),
        simulator_profile=profile,
        safety=SafetySettings(
            stop_if_failed_share=float(safety.get("stop_if_failed_share", 0.9)),
            stop_after_pairs=safety.get("stop_after_pairs", 200),
            max_pairs=safety.get("max_pairs"),
        ),
        output_url=output_url,
        notify=NotifySettings(
            urls=tuple(notify.get("urls", ())), on=tuple(notify.get("on", NOTIFY_EVENTS))
        ),
        metrics=MetricsSettings(
            textfile=(job_path.parent / metrics["textfile"]).resolve()
            if "textfile" in metrics
            else None,
            pushgateway=metrics.get("pushgateway"),
        ),
    )
