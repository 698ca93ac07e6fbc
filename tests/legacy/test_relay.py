"""A Series 4 unit behind the relay: the CSMS sees a normal 1.6 station under its identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from ocpp.v16 import call as call16

from gateway.config import parse_config
from ocpp_side.server import StationServer
from scenarios.legacy_unit import UNKNOWN_FIELD
from scenarios.sim_csms import SimCsms
from tests.legacy.conftest import LegacySite
from tests.legacy.units import legacy_unit
from tests.support.loopback import start_core

SERIAL = "VX4-000777"


@pytest.fixture
async def relayed(tmp_path: Path) -> AsyncIterator[tuple[LegacySite, SimCsms]]:
    csms = SimCsms("127.0.0.1", 0)
    await csms.start()
    config = parse_config(
        {
            "limits": {"initial_limit_w": 100000.0, "fallback_limit_w": 10000.0},
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0},
            "legacy": {"enabled": True, "listen_port": 0, "timezone": "Europe/Berlin"},
            "upstream": {
                "csms_url": csms.url,
                "outbox_path": str(tmp_path / "outbox.sqlite3"),
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
                "call_timeout_s": 2.0,
            },
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )
    runtime = start_core(config)
    server = StationServer(config.ocpp, config.upstream, runtime, config.legacy)
    await server.start()
    try:
        yield LegacySite(config, runtime, server), csms
    finally:
        await server.stop()
        await runtime.close()
        await csms.stop()


async def test_the_csms_sees_valid_16_under_the_units_identity(relayed: tuple[LegacySite, SimCsms]) -> None:
    site, csms = relayed
    async with legacy_unit(site.legacy_port, SERIAL, timezone="Europe/Berlin") as cp:
        boot = await cp.call(
            call16.BootNotification(charge_point_model="S4-ULTRA", charge_point_vendor="Voltex")
        )
        assert boot.status == "Accepted" and boot.interval == csms.heartbeat_s  # the CSMS's answer
        await cp.call(
            call16.StatusNotification(
                connector_id=1, error_code="NoError", status="Available", timestamp="2026-01-15T07:30:00Z"
            )
        )
        answer = await csms.call(
            SERIAL, call16.ChangeConfiguration(key="MeterValueSampleInterval", value="30")
        )
        assert answer.status == "Accepted"

    upstream = [orjson.loads(f.raw) for f in csms.frames_of(SERIAL, "in")]
    calls = {m[2]: m[3] for m in upstream if m[0] == 2}
    assert calls["BootNotification"] == {
        "chargePointVendor": "Voltex",
        "chargePointModel": "S4-ULTRA",
        "chargePointSerialNumber": SERIAL,
    }
    assert calls["StatusNotification"] == {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Available",
        "timestamp": "2026-01-15T07:30:00Z",
    }
    replies = [m for m in upstream if m[0] == 3]
    assert replies and all(UNKNOWN_FIELD not in m[2] for m in replies)
