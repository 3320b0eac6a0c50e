"""Object storage (S3, GCS, Azure, https): URLs, stores, credentials and readable errors.

polars reads the objects itself (its native cloud readers); this module does what polars does
not: list a glob's objects with their ETags, look at one object's size and version, upload the
result files, and turn the storage client's long errors into one paragraph with the fix.
Credentials come only from each cloud's standard environment; `[input] storage_options` holds
non-secret settings (region, endpoint, ...) and is passed to polars and the client alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batcher.errors import InputError

# scheme -> the cloud it belongs to (the names polars and obstore accept).
SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "azure": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
    "https": "https",
    "http": "https",
}
# Options that configure the HTTP client rather than the store.
_CLIENT_KEYS = {
    "allow_http",
    "allow_invalid_certificates",
    "connect_timeout",
    "timeout",
    "proxy_url",
    "pool_idle_timeout",
    "user_agent",
    "http1_only",
    "http2_only",
}
# storage_options keys that would hold a secret: refused, the secret belongs in the environment.
SECRET_OPTION_RE = re.compile(
    r"secret|token|pass(word)?|sas|access_key|account_key|master_key|service_account|"
    r"credential|client_id|bearer|authorization|session",
    re.IGNORECASE,
)
# Where each cloud's credentials come from, for the "missing credentials" message.
_CREDENTIAL_HELP = {
    "s3": "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary credentials), or AWS_PROFILE, or run where AWS_WEB_IDENTITY_TOKEN_FILE or "
    "AWS_CONTAINER_CREDENTIALS_* are set (EKS, ECS); AWS_REGION names the region and "
    "AWS_ENDPOINT_URL an S3-compatible store such as MinIO",
    "gcs": "export GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT_PATH) with the path "
    "of a service account key file",
    "azure": "export AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or "
    "AZURE_STORAGE_SAS_KEY), or AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID, or "
    "AZURE_FEDERATED_TOKEN_FILE",
}
_PUBLIC_HINT = 'For a public bucket, set storage_options = { skip_signature = "true" }.'


@dataclass(frozen=True, slots=True)
class ObjectUrl:
    """`scheme://bucket/key`: `root` is what a store is opened on, `key` the path inside it."""

    url: str
    cloud: str
    root: str
    key: str

    def child(self, key: str) -> ObjectUrl:
        return ObjectUrl(f"{self.root}/{key}", self.cloud, self.root, key)


def is_object_url(text: str) -> bool:
    """True for s3://, gs://, az://, abfs://, https:// and the like (never a local path)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def parse_url(text: str) -> ObjectUrl:
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    cloud = SCHEMES[scheme]
    if not parts.netloc:
        raise InputError(
            f"{text} names no bucket.", hint="Write it as s3://bucket/path (or gs://, az://)."
        )
    # abfs://container@account.dfs.core.windows.net/... names a container, not a user.
    user = parts.username if scheme not in ("abfs", "abfss") else None
    if user or parts.password or parts.query or parts.fragment:
        # A signed URL (a SAS token, X-Amz-Signature) or user:password@ carries a secret,
        # which would land in the manifest, the summary and the logs.
        raise InputError(
            f"{_redacted(parts)} carries credentials or a query string, and secrets never go in "
            "a job file or on the command line.",
            hint="Give the plain URL and put the credentials in the cloud's environment "
            "variables (AZURE_STORAGE_SAS_KEY for a SAS token).",
        )
    if scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise InputError(
            f"{text} is plain http to a non-loopback host: customer data would cross the "
            "network unencrypted.",
            hint="Use https://.",
        )
    return ObjectUrl(text, cloud, f"{scheme}://{parts.netloc}", parts.path.lstrip("/"))


def _redacted(parts: Any) -> str:
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")


