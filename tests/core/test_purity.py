"""The core imports no I/O: no sockets, no protocol libraries, no clock, no threads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = [
    "model",
    "events",
    "decisions",
    "allocation",
    "setpoint_rules",
    "arbiter",
    "profile_cap",
    "durable",
    "ledger",
    "fleet",
    "demand",
    "compliance",
]
FORBIDDEN = {
    "c104",
    "ocpp",
    "websockets",
    "asyncio",
    "socket",
    "sqlite3",
    "threading",
    "time",
    "datetime",
    "apscheduler",
    "prometheus_client",
    "os",
    "subprocess",
    "random",
}
ROOT = Path(__file__).resolve().parents[2] / "gateway" / "core"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    assert not imported_modules(ROOT / f"{module}.py") & FORBIDDEN


@pytest.mark.parametrize("module", CORE)
def test_core_imports_only_the_core(module: str) -> None:
    local = {m for m in imported_modules(ROOT / f"{module}.py") if m == "gateway"}
    text = (ROOT / f"{module}.py").read_text()
    for line in text.splitlines():
        if line.startswith(("from gateway", "import gateway")):
            assert line.split()[1].removeprefix("gateway.core.") in CORE, line  # the core, nothing else
    assert local <= {"gateway"}


def test_the_core_package_holds_exactly_the_core() -> None:
    """Every module of ``gateway/core`` is checked above, and no shell module lives there."""
    assert sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__") == sorted(CORE)
