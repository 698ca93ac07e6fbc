"""``ocpp809 sim dso`` and ``sim stations`` against a real gateway on loopback."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_gateway
from scenarios.cli import _sim_dso, _sim_stations
from scenarios.runner import gateway_config


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
    }
    base.update(kw)
    return argparse.Namespace(**base)


async def test_sim_dso_prints_every_act_con_and_records_telemetry(
    ports: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    record = io.StringIO()
    code = await _sim_dso(dso_args(ports[0], setpoint=[20000.0, 0.0], interrogate=True, listen=2.0), record)
    out = capsys.readouterr().out
    assert code == 1  # the 0 W setpoint was refused
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
    )
    assert await _sim_stations(args) == 0
    assert "connected 2/2" in capsys.readouterr().out