def storage_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """The job's storage_options as the strings polars and obstore want."""
    out: dict[str, str] = {}
    for key, value in (options or {}).items():
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def missing_credentials(
    url: ObjectUrl, options: Mapping[str, str], env: Mapping[str, str] | None = None
) -> str | None:
    """Why no credentials are to be found for `url` (None: some are there).

    Checked before any request: left to itself the client would ask a cloud metadata
    service for credentials, and a run with none should fail at once, naming the variables.
    """
    env = os.environ if env is None else env
    if url.cloud == "https" or any(
        k.lower().removeprefix("aws_").removeprefix("google_").removeprefix("azure_")
        == "skip_signature"
        and _truthy(v)
        for k, v in options.items()
    ):
        return None
    present = {k for k, v in env.items() if v}
    if url.cloud == "s3":
        found = (
            {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= present
            or "AWS_PROFILE" in present
            or "AWS_WEB_IDENTITY_TOKEN_FILE" in present
            or "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in present
            or "AWS_CONTAINER_CREDENTIALS_FULL_URI" in present
            # An EC2 instance role: the operator says so, then the metadata service is asked.
            or env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "false"
        )
    elif url.cloud == "gcs":
        found = (
            bool(
                present
                & {
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "GOOGLE_SERVICE_ACCOUNT",
                    "GOOGLE_SERVICE_ACCOUNT_PATH",
                    "GOOGLE_SERVICE_ACCOUNT_KEY",
                }
            )
            or (Path.home() / ".config/gcloud/application_default_credentials.json").is_file()
        )
    else:
        found = (
            bool(
                present
                & {
                    "AZURE_STORAGE_ACCOUNT_KEY",
                    "AZURE_STORAGE_ACCESS_KEY",
                    "AZURE_STORAGE_SAS_KEY",
                    "AZURE_STORAGE_SAS_TOKEN",
                    "AZURE_CLIENT_SECRET",
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "AZURE_STORAGE_TOKEN",
                }
            )
            or _truthy(env.get("AZURE_STORAGE_USE_EMULATOR"))
            or _truthy(env.get("AZURE_USE_AZURE_CLI"))
        )
    if found:
        return None
    return f"No credentials for {url.url} in the environment: {_CREDENTIAL_HELP[url.cloud]}."


def check_credentials(url: ObjectUrl, options: Mapping[str, str], what: str) -> None:
    problem = missing_credentials(url, options)
    if problem is not None:
        raise InputError(
            f"Cannot read or write {what}. {problem}",
            hint="Credentials never go in the job file. " + _PUBLIC_HINT,
        )


def open_store(url: ObjectUrl, options: Mapping[str, str]) -> Any:
    """An obstore store at the URL's bucket (or host), configured from the environment."""
    from obstore.store import from_url as obstore_from_url

    # The typed overloads want one cloud's config TypedDict; ours is checked by obstore itself.
    from_url: Any = obstore_from_url

    config = {k: v for k, v in options.items() if k.lower() not in _CLIENT_KEYS}
    client = {k.lower(): v for k, v in options.items() if k.lower() in _CLIENT_KEYS}
    if url.url.startswith("http://"):
        client.setdefault("allow_http", "true")  # loopback only (parse_url refuses the rest)
    # A few quick retries: a wrong endpoint or a missing bucket should fail in seconds.
    retry = {"max_retries": 2, "retry_timeout": _timedelta(30)}
    extra_auth: dict[str, Any] = {}
    if (
        url.cloud == "s3"
        and os.environ.get("AWS_PROFILE")
        and not os.environ.get("AWS_ACCESS_KEY_ID")
    ):
        extra_auth["credential_provider"] = _profile_credentials()
    # No client_options at all unless some are set: an empty table would replace the ones
    # the store reads from the environment (AWS_ALLOW_HTTP for a loopback endpoint, ...).
    extra: dict[str, Any] = {"client_options": client} if client else {}
    extra.update(extra_auth)
    try:
        if url.cloud == "https":
            return from_url(url.root, retry_config=retry, **extra)
        return from_url(url.root, config=config, retry_config=retry, **extra)
    except Exception as e:  # obstore raises several kinds for a bad configuration key or value
        raise InputError(
            f"Cannot open {url.root}: {first_line(e)}.",
            hint="Check [input] storage_options in the job file (object_store configuration "
            "keys such as aws_region or aws_endpoint).",
        ) from e


def _profile_credentials() -> Any:
    """AWS_PROFILE's credentials, read by boto3 (object_store itself does not read profiles)."""
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise InputError(
            "AWS_PROFILE is set, and reading a profile needs boto3, which is not installed.",
            hint="Install boto3 beside batcher (uv pip install boto3), or export "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead.",
        ) from None
    return Boto3CredentialProvider(boto3.Session())


def _timedelta(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].rstrip(".: ") if text else type(e).__name__


_STATUS_RE = re.compile(r"status(?: code)?:? (\d{3})")
_CODE_RE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE_RE = re.compile(r"<Message>([^<]+)</Message>")


def storage_error(e: BaseException, url: str, action: str) -> InputError:
    """One paragraph for a failed storage request: what was refused, why, and the fix."""
    text = str(e)
    status = int(m.group(1)) if (m := _STATUS_RE.search(text)) else None
    code = m.group(1) if (m := _CODE_RE.search(text)) else None
    detail = m.group(1) if (m := _MESSAGE_RE.search(text)) else None
    said = f" ({code}: {detail})" if code and detail else (f" ({code})" if code else "")
    name = type(e).__name__
    if code == "NoSuchBucket" or (detail and "bucket does not exist" in detail.lower()):
        return InputError(
            f"Cannot {action} {url}: the bucket does not exist{said}.",
            hint="Check the bucket name in the URL, and AWS_ENDPOINT_URL / AWS_REGION (or "
            "storage_options) if it lives on another endpoint or region.",
        )
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken") or (
        status == 401 or name == "UnauthenticatedError"
    ):
        return InputError(
            f"Cannot {action} {url}: the storage service refused the credentials{said}.",
            hint="Check the credentials in the environment (for S3: AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN); they may be wrong or expired.",
        )
    if status == 403 or code == "AccessDenied" or name == "PermissionDeniedError":
        return InputError(
            f"Cannot {action} {url}: access denied{said}.",
            hint="The credentials in the environment work but lack the permission: reading "
            "needs list and get (s3:ListBucket, s3:GetObject), the results need put "
            "(s3:PutObject) on that bucket and prefix.",
        )
    if status == 404 or code == "NoSuchKey" or isinstance(e, FileNotFoundError):
        return InputError(
            f"Cannot {action} {url}: no such object{said}.",
            hint="Check input.path in the job file (or --input).",
        )
    return InputError(
        f"Cannot {action} {url}: {first_line(e)}.",
        hint="Check the URL, the network path to the storage service, and storage_options.",
    )


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    url: str
    key: str
    size: int
    etag: str | None
    version: str | None
    last_modified: datetime


