"""The one exception family the CLI turns into `Error: ...` plus a fix, and an exit code."""

from __future__ import annotations


class BatcherError(Exception):
    """A problem the operator can fix; printed without a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n{self.hint}"


class JobError(BatcherError):
    """The job file (or a simulator profile) is unusable."""


class InputError(BatcherError):
    """An input file is unusable as a whole (rows with bad values are rejects, not errors)."""


class CredentialsError(BatcherError):
    """Credentials are missing from the environment; nothing was sent."""


class RunLockedError(BatcherError):
    """Another live run of the same job holds the lock."""


class RunStopped(BatcherError):
    """The run stopped early (authentication refused, interrupt): exit 3."""

    exit_code = 3
