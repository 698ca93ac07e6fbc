"""The translated relay's boot gate (a CSMS's Pending boot is honoured) and its outbox replayed
while the station is away, on loopback with a strict 2.0.1 library CSMS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16

from gateway.core.model import OcppVersion
from tests.translation.relay_support import (
    Csms201,
    Site,
    csms_wire,
    schema_failures,
    site_config,
    start_site,
    station16,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def csms() -> AsyncIterator[Csms201]:
    server = Csms201()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def site(tmp_path: Path, csms: Csms201) -> AsyncIterator[Site]:
    running = await start_site(site_config(tmp_path, csms, "gw"), csms)
    yield running
    await running.stop()


def _boot() -> Any:
    return call16.BootNotification(charge_point_model="Wallbox", charge_point_vendor="Acme")


def _actions(csms: Csms201, station_id: str) -> list[str | None]:
    return [f.action for f in csms.calls_in(station_id)]


async def test_a_pending_boot_holds_everything_else_until_accepted(site: Site, csms: Csms201) -> None:
    csms.behaviour.boot_status = ["Pending"]
    async with station16(site.port, "PB") as cp:
        assert (await cp.call(_boot())).status == "Pending"  # the station is told
        status = await cp.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )
        assert status is not None  # answered locally ...
        await cp.call(call16.Heartbeat())
        assert _actions(csms, "PB") == ["BootNotification"]  # ... and nothing else reached the CSMS
        assert site.metric("ocpp809_upstream_outbox_depth") == 1  # the status waits, translated

        assert (await cp.call(_boot())).status == "Accepted"
        await csms.wait_for(lambda: "StatusNotification" in _actions(csms, "PB"))
        await cp.call(call16.Heartbeat())
        await csms.wait_for(lambda: "Heartbeat" in _actions(csms, "PB"))
    assert _actions(csms, "PB") == ["BootNotification", "BootNotification", "StatusNotification", "Heartbeat"]
    assert site.metric("ocpp809_upstream_outbox_depth") == 0
    assert schema_failures(csms_wire(csms, "PB"), OcppVersion.V201) == []


async def test_the_outbox_is_replayed_while_the_station_is_away(site: Site, csms: Csms201) -> None:
    hub = site.server.relay_hub
    assert hub is not None
    async with station16(site.port, "AW") as cp:
        assert (await cp.call(_boot())).status == "Accepted"
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        relay = hub.relays["AW"]
        await csms.stop()
        await site.until(lambda: not relay.link.up)
        await cp.call(
            call16.StopTransaction(
                meter_stop=500, timestamp="2025-01-01T00:05:00Z", transaction_id=start.transaction_id
            )
        )
        assert hub.outbox.has_pending("AW")
    await site.until(lambda: "AW" in hub.drains)  # gone, with its outbox still full

    before = len(csms.calls_in("AW"))
    await csms.start()
    await site.until(lambda: not hub.outbox.has_pending("AW") and "AW" not in hub.drains, 10)
    replayed = csms.calls_in("AW")[before:]
    assert [f.action for f in replayed] == ["BootNotification", "TransactionEvent"]
    assert replayed[1].payload["eventType"] == "Ended"
    assert site.metric("ocpp809_upstream_outbox_depth") == 0

    # The station comes back: nothing is sent twice.
    async with station16(site.port, "AW") as cp:
        assert (await cp.call(_boot())).status == "Accepted"
        await cp.call(call16.Heartbeat())
        await csms.wait_for(lambda: csms.calls_in("AW")[-1].action == "Heartbeat")
    ended = [f for f in csms.calls_in("AW", "TransactionEvent") if f.payload["eventType"] == "Ended"]
    assert len(ended) == 1
    assert schema_failures(csms_wire(csms, "AW"), OcppVersion.V201) == []


async def test_a_station_back_before_the_csms_takes_its_outbox_over(site: Site, csms: Csms201) -> None:
    hub = site.server.relay_hub
    assert hub is not None
    async with station16(site.port, "BK") as cp:
        assert (await cp.call(_boot())).status == "Accepted"
        relay = hub.relays["BK"]
        await csms.stop()
        await site.until(lambda: not relay.link.up)
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Faulted"))
    await site.until(lambda: "BK" in hub.drains)  # the drain waits for the CSMS ...
    async with station16(site.port, "BK") as cp:
        await site.until(lambda: "BK" not in hub.drains)  # ... and gives way to the station's relay
        before = len(csms.calls_in("BK"))
        await csms.start()
        await site.until(lambda: not hub.outbox.has_pending("BK"), 10)
        await cp.call(call16.Heartbeat())
        await csms.wait_for(lambda: any(f.action == "Heartbeat" for f in csms.calls_in("BK")[before:]))
    after = [f.action for f in csms.calls_in("BK")[before:]]
    assert after.count("StatusNotification") == 1 and after[0] == "BootNotification"


async def test_a_rejected_repeated_boot_is_tried_again_after_the_interval(site: Site, csms: Csms201) -> None:
    hub = site.server.relay_hub
    assert hub is not None
    async with station16(site.port, "RJ") as cp:
        assert (await cp.call(_boot())).status == "Accepted"
        relay = hub.relays["RJ"]
        await csms.stop()
        await site.until(lambda: not relay.link.up)
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Unavailable"))
        csms.behaviour.boot_status, csms.behaviour.boot_interval_s = ["Rejected"], 1
        before = len(csms.calls_in("RJ"))
        await csms.start()
        await csms.wait_for(lambda: "StatusNotification" in _actions(csms, "RJ")[before:], 10)
    # The gateway's repeated boot was rejected: nothing else went until it was accepted.
    assert _actions(csms, "RJ")[before:] == ["BootNotification", "BootNotification", "StatusNotification"]
