"""``ocpp809 sim dso`` and ``sim stations`` against a real gateway on loopback: what they
print, and their one-line failures with distinct exit codes."""

from __future__ import annotations

import argparse
import io
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_gateway
from scenarios.cli import _sim_dso, _sim_stations
from scenarios.link_errors import EXIT_COULD_NOT_CONNECT, EXIT_SETPOINT_REFUSED
from scenarios.run_config import gateway_config
from tests.support.gateway_process import run_cli


def errors(stderr: str) -> list[str]:
    """The simulators' own lines (an earlier in-process ``main()`` may leave logging noise)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def ports(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    gateway = build_gateway(gateway_config({}, str(tmp_path / "s.sqlite3"), time_scale=1.0))
    await gateway.start()
    try:
        # Not every adapter listens (the operator request spool has no port).
        found = {type(a).__name__: getattr(a, "port", 0) for a in gateway.adapters}
        yield found["Iec104Outstation"], found["StationServer"]
    finally:
        await gateway.stop()


def dso_args(port: int, **kw: Any) -> argparse.Namespace:
    base = {
        "host": "127.0.0.1",
        "port": port,
        "common_address": 1,
        "setpoint": [],
        "ioa": None,
        "time_tagged": False,
        "interrogate": False,
        "listen": 0.3,
        "record": None,
        "tls_ca": None,
        "tls_cert": None,
        "tls_key": None,
        "connect_timeout": 5.0,
    }
    base.update(kw)
    return argparse.Namespace(**base)


async def test_sim_dso_prints_every_act_con_and_records_telemetry(
    ports: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    record = io.StringIO()
    code = await _sim_dso(dso_args(ports[0], setpoint=[20000.0, 0.0], interrogate=True, listen=2.0), record)
    captured = capsys.readouterr()
    out = captured.out
    assert code == EXIT_SETPOINT_REFUSED == 4  # the 0 W setpoint is below the minimum
    assert errors(captured.err) == [
        f"error: sim dso: 1 setpoint(s) refused by 127.0.0.1:{ports[0]} (negative ACT_CON)"
    ]
    assert "setpoint 20000 at IOA 100: ACT_CON positive" in out
    assert "setpoint 0 at IOA 100: ACT_CON negative" in out
    lines = [json.loads(line) for line in record.getvalue().splitlines()]
    in_force = [
        o for line in lines if line["type"] == "M_ME_TF_1" for o in line["objects"] if o["ioa"] == 201
    ]
    assert in_force and in_force[-1]["value"] == 20000.0 and in_force[-1]["time_tag"] is not None


async def test_sim_stations_connect_and_report(
    ports: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(
        url=f"ws://127.0.0.1:{ports[1]}",
        count=2,
        id_prefix="cli-cs",
        version="2.0.1",
        demand_w=5000.0,
        phases=3,
        max_power_w=22000.0,
        ramp_w_per_s=1e6,
        password="",
        duration=1.5,
        status_every=0.5,
        connect_timeout=10.0,
    )
    assert await _sim_stations(args) == 0
    assert "connected 2/2" in capsys.readouterr().out


def test_sim_dso_that_cannot_connect_says_why_in_one_line_and_exits_3() -> None:
    port = closed_port()
    result = run_cli("sim", "dso", "--port", str(port), "--setpoint", "20000")
    assert result.returncode == EXIT_COULD_NOT_CONNECT == 3
    assert result.stderr.splitlines() == [
        f"error: sim dso: could not connect to 127.0.0.1:{port}: connection refused (nothing listens there)"
    ]
    assert result.stdout == ""


async def test_sim_dso_closed_by_an_outstation_that_does_not_allow_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = {"iec104": {"allowed_masters": ["192.0.2.1"]}}  # not us
    gateway = build_gateway(gateway_config(overrides, str(tmp_path / "s.sqlite3"), time_scale=1.0))
    await gateway.start()
    try:
        port = next(a.port for a in gateway.adapters if type(a).__name__ == "Iec104Outstation")
        code = await _sim_dso(dso_args(port, setpoint=[20000.0], connect_timeout=5.0), None)
    finally:
        await gateway.stop()
    err = errors(capsys.readouterr().err)
    assert code == EXIT_COULD_NOT_CONNECT
    assert len(err) == 1 and err[0].startswith(f"error: sim dso: could not connect to 127.0.0.1:{port}: ")
    assert "closed by the peer" in err[0] and "allowed_masters" in err[0]


async def test_sim_stations_that_cannot_connect_say_why_in_one_line_and_exit_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    args = argparse.Namespace(
        url=f"ws://127.0.0.1:{port}",
        count=2,
        id_prefix="cli-cs",
        version="1.6",
        demand_w=5000.0,
        phases=3,
        max_power_w=22000.0,
        ramp_w_per_s=1e6,
        password="",
        duration=30.0,
        status_every=0.5,
        connect_timeout=1.0,
    )
    assert await _sim_stations(args) == EXIT_COULD_NOT_CONNECT
    err = errors(capsys.readouterr().err)
    expected = (
        f"error: sim stations: could not connect 2/2 station(s) to ws://127.0.0.1:{port} within 1 s:"
        " cli-cs1: connection refused (nothing listens there)"
    )
    assert err == [expected]


def test_the_sim_help_lists_the_exit_codes() -> None:
    for command in ("dso", "stations"):
        out = run_cli("sim", command, "--help").stdout
        assert "3  could not connect" in out and "4  a setpoint was refused" in out


async def test_sim_dso_tls_failure_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.pki import SERVER_EXT, issue, make_ca, server_tls

    make_ca(tmp_path, "ca", "/CN=site CA")
    make_ca(tmp_path, "other", "/CN=someone else's CA")  # what the master wrongly trusts
    issue(tmp_path, "server", "/CN=gateway", SERVER_EXT)
    tls = server_tls(tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key", True)
    overrides = {"iec104": {"tls": tls}}
    gateway = build_gateway(gateway_config(overrides, str(tmp_path / "s.sqlite3"), time_scale=1.0))
    await gateway.start()
    try:
        port = next(a.port for a in gateway.adapters if type(a).__name__ == "Iec104Outstation")
        args = dso_args(port, setpoint=[20000.0], tls_ca=str(tmp_path / "other.crt"))
        code = await _sim_dso(args, None)
    finally:
        await gateway.stop()
    err = errors(capsys.readouterr().err)
    assert code == EXIT_COULD_NOT_CONNECT
    assert len(err) == 1 and err[0].startswith(f"error: sim dso: could not connect to 127.0.0.1:{port}: ")
    assert "TLS failure" in err[0], err
