"""The command line: parse arguments, configure logging, call the library, map errors to exit codes.

Exit codes (for schedulers): 0 all rows delinked / not linked / duplicate; 1 finished with some
rows failed, retryable or rejected; 2 the job, input or credentials are unusable (nothing sent);
3 the run stopped early (authentication refused, interrupt).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from batcher.errors import BatcherError

P = ParamSpec("P")
R = TypeVar("R")


def _friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a BatcherError into `Error: ...` and its exit code; real bugs keep their traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BatcherError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Mass-delink loyalty customers from Capillary partner programs."""
    # Run folders hold customer data: files and folders we create are owner-only.
    os.umask(0o077)


_input_option = click.option(
    "--input", "input_path", metavar="PATH", help="Input file or glob (overrides input.path)."
)
_output_option = click.option(
    "--output", "output_dir", metavar="DIR", help="Output folder (overrides output.dir)."
)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_input_option
@_output_option
@_friendly_errors
def validate(job_file: str, input_path: str | None, output_dir: str | None) -> None:
    """Load, check and plan JOB_FILE's input; send nothing."""
    from batcher.job import load_job
    from batcher.validate import validate_job

    job = load_job(job_file).with_overrides(input_path=input_path, output_dir=output_dir)
    sys.exit(validate_job(job))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to bind (0: any).")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Simulator profile TOML (default: the built-in demo profile).",
)
@_friendly_errors
def simulate(host: str, port: int, profile_path: str | None) -> None:
    """Serve the Capillary simulator for rehearsals from another shell."""
    from batcher.simulator.serve import serve_forever

    serve_forever(host=host, port=port, profile_path=profile_path)


if __name__ == "__main__":
    main()
