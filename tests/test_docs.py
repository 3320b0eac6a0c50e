"""The docs' Python examples use only batcher's public API (Airflow and Dagster not installed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import batcher
from batcher.api import RunResult

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = [REPO / "docs" / "scheduling.md", REPO / "README.md"]
RESULT_MAKERS = {"run_job", "resume_run", "retry_run"}


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def blocks() -> list[tuple[str, str]]:
    return [(f"{p.name}#{i}", code) for p in EXAMPLES for i, code in enumerate(python_blocks(p))]


def test_the_docs_have_the_examples_the_issue_asks_for() -> None:
    names = [code for name, code in blocks() if name.startswith("scheduling")]
    assert any("airflow" in code for code in names) and any("dagster" in code for code in names)


@pytest.mark.parametrize(("name", "code"), blocks(), ids=[n for n, _ in blocks()])
def test_an_example_parses_and_calls_only_public_names(name: str, code: str) -> None:
    tree = ast.parse(code, filename=name)
    public = set(batcher.__all__)
    results: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("batcher"):
            assert node.module == "batcher", f"{name}: imports {node.module}, not public"
            assert {a.name for a in node.names} <= public, f"{name}: {ast.unparse(node)}"
        if isinstance(node, ast.Import):
            assert all(a.name == "batcher" for a in node.names if a.name.startswith("batcher"))
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "batcher"
        ):
            assert node.attr in public, f"{name}: batcher.{node.attr} is not public"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            called = node.value.func
            fn = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if fn in RESULT_MAKERS:
                results |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    # What the examples read from a result exists on RunResult.
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in results
        ):
            assert hasattr(RunResult, node.attr), f"{name}: RunResult has no {node.attr}"


def test_every_public_name_resolves() -> None:
    for name in batcher.__all__:
        assert getattr(batcher, name) is not None
