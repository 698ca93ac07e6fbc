"""The hello line, pure: bytes in (in any pieces), one outcome out."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocpp_side.legacy.hello import (
    MAX_HELLO_BYTES,
    Hello,
    HelloReader,
    HelloRules,
    RefusalReason,
    Refused,
    read_hello,
)

RULES = HelloRules.from_config(r"serial=(?P<serial>[A-Za-z0-9-]+)", "{serial}")
HELLO = b"S4HELLO model=S4-ULTRA vendor=Voltex serial=VX4-000123 fw=2016.3\r\n"
UPGRADE = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


@given(cuts=st.lists(st.integers(0, len(HELLO + UPGRADE)), max_size=6))
def test_the_hello_in_any_pieces_gives_the_identity_and_the_rest(cuts: list[int]) -> None:
    data = HELLO + UPGRADE
    reader = HelloReader(RULES)
    edges = [0, *sorted(cuts), len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(edges)]
    while (outcome := reader.receive_data(pieces.pop(0))) is None:
        pass
    assert outcome == Hello(HELLO.decode().rstrip("\r\n"), "VX4-000123", "VX4-000123")
    assert reader.rest + b"".join(pieces) == UPGRADE  # what websockets gets, to the byte


def test_a_bare_lf_ends_the_line_too_and_the_template_makes_the_identity() -> None:
    rules = HelloRules.from_config(r"serial=(?P<serial>[A-Za-z0-9-]+)", "voltex-{serial}")
    assert read_hello(b"S4HELLO serial=A-1", rules) == Hello("S4HELLO serial=A-1", "A-1", "voltex-A-1")


def test_the_length_bound_counts_the_line_end() -> None:
    line = b"serial=A " + b"x" * (MAX_HELLO_BYTES - 10)
    assert isinstance(HelloReader(RULES).receive_data(line + b"\n"), Hello)  # 512 bytes with its \n
    refused = HelloReader(RULES).receive_data(line + b"x\n")
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.HELLO_TOO_LONG


def test_nothing_is_decided_before_the_line_ends() -> None:
    reader = HelloReader(RULES)
    assert reader.receive_data(HELLO[:20]) is None
    assert reader.timed_out(10.0) == Refused(
        RefusalReason.NO_HELLO, "no hello within 10s (20 bytes without a line end)"
    )
    assert reader.receive_eof().reason is RefusalReason.NO_HELLO


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"POST /x HTTP/1.1", RefusalReason.NO_HELLO),
        (b"S4HELLO model=S4", RefusalReason.BAD_HELLO),
        (b"S4HELLO serial=", RefusalReason.BAD_HELLO),
        (b"S4HELLO serial=\xff", RefusalReason.BAD_HELLO),
        (b"S4HELLO serial=A\tB", RefusalReason.BAD_HELLO),
        (b"S4HELLO serial=A\x1b[2J", RefusalReason.BAD_HELLO),
    ],
)
def test_bad_lines(line: bytes, reason: RefusalReason) -> None:
    refused = read_hello(line, RULES)
    assert isinstance(refused, Refused) and refused.reason is reason
    assert refused.text.isprintable()


@pytest.mark.parametrize("serial", ["..", "A/B", "x" * 49, "A%2F"])
def test_an_identity_breaking_the_station_id_rule_is_refused(serial: str) -> None:
    rules = HelloRules.from_config(r"serial=(?P<serial>\S+)", "{serial}")
    refused = read_hello(f"S4HELLO serial={serial}".encode(), rules)
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.BAD_STATION_ID


def test_after_the_hello_the_outcome_stays() -> None:
    reader = HelloReader(RULES)
    first = reader.receive_data(HELLO)
    assert reader.receive_data(b"anything") is first
    assert reader.timed_out(1.0).reason is RefusalReason.NO_UPGRADE


PURE = ("hello", "dialect", "session")
IO = {"asyncio", "websockets", "socket", "ssl", "threading", "sqlite3", "prometheus_client", "apscheduler"}


@pytest.mark.parametrize("module", PURE)
def test_the_hello_reader_the_dialect_and_the_session_are_pure(module: str) -> None:
    path = Path(__file__).resolve().parents[2] / "ocpp_side" / "legacy" / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("ocpp_side.legacy"):
                assert node.module.rsplit(".", 1)[-1] in PURE, node.module
    assert not imported & IO
