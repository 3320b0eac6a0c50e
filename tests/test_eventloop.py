"""uvloop only in batcher's own process: the Python API runs on the standard loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from batcher import eventloop
from batcher.errors import BatcherError


def loop_class() -> str:
    with asyncio.Runner(loop_factory=eventloop.loop_factory()) as runner:
        return type(runner.get_loop()).__module__


def test_a_library_call_uses_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    monkeypatch.setattr(eventloop, "_own_process", False)
    assert loop_class() == "asyncio.unix_events"


def test_the_command_uses_uvloop_and_the_variable_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(eventloop.ENV, raising=False)
    monkeypatch.setattr(eventloop, "_own_process", True)
    assert loop_class().startswith("uvloop")
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert loop_class() == "asyncio.unix_events"
    monkeypatch.setattr(eventloop, "_own_process", False)
    monkeypatch.setenv(eventloop.ENV, "uvloop")
    assert loop_class().startswith("uvloop")


def test_an_unknown_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    with pytest.raises(BatcherError, match=r"BATCHER_EVENT_LOOP='trio'.*asyncio, uvloop"):
        eventloop.loop_factory()


def test_the_console_script_claims_its_process() -> None:
    """The installed `batcher` script is cli.entry, which claims the process before any command."""
    code = (
        "import batcher.cli, batcher.eventloop as e, sys; sys.argv=['batcher','--help'];\n"
        "try:\n    batcher.cli.entry()\nexcept SystemExit:\n    pass\nprint(e._own_process)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("True")
