"""The TOML settings files (job files, simulator profiles): one way to declare and check them.

A file's shape is a tree of `Table`s (msgspec Structs): each key is a field with its type, its
limits and, in `key(...)`, the words "allowed: ..." that a mistake is answered with. `convert`
checks a file's data against its tree in one pass and turns msgspec's first complaint into a
`Problem` (which dotted key, what went wrong, what was given, what is allowed); job.py and
simulator/profile.py word that as their one-paragraph errors. Checks across keys stay in those
modules, after `convert`.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import msgspec.inspect

from batcher.errors import JobError

# --- rates ------------------------------------------------------------------------------------

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Quota:
    """A request quota: `requests` per `period_s` seconds (the job's, or the simulator's)."""

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


def parse_rate(text: str) -> Quota:
    """Parse "1000/minute" or "20/second" (also /s, /sec, /m, /min); ValueError otherwise."""
    m = _RATE_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(text)
    return Quota(float(m.group(1)), 1.0 if m.group(2).lower().startswith("s") else 60.0)


# --- declaring ------------------------------------------------------------------------------


class Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A TOML table: unknown keys are refused; a field holding a Table is a [section]."""


def key(allowed: str, **limits: Any) -> msgspec.Meta:
    """A key's limits (msgspec.Meta's ge, le, pattern, min_length...) and its "allowed" words."""
    return msgspec.Meta(description=allowed, **limits)


# --- checking -------------------------------------------------------------------------------

T = TypeVar("T", bound=Table)
ProblemKind = Literal["unknown", "missing", "type", "value"]


@dataclass
class Problem(Exception):
    """The first thing wrong with a file's data.

    `key` is dotted (`retry.max_attempts`); `table` is the Table the key belongs to (for the
    list of known keys); `value` is what the file gave (None when missing); `allowed` the
    key's words; `kind`: an unknown key, a missing one, a value of the wrong type (or a table
    where a value belongs, and the reverse), or a bad value (out of range, not in the list, an
    item of a list).
    """

    kind: ProblemKind
    key: str
    table: type[Table]
    value: Any = None
    allowed: str | None = None

    @property
    def is_section(self) -> bool:
        """The key names a [section] of its table (a Table-typed field)."""
        return self.key.rpartition(".")[2] in sections(self.table)


def convert(data: dict[str, Any], schema: type[T]) -> T:
    """`data` checked against `schema`; the first mistake raises a Problem."""
    try:
        return msgspec.convert(data, schema, strict=True)
    except msgspec.ValidationError as e:
        raise _problem(str(e), data, schema) from None


def keys(table: type[Table]) -> list[str]:
    """A table's keys as written in files, in declaration order, sections included."""
    return list(table.__struct_encode_fields__)


def sections(table: type[Table]) -> dict[str, type[Table]]:
    """A table's [sections]: its keys that hold a Table, with that Table."""
    return {
        f.encode_name: f.type.cls
        for f in _fields(table)
        if isinstance(f.type, msgspec.inspect.StructType) and issubclass(f.type.cls, Table)
    }


def required(table: type[Table]) -> list[str]:
    """The keys a table must have."""
    return [f.encode_name for f in _fields(table) if f.required]


def allowed(table: type[Table], name: str) -> str | None:
    """The "allowed" words of key `name` of `table` (a section: None)."""
    for f in _fields(table):
        if f.encode_name == name:
            return _description(f.type)
    return None


@functools.cache
def _fields(table: type[Table]) -> tuple[msgspec.inspect.Field, ...]:
    info = msgspec.inspect.type_info(table)
    assert isinstance(info, msgspec.inspect.StructType)
    return info.fields


def _description(t: Any) -> str | None:
    if isinstance(t, msgspec.inspect.Metadata):
        found = (t.extra_json_schema or {}).get("description")
        return found if isinstance(found, str) else _description(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            if (found := _description(member)) is not None:
                return found
    return None


# msgspec words its complaint "<what> - at `$.api.rate`" (no " - at" at the top level), with
# list items as [0] and dict values as [...]: the path names fields only up to the first item.
_AT_RE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD_RE = re.compile(r"^Object (?P<how>contains unknown|missing required) field `(?P<name>.*)`$")
_TYPE_RE = re.compile(r"^Expected `[^`]*`, got `[^`]*`$")


def _problem(message: str, data: dict[str, Any], schema: type[Table]) -> Problem:
    m = _AT_RE.match(message)
    assert m is not None  # the pattern matches any text
    what, at = m["what"], m["path"] or ""
    names = [p for p in re.split(r"[.\[]", at) if p and not p.endswith("]")]
    # Walk down the tables the path names; the first non-table field is the key at fault (a
    # complaint about one of its items is about the key: its whole value is shown).
    table: type[Table] = schema
    value: Any = data
    path: list[str] = []
    for name in names:
        path.append(name)
        value = value.get(name) if isinstance(value, dict) else None
        inner = sections(table).get(name)
        if inner is None or not isinstance(value, dict):
            return Problem(
                "type" if _TYPE_RE.match(what) and not at.endswith("]") else "value",
                ".".join(path),
                table,
                value,
                allowed(table, name),
            )
        table = inner
    if (f := _FIELD_RE.match(what)) is not None:
        name = f["name"]
        given = value.get(name) if isinstance(value, dict) else None
        return Problem(
            "unknown" if f["how"] == "contains unknown" else "missing",
            ".".join([*path, name]),
            table,
            given,
            allowed(table, name),
        )
    # Not a shape this module knows (a newer msgspec?): still the file and the words, no trace.
    return Problem("value", ".".join(path), table, value, what)


# --- reading --------------------------------------------------------------------------------


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
