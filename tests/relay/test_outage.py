"""A CSMS outage during transactions: stations stay up under the DSO cap, everything is replayed in order."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from gateway.core.events import SetpointReceived
from tests.relay.conftest import Site, SiteFactory, relay_station

pytestmark = pytest.mark.asyncio


def _calls(frames: list[str]) -> list[list[Any]]:
    return [m for f in frames if (m := orjson.loads(f))[0] == 2]


async def _cut(site: Site, station_id: str) -> None:
    await site.csms.stop()
    relay = site.server.relay_hub.relays[station_id]  # type: ignore[union-attr]
    await site.until(lambda: not relay.link.up)


def _mv16(tx: int, minute: int, kw: str) -> Any:
    return call16.MeterValues(
        connector_id=1,
        transaction_id=tx,
        meter_value=[
            {
                "timestamp": f"2025-01-01T00:{minute:02d}:00Z",
                "sampled_value": [{"value": kw, "measurand": "Power.Active.Import", "unit": "kW"}],
            }
        ],
    )


async def test_v16_outage_replays_transactions_in_order_with_csms_ids(make_site: SiteFactory) -> None:
    site = await make_site()
    async with relay_station(site.port, "CP16") as cp:
        await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
        live_start = await cp.call(
            call16.StartTransaction(
                connector_id=2, id_tag="T0", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        await _cut(site, "CP16")

        # The CSMS is away: the station is answered locally and keeps its DSO cap.
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="T1", meter_start=100, timestamp="2025-01-01T00:01:00Z"
            )
        )
        local_tx = start.transaction_id
        assert local_tx != live_start.transaction_id
        for minute, kw in ((2, "7.0"), (3, "6.5"), (4, "6.0")):
            await cp.call(_mv16(local_tx, minute, kw))
        await site.until(lambda: site.station("CP16").power_w == 6000.0)  # type: ignore[union-attr]
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="SuspendedEVSE"))
        assert (await site.runtime.submit_setpoint(SetpointReceived(8000.0))).accepted
        await site.until(
            lambda: (v := site.station("CP16")) is not None and v.enforced and v.limit_w == 8000.0
        )
        await cp.call(
            call16.StopTransaction(meter_stop=900, timestamp="2025-01-01T00:05:00Z", transaction_id=local_tx)
        )
        await cp.call(
            call16.StopTransaction(
                meter_stop=50, timestamp="2025-01-01T00:05:30Z", transaction_id=live_start.transaction_id
            )
        )
        offline = cp.wire.calls_sent()[-7:]

        before = len(site.csms.frames_of("CP16", "in"))
        await site.csms.start()  # the CSMS is back (same port)
        await site.csms.wait_for(
            lambda f: (
                f.station_id == "CP16"
                and f.action == "StopTransaction"
                and orjson.loads(f.raw)[3]["transactionId"] == live_start.transaction_id
            ),
            10.0,
        )
        # A live call after the return goes straight to the CSMS.
        await cp.call(call16.Heartbeat())
        await site.csms.wait_for(lambda f: f.station_id == "CP16" and f.action == "Heartbeat", 5.0)

    replayed = _calls([f.raw for f in site.csms.frames_of("CP16", "in")[before:]])
    assert [m[2] for m in replayed] == [
        "BootNotification",
        "StartTransaction",
        "MeterValues",
        "MeterValues",
        "MeterValues",
        "StatusNotification",
        "StopTransaction",
        "StopTransaction",
        "Heartbeat",
    ]
    # The CSMS's own transaction id replaces the one the gateway gave the station.
    start_id = replayed[1][1]
    answer = next(
        orjson.loads(f.raw)
        for f in site.csms.frames_of("CP16", "out")
        if orjson.loads(f.raw)[:2] == [3, start_id]
    )
    csms_tx = answer[2]["transactionId"]
    assert csms_tx != local_tx
    assert [m[3]["transactionId"] for m in replayed[2:5]] == [csms_tx] * 3
    assert replayed[6][3]["transactionId"] == csms_tx
    assert [m[3]["meterValue"][0]["sampledValue"][0]["value"] for m in replayed[2:5]] == ["7.0", "6.5", "6.0"]
    # Unmapped frames went upstream byte-for-byte.
    assert [f.raw for f in site.csms.frames_of("CP16", "in")[before:]][1] == offline[0]
    # None twice.
    ids = [m[1] for m in replayed]
    assert len(ids) == len(set(ids))
    assert site.server.relay_hub.outbox.count() == 0  # type: ignore[union-attr]


async def test_v201_outage_replays_transaction_events_in_order(make_site: SiteFactory) -> None:
    site = await make_site()
    async with relay_station(site.port, "CP201", "ocpp2.0.1") as cp:
        await cp.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        await site.until(lambda: (v := site.station("CP201")) is not None and v.enforced)
        await _cut(site, "CP201")
        for seq, event in enumerate(("Started", "Updated", "Updated", "Ended")):
            await cp.call(
                call201.TransactionEvent(
                    event_type=event,
                    timestamp=f"2025-01-01T00:0{seq}:00Z",
                    trigger_reason="MeterValuePeriodic" if event == "Updated" else "CablePluggedIn",
                    seq_no=seq,
                    transaction_info={"transaction_id": "TX-9"},
                    evse={"id": 1, "connector_id": 1},
                    meter_value=[
                        {
                            "timestamp": f"2025-01-01T00:0{seq}:00Z",
                            "sampled_value": [
                                {"value": 1000 * (seq + 1), "measurand": "Power.Active.Import"}
                            ],
                        }
                    ],
                )
            )
        await cp.call(call201.Heartbeat())  # answered locally, not kept
        offline = [m for m in cp.wire.calls_sent() if orjson.loads(m)[2] == "TransactionEvent"]
        assert (await site.runtime.submit_setpoint(SetpointReceived(9000.0))).accepted
        # The transaction has ended: the station is idle and keeps its idle share of the 9 kW.
        await site.until(
            lambda: (
                (v := site.station("CP201")) is not None
                and v.enforced
                and v.limit_w == site.config.ocpp.station_min_power_w
                and site.runtime.view().limit_w == 9000.0
            )
        )

        before = len(site.csms.frames_of("CP201", "in"))
        await site.csms.start()
        await site.csms.wait_for(
            lambda f: f.station_id == "CP201" and f.action == "TransactionEvent" and '"Ended"' in f.raw, 10.0
        )

    upstream = [f.raw for f in site.csms.frames_of("CP201", "in")[before:]]
    calls = _calls(upstream)
    assert [m[2] for m in calls] == ["BootNotification"] + ["TransactionEvent"] * 4
    replayed = [orjson.loads(u) for u in upstream if orjson.loads(u)[0] == 2][1:]
    # The station's frames, in order, once each; each under a new id (2.0.1: no id twice for one
    # identity, on any connection, and the CSMS may have seen the stored one before the cut).
    assert [m[2:] for m in replayed] == [orjson.loads(o)[2:] for o in offline]
    assert all(m[1].startswith("ocpp809-") for m in replayed)


async def test_close_station_after_grace_when_configured(make_site: SiteFactory) -> None:
    site = await make_site({"on_outage": "close_station", "close_grace_s": 0.3})
    async with relay_station(site.port, "CPX") as cp:
        await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        await _cut(site, "CPX")
        await site.until(lambda: cp.wire.ws.close_code is not None, 5.0)
        assert cp.wire.ws.close_code == 1001
