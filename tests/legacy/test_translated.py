"""A Series 4 unit behind a 2.0.1 CSMS: a normal 2.0.1 station under its serial (translated relay)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ocpp.v16 import call as call16

from gateway.config import parse_config
from gateway.core.model import OcppVersion
from ocpp_side.server import StationServer
from tests.legacy.conftest import LegacySite
from tests.legacy.units import legacy_unit
from tests.support.loopback import start_core
from tests.translation.relay_support import Csms201, csms_wire, schema_failures

SERIAL = "VX4-000555"


@pytest.fixture
async def translated(tmp_path: Path) -> AsyncIterator[tuple[LegacySite, Csms201]]:
    csms = Csms201()
    await csms.start()
    config = parse_config(
        {
            "limits": {"initial_limit_w": 100000.0, "fallback_limit_w": 10000.0},
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0},
            "legacy": {"enabled": True, "listen_port": 0, "timezone": "Europe/Berlin"},
            "upstream": {
                "csms_url": csms.url,
                "csms_protocol": "ocpp2.0.1",
                "outbox_path": str(tmp_path / "outbox.sqlite3"),
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
                "connect_wait_s": 2.0,
                "call_timeout_s": 2.0,
            },
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )
    runtime = start_core(config)
    server = StationServer(config.ocpp, config.upstream, runtime, config.legacy)
    assert server.relay_hub is not None
    server.relay_hub.capacity_w = config.limits.max_limit_w
    await server.start()
    try:
        yield LegacySite(config, runtime, server), csms
    finally:
        await server.stop()
        await runtime.close()
        await csms.stop()


async def test_a_session_reported_only_at_its_end_reaches_the_csms_whole(
    translated: tuple[LegacySite, Csms201],
) -> None:
    site, csms = translated
    async with legacy_unit(site.legacy_port, SERIAL, timezone="Europe/Berlin") as cp:
        boot = await cp.call(
            call16.BootNotification(charge_point_model="S4-ULTRA", charge_point_vendor="Voltex")
        )
        assert boot.status == "Accepted"
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=1000, timestamp="2026-01-15T07:30:00Z"
            )
        )
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        await cp.call(
            call16.StopTransaction(
                meter_stop=12000,
                timestamp="2026-01-15T09:30:00Z",
                transaction_id=start.transaction_id,
                reason="Local",
            )
        )
        await site.until(lambda: (v := site.station(SERIAL)) is not None and v.enforced)
        await csms.wait_for(
            lambda: any(
                f.payload.get("eventType") == "Ended" for f in csms.calls_in(SERIAL, "TransactionEvent")
            )
        )

    [boot201] = [f.payload for f in csms.calls_in(SERIAL, "BootNotification")]
    assert boot201["chargingStation"]["serialNumber"] == SERIAL
    assert boot201["chargingStation"]["model"] == "S4-ULTRA"
    events = [f.payload for f in csms.calls_in(SERIAL, "TransactionEvent")]
    assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    assert events[0]["timestamp"].startswith("2026-01-15T07:30:00")  # the unit wrote 08:30 Berlin time
    assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    [[ended]] = [mv["sampledValue"] for mv in events[-1]["meterValue"]]  # the energy, only at the end
    assert ended["measurand"] == "Energy.Active.Import.Register" and ended["value"] == 12000
    assert schema_failures(csms_wire(csms, SERIAL), OcppVersion.V201) == []
