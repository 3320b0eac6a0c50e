"""batcher: mass-delink loyalty customers from Capillary partner programs.

The public API (see docs/scheduling.md)::

    from batcher import run_job, validate_job, resume_run, retry_run, BatcherError

    result = run_job("jobs/demo.toml")
    result.exit_code, result.counts, result.run_dir, result.stop_reason, result.summary

Names are imported on first use, so `import batcher` stays cheap (the CLI starts fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batcher.api import (
        RunResult,
        ValidationResult,
        resume_run,
        resume_run_async,
        retry_run,
        retry_run_async,
        run_job,
        run_job_async,
        validate_job,
        validate_job_async,
    )
    from batcher.errors import BatcherError, CredentialsError, InputError, JobError, RunLockedError

__all__ = [
    "BatcherError",
    "CredentialsError",
    "InputError",
    "JobError",
    "RunLockedError",
    "RunResult",
    "ValidationResult",
    "resume_run",
    "resume_run_async",
    "retry_run",
    "retry_run_async",
    "run_job",
    "run_job_async",
    "validate_job",
    "validate_job_async",
]

_ERRORS = {"BatcherError", "CredentialsError", "InputError", "JobError", "RunLockedError"}


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from batcher import errors

        return getattr(errors, name)
    if name in __all__:
        from batcher import api

        return getattr(api, name)
    raise AttributeError(f"module 'batcher' has no attribute {name!r}")
