"""The folders say the architecture: `worker/core/` does no I/O and imports nothing from outside
itself but the contract's models, so the edges (actors, store, fetching, CLI) depend on the core
and never the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "worker" / "core"

#: What a core module may not import: the rest of the worker, and the libraries of I/O.
EDGES = (
    "worker",
    "pika",
    "pymongo",
    "dramatiq",
    "socket",
    "http",
    "urllib",
    "ssl",
    "subprocess",
    "asyncio",
    "os",
    "shutil",
    "prometheus_client",
)


def imports(path: Path) -> list[str]:
    """Every module a file imports, wherever in it (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "worker":  # `from worker import x` names the modules it takes
                found += [f"worker.{alias.name}" for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    if module == "worker.core" or module.startswith("worker.core."):
        return False
    return any(module == edge or module.startswith(f"{edge}.") for edge in EDGES)


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_only_the_core_and_the_contract(path: Path) -> None:
    assert [m for m in imports(path) if forbidden(m)] == []


def test_the_check_sees_an_edge_import(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "from worker.core import grouping\n"
        "def f():\n    from worker import store\n    import pymongo.errors\n"
    )
    assert [m for m in imports(sneaky) if forbidden(m)] == [
        "worker",
        "worker.store",
        "pymongo.errors",
    ]


def test_the_core_is_where_the_pure_modules_are() -> None:
    names = {p.stem for p in CORE.glob("*.py")}
    assert {"hashing", "matching", "grouping", "deletion", "decisions", "merging", "pages"} <= names
    # and the edges are not in it
    assert not {"store", "actors", "fetching", "broker", "results"} & names