def _info(url: ObjectUrl, meta: Mapping[str, Any]) -> ObjectInfo:
    key = str(meta["path"])
    return ObjectInfo(
        url=url.child(key).url,
        key=key,
        size=int(meta["size"]),
        etag=meta.get("e_tag"),
        version=meta.get("version"),
        last_modified=meta["last_modified"],
    )


def head(url: ObjectUrl, options: Mapping[str, str]) -> ObjectInfo:
    import obstore

    store = open_store(url, options)
    try:
        meta = obstore.head(store, url.key)
    except Exception as e:  # obstore's errors share no base class with a status
        error = storage_error(e, url.url, "read")
        if url.cloud != "https" and "no such object" in error.message:
            # A HEAD's 404 has no body: a listing tells a missing bucket from a missing key.
            list_objects(url, url.key, options, action="read")
        raise error from e
    return _info(url, meta)


def list_objects(
    url: ObjectUrl, prefix: str, options: Mapping[str, str], *, action: str = "list"
) -> list[ObjectInfo]:
    """Every object under `prefix` of the URL's bucket, sorted by key."""
    import obstore

    store = open_store(url, options)
    found: list[ObjectInfo] = []
    try:
        for batch in obstore.list(store, prefix=prefix or None):
            found += [_info(url, meta) for meta in batch]
    except Exception as e:
        raise storage_error(e, url.url, action) from e
    return sorted(found, key=lambda o: o.key)


def get_bytes(url: ObjectUrl, options: Mapping[str, str]) -> bytes:
    import obstore

    store = open_store(url, options)
    try:
        return bytes(obstore.get(store, url.key).bytes())
    except Exception as e:
        raise storage_error(e, url.url, "read") from e


def put_file(url: ObjectUrl, path: Path, options: Mapping[str, str]) -> None:
    import obstore

    store = open_store(url, options)
    try:
        obstore.put(store, url.key, path)
    except Exception as e:
        raise storage_error(e, url.url, "upload to") from e


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A key glob as a regex: `*` and `?` stay within one folder, `**` crosses folders."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")
