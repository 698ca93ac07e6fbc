"""ocpp_side/ is layered: no import circle, a pure session, versions named in their modules only.

Read from the source with ``ast`` (every import counts: top-level, ``TYPE_CHECKING``, or
inside a function), so the check needs nothing but the tree:

    python -m pytest tests/ocpp/test_imports.py
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "ocpp_side"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
MODULES = {path.stem: path for path in ROOT.glob("*.py") if path.stem != "__init__"}

# The pure protocol object and what it is made of: no sockets, tasks, timers or threads.
PURE = {"session", "limit_slot", "versions", "v16", "v201", "observations", "answers", "activity", "meter"}
IO = {"asyncio", "websockets", "socket", "ssl", "threading", "sqlite3", "prometheus_client", "apscheduler"}
VERSION_MODULES = {"v16", "v201"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level names of other packages) imported by ``path``."""
    local: set[str] = set()
    other: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                head, _, rest = alias.name.partition(".")
                if head == PACKAGE:
                    local.add(rest.split(".")[0])
                else:
                    other.add(head)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            head, _, rest = node.module.partition(".")
            if head != PACKAGE:
                other.add(head)
            elif rest:
                local.add(rest.split(".")[0])
            else:  # from ocpp_side import codec, schemas
                local |= {alias.name for alias in node.names}
    return local & set(MODULES), other


GRAPH = {name: _imports(path)[0] for name, path in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph``, or None (depth-first search, three colours)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for child in sorted(graph[node]):
            found = visit(child)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_the_check_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_ocpp_side_has_no_import_circle() -> None:
    assert {"server", "connection", "relay", "session"} <= set(GRAPH)
    circle = _cycle(GRAPH)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_session_and_the_relay_do_not_know_the_shell() -> None:
    for module in ("session", "relay"):
        assert not GRAPH[module] & {"server", "connection"}, module
    assert "server" not in GRAPH["connection"]


@pytest.mark.parametrize("module", sorted(PURE))
def test_the_session_is_pure(module: str) -> None:
    seen, todo = set(), [module]
    while todo:  # everything it imports from this package, transitively
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += GRAPH[name]
    for name in seen:
        assert not _imports(MODULES[name])[1] & IO, f"{module} imports I/O through {name}"


# The configuration's vocabulary: an operator chooses a version by name there
# (``upstream.csms_protocol = "ocpp2.0.1"``); no rule of a version lives in it.
CONFIG_MODULES = {"settings"}


@pytest.mark.parametrize("module", sorted(set(MODULES) - VERSION_MODULES - CONFIG_MODULES))
def test_versions_are_named_only_in_their_modules(module: str) -> None:
    """A rule of one version lives in its module: nothing else names a version."""
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in {("OcppVersion", "V16"), ("OcppVersion", "V201")}, module
        if isinstance(node, ast.Constant):
            assert node.value not in ("ocpp1.6", "ocpp2.0.1"), module
