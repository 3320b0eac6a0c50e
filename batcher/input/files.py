"""Where the input files are: a local file or glob, or objects in a bucket; their fingerprints.

A fingerprint is what `resume` compares to refuse a changed input: for a local file its size
and the sha256 of its content, for an object its size plus what the store says changes with
every write (ETag, generation or version, last-modified), so nothing is downloaded twice.
"""

from __future__ import annotations

import glob as globlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batcher.errors import InputError
from batcher.input import cloud
from batcher.job import Job

Format = Literal["csv", "parquet", "xlsx"]

_CSV_SUFFIXES = {".csv", ".txt", ".tsv"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_XLSX_SUFFIXES = {".xlsx", ".xlsm"}
_HASH_CHUNK = 1 << 20
_XLSX_MAGIC = b"PK\x03\x04"  # a zip file, as every .xlsx is


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file: `path` is an absolute local path or an object's URL."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None  # local files
    etag: str | None = None  # objects: ETag (S3, Azure, https) or GCS generation
    version: str | None = None  # objects: the version id, where versioning is on

    @property
    def is_object(self) -> bool:
        return cloud.is_object_url(self.path)

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry (what `changes_since` compares)."""
        out: dict[str, Any] = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}
        if self.is_object:
            out.update(etag=self.etag, version=self.version)
        else:
            out["sha256"] = self.sha256
        return out

    def changes_since(self, before: dict[str, Any]) -> str | None:
        """How this file differs from its manifest entry `before` (None: it is the same)."""
        if self.is_object:
            keys = ("size", "etag", "version", "mtime_ns")
            was = tuple(before.get(k) for k in keys)
            now = (self.size, self.etag, self.version, self.mtime_ns)
            if was != now:
                said = ", ".join(f"{k} {a} -> {b}" for k, a, b in zip(keys, was, now, strict=True))
                return f"{self.path} changed ({said})"
            return None
        if (self.size, self.sha256) != (before.get("size"), before.get("sha256")):
            return (
                f"{self.path} changed (size {before.get('size')} -> {self.size}, content differs)"
            )
        return None


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def input_location(job: Job) -> str:
    """The input path or glob, absolute, or its URL."""
    if cloud.is_object_url(job.input.path):
        return job.input.path
    return str(job.input_pattern())


def options_of(job: Job) -> dict[str, str]:
    return cloud.storage_options(job.input.storage_options)


def resolve_inputs(job: Job) -> tuple[list[str], bool]:
    """(the input files, local paths or URLs, in order; whether input.path is a glob)."""
    if cloud.is_object_url(job.input.path):
        files, glob = _resolve_objects(job)
        return [f.path for f in files], glob
    paths, glob = _resolve_local(job)
    return [str(p) for p in paths], glob


def fingerprint_inputs(job: Job) -> list[InputFile]:
    """The input files' fingerprints, without reading them as tables."""
    if cloud.is_object_url(job.input.path):
        return _resolve_objects(job)[0]
    return [describe_local(p) for p in _resolve_local(job)[0]]


def _resolve_local(job: Job) -> tuple[list[Path], bool]:
    pattern = job.input_pattern()
    text = str(pattern)
    if is_glob(text):
        matches = sorted(Path(p) for p in globlib.glob(text, recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise InputError(
                f"Input glob {text} matches no file.",
                hint="Check input.path in the job file (relative to the job file) or --input.",
            )
        return files, True
    if not pattern.exists():
        raise InputError(
            f"Input file {text} does not exist.",
            hint="Check input.path in the job file (relative to the job file) or --input.",
        )
    if not pattern.is_file():
        raise InputError(
            f"Input path {text} is a directory, not a file.",
            hint='To read every file in it, use a glob such as "data/*.csv".',
        )
    return [pattern], False


def _resolve_objects(job: Job) -> tuple[list[InputFile], bool]:
    url = cloud.parse_url(job.input.path)
    options = options_of(job)
    cloud.check_credentials(url, options, url.url)
    if not is_glob(url.key):
        info = cloud.head(url, options)
        return [_object_file(info)], False
    if url.cloud == "https":
        raise InputError(
            f"Input URL {url.url} is a glob: https:// names a single file.",
            hint="List the files in a bucket (s3://, gs://, az://) to read a glob of them.",
        )
    fixed = url.key[: min(url.key.find(c) for c in "*?[" if c in url.key)]
    prefix = fixed[: fixed.rfind("/") + 1]
    match = cloud.glob_regex(url.key)
    found = [o for o in cloud.list_objects(url, prefix, options) if match.match(o.key)]
    if not found:
        raise InputError(
            f"Input glob {url.url} matches no object.",
            hint="Check input.path in the job file (or --input): the bucket is there, but no "
            "key matches.",
        )
    return [_object_file(o) for o in found], True


def _object_file(info: cloud.ObjectInfo) -> InputFile:
    return InputFile(
        path=info.url,
        size=info.size,
        mtime_ns=int(info.last_modified.timestamp() * 1_000_000) * 1000,
        etag=info.etag,
        version=info.version,
    )


def describe_local(path: Path) -> InputFile:
    """Size, mtime and a streamed sha256 of the content (also proves the file is readable)."""
    digest = hashlib.sha256()
    try:
        st = path.stat()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise InputError(f"Input file {path} cannot be read: {e.strerror or e}.") from e
    return InputFile(
        path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=digest.hexdigest()
    )


def describe(job: Job, location: str) -> InputFile:
    """The fingerprint of one input file (local: hashed now; object: asked of the store)."""
    if cloud.is_object_url(location):
        return _object_file(cloud.head(cloud.parse_url(location), options_of(job)))
    return describe_local(Path(location))


def format_of(location: str) -> Format:
    """csv, parquet or xlsx: by the name's suffix, else by the first bytes of a local file."""
    suffix = Path(cloud.parse_url(location).key if cloud.is_object_url(location) else location)
    ext = suffix.suffix.lower()
    if ext in _PARQUET_SUFFIXES:
        return "parquet"
    if ext in _XLSX_SUFFIXES:
        return "xlsx"
    if ext in _CSV_SUFFIXES or cloud.is_object_url(location):
        return "csv"
    with open(location, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        return "parquet"
    return "xlsx" if magic == _XLSX_MAGIC else "csv"


def read_bytes(job: Job, location: str) -> bytes:
    """The whole file (for the readers that need bytes: Excel, CSV in another encoding)."""
    if cloud.is_object_url(location):
        return cloud.get_bytes(cloud.parse_url(location), options_of(job))
    return Path(location).read_bytes()


def display_name(location: str, base: Path) -> str:
    """How outcomes name a file of a glob: relative to the job file, or the object's URL."""
    if cloud.is_object_url(location):
        return location
    try:
        return str(Path(location).relative_to(base))
    except ValueError:
        return location
