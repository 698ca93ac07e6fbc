"""Verbatim relay left-overs of issue 11: a Pending boot is honoured, the outbox is replayed
while the station is away, and a TxProfile names the station's own 1.6 transaction id."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16

from scenarios import sim_csms
from tests.relay.conftest import Site, SiteFactory, relay_station

pytestmark = pytest.mark.asyncio


def _calls(site: Site, station_id: str) -> list[list[Any]]:
    return [m for f in site.upstream_in(station_id) if (m := orjson.loads(f))[0] == 2]


async def _cut(site: Site, station_id: str) -> None:
    await site.csms.stop()
    relay = site.server.relay_hub.relays[station_id]  # type: ignore[union-attr]
    await site.until(lambda: not relay.link.up)


async def test_a_pending_boot_holds_the_stations_calls(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["Pending"]

    @on("BootNotification")
    def on_boot(self: Any, **_: Any) -> Any:
        status = answers.pop(0) if answers else "Accepted"
        return result16.BootNotification(current_time="2025-01-01T00:00:00Z", interval=300, status=status)

    monkeypatch.setattr(sim_csms._Central16, "on_boot", on_boot)
    site = await make_site()
    async with relay_station(site.port, "PB16") as cp:
        assert (
            await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        ).status == ("Pending")
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        await cp.call(call16.Heartbeat())  # answered locally, not kept
        assert [m[2] for m in _calls(site, "PB16")] == ["BootNotification"]
        assert site.server.relay_hub.outbox.has_pending("PB16")  # type: ignore[union-attr]

        assert (
            await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        ).status == ("Accepted")
        await site.csms.wait_for(lambda f: f.station_id == "PB16" and f.action == "StatusNotification", 5.0)
    assert [m[2] for m in _calls(site, "PB16")] == [
        "BootNotification",
        "BootNotification",
        "StatusNotification",
    ]


async def test_the_outbox_is_replayed_while_the_station_is_away(make_site: SiteFactory) -> None:
    site = await make_site()
    hub = site.server.relay_hub
    assert hub is not None
    async with relay_station(site.port, "AW16") as cp:
        await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        await _cut(site, "AW16")
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="T", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        await cp.call(
            call16.StopTransaction(
                meter_stop=9, timestamp="2025-01-01T00:01:00Z", transaction_id=start.transaction_id
            )
        )
        offline = cp.wire.calls_sent()[-2:]
    await site.until(lambda: "AW16" in hub.drains)

    before = len(_calls(site, "AW16"))
    await site.csms.start()
    await site.until(lambda: not hub.outbox.has_pending("AW16") and "AW16" not in hub.drains, 10)
    replayed = _calls(site, "AW16")[before:]
    assert [m[2] for m in replayed] == ["BootNotification", "StartTransaction", "StopTransaction"]
    assert orjson.dumps(replayed[1]).decode() == offline[0].replace(" ", "")
    csms_tx = next(
        orjson.loads(f)[2]["transactionId"]
        for f in site.upstream_out("AW16")
        if orjson.loads(f)[:2] == [3, replayed[1][1]]
    )
    assert replayed[2][3]["transactionId"] == csms_tx  # mapped on the way, as by the relay


async def test_a_tx_profile_names_the_stations_own_transaction_id(make_site: SiteFactory) -> None:
    site = await make_site()
    async with relay_station(site.port, "TX16") as cp:
        await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        await site.until(lambda: (v := site.station("TX16")) is not None and v.enforced)
        await _cut(site, "TX16")
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="T", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        local_tx = start.transaction_id
        await site.csms.start()
        await site.csms.wait_for(lambda f: f.station_id == "TX16" and f.action == "StartTransaction", 10.0)
        relay = site.server.relay_hub.relays["TX16"]  # type: ignore[union-attr]
        await site.until(lambda: local_tx in relay.tx.csms_of)
        csms_tx = relay.tx.csms_of[local_tx]
        assert csms_tx != local_tx

        profile = call16.SetChargingProfile(
            connector_id=1,
            cs_charging_profiles={
                "charging_profile_id": 11,
                "transaction_id": csms_tx,
                "stack_level": 1,
                "charging_profile_purpose": "TxProfile",
                "charging_profile_kind": "Relative",
                "charging_schedule": {
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 16.0}],
                },
            },
        )
        assert (await site.csms.call("TX16", profile)).status == "Accepted"
        installed = [p for p in cp.log.of("SetChargingProfile") if p.get("charging_profile_id") == 11]
        assert installed[-1]["transaction_id"] == local_tx
