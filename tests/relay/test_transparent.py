"""Frames pass station <-> CSMS unchanged; the gateway's own calls never leak upstream."""

from __future__ import annotations

import orjson
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from tests.relay.conftest import SiteFactory, relay_station

pytestmark = pytest.mark.asyncio


def _ids(frames: list[str]) -> set[str]:
    return {str(orjson.loads(f)[1]) for f in frames}


async def test_v16_frames_pass_unchanged_both_ways(make_site: SiteFactory) -> None:
    site = await make_site()
    async with relay_station(site.port, "CP16") as cp:
        boot = await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        assert boot.status == "Accepted" and boot.interval == site.csms.heartbeat_s  # the CSMS's answer
        await cp.call(call16.Heartbeat())
        await cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
        vendor = await cp.call(
            call16.DataTransfer(vendor_id="com.acme", message_id="x", data='{"a": [1, 2]}')
        )
        assert vendor.status == "UnknownVendorId"  # the CSMS's answer, not the gateway's
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        await cp.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=start.transaction_id,
                meter_value=[
                    {
                        "timestamp": "2025-01-01T00:01:00Z",
                        "sampled_value": [{"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"}],
                    }
                ],
            )
        )
        # Meter values still feed the core.
        await site.until(lambda: (v := site.station("CP16")) is not None and v.power_w == 7200.0)
        # The gateway's own setup and profiles went to the station meanwhile.
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
        own = [m for m in cp.wire.calls_received() if str(m[1]).startswith("ocpp809-")]
        assert {m[2] for m in own} >= {"GetConfiguration", "SetChargingProfile"}

        # A CSMS call reaches the station unchanged, its answer reaches the CSMS unchanged.
        answer = await site.csms.call("CP16", call16.ChangeConfiguration(key="VendorKey", value="42"))
        assert answer.status == "Accepted"
        sent = [f for f in site.upstream_out("CP16") if orjson.loads(f)[0] == 2]
        assert sent and sent[-1] in cp.wire.received
        replies = [m for m in cp.wire.sent if orjson.loads(m)[1] == orjson.loads(sent[-1])[1]]
        assert replies and replies[0] in site.upstream_in("CP16")

    upstream_in = site.upstream_in("CP16")
    # Every station CALL arrived at the CSMS as the very same text, in order.
    assert [f for f in upstream_in if orjson.loads(f)[0] == 2] == cp.wire.calls_sent()
    # Every CSMS answer reached the station as the very same text.
    for reply in (f for f in site.upstream_out("CP16") if orjson.loads(f)[0] == 3):
        assert reply in cp.wire.received
    # Replies to the gateway's own calls never went upstream.
    assert not [i for i in _ids(upstream_in) if i.startswith("ocpp809-")]
    assert len(own) >= 2


async def test_v201_frames_pass_unchanged_both_ways(make_site: SiteFactory) -> None:
    site = await make_site()
    async with relay_station(site.port, "CP201", "ocpp2.0.1") as cp:
        await cp.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        await cp.call(
            call201.StatusNotification(
                timestamp="2025-01-01T00:00:00Z",
                connector_status="Occupied",
                evse_id=1,
                connector_id=1,
                custom_data={"vendor_id": "com.acme", "extra": 1},
            )
        )
        await cp.call(
            call201.TransactionEvent(
                event_type="Started",
                timestamp="2025-01-01T00:00:00Z",
                trigger_reason="CablePluggedIn",
                seq_no=0,
                transaction_info={"transaction_id": "T-1"},
                evse={"id": 1, "connector_id": 1},
                meter_value=[
                    {
                        "timestamp": "2025-01-01T00:00:00Z",
                        "sampled_value": [{"value": 11000, "measurand": "Power.Active.Import"}],
                    }
                ],
            )
        )
        await site.until(lambda: (v := site.station("CP201")) is not None and v.power_w == 11000.0)
        await cp.call(call201.DataTransfer(vendor_id="com.acme", data={"any": ["thing", 1]}))
        await site.until(lambda: (v := site.station("CP201")) is not None and v.enforced)
        answer = await site.csms.call(
            "CP201",
            call201.SetVariables(
                set_variable_data=[
                    {"attribute_value": "1", "component": {"name": "VendorCtrlr"}, "variable": {"name": "X"}}
                ]
            ),
        )
        assert answer.set_variable_result[0]["attribute_status"] == "Accepted"

    upstream_in = site.upstream_in("CP201")
    assert [f for f in upstream_in if orjson.loads(f)[0] == 2] == cp.wire.calls_sent()
    assert any('"customData"' in f for f in upstream_in)  # unknown-to-us vendor fields kept
    for frame in site.upstream_out("CP201"):
        assert frame in cp.wire.received
    assert not [i for i in _ids(upstream_in) if i.startswith("ocpp809-")]
    assert [m for m in cp.wire.calls_received() if str(m[1]).startswith("ocpp809-")]
