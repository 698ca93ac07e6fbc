"""The outage scenario, time-scaled (a "minute" of meter sampling is 0.05 s here).

A 1.6 and a 2.0.1 station charge while the CSMS is cut; the DSO changes the limit three
times meanwhile and the 1.6 station even reconnects (and boots again) during the cut.
The limit is enforced on both after every change; when the CSMS returns it receives
every transaction message and meter value, in order, none twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from gateway.core.events import SetpointReceived
from tests.relay.conftest import Site, SiteFactory, relay_station

pytestmark = pytest.mark.asyncio
MINUTE_S = 0.05
DURABLE = {"StartTransaction", "StopTransaction", "MeterValues", "StatusNotification", "TransactionEvent"}


def _durable(frames: list[str]) -> list[list[Any]]:
    return [m for f in frames if (m := orjson.loads(f))[0] == 2 and m[2] in DURABLE]


async def _enforced_everywhere(site: Site, ids: tuple[str, ...]) -> None:
    await site.until(lambda: all((v := site.station(i)) is not None and v.enforced for i in ids))


async def test_csms_cut_for_minutes_during_transactions_and_limit_changes(make_site: SiteFactory) -> None:
    site = await make_site({"connect_wait_s": 0.2})
    ids = ("A16", "B201")
    sent_a: list[str] = []
    async with relay_station(site.port, "B201", "ocpp2.0.1") as b:
        await b.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        async with relay_station(site.port, "A16") as a:
            await a.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            await _enforced_everywhere(site, ids)
            await site.csms.stop()
            hub = site.server.relay_hub
            assert hub is not None
            await site.until(lambda: not any(r.link.up for r in hub.relays.values()))

            start = await a.call(
                call16.StartTransaction(
                    connector_id=1, id_tag="T", meter_start=0, timestamp="2025-01-01T00:00:00Z"
                )
            )
            await b.call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp="2025-01-01T00:00:00Z",
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info={"transaction_id": "B-1"},
                    evse={"id": 1, "connector_id": 1},
                )
            )
            for minute, limit_w in ((1, 30000.0), (2, 12000.0), (3, 8000.0)):
                assert (await site.runtime.submit_setpoint(SetpointReceived(limit_w))).accepted
                await site.until(lambda lw=limit_w: site.runtime.view().limit_w == lw)
                await _enforced_everywhere(site, ids)  # the DSO limit holds without the CSMS
                await a.call(
                    call16.MeterValues(
                        connector_id=1,
                        transaction_id=start.transaction_id,
                        meter_value=[
                            {
                                "timestamp": f"2025-01-01T00:0{minute}:00Z",
                                "sampled_value": [
                                    {"value": str(minute), "measurand": "Power.Active.Import", "unit": "kW"}
                                ],
                            }
                        ],
                    )
                )
                await b.call(
                    call201.TransactionEvent(
                        event_type="Updated",
                        timestamp=f"2025-01-01T00:0{minute}:00Z",
                        trigger_reason="MeterValuePeriodic",
                        seq_no=minute,
                        transaction_info={"transaction_id": "B-1"},
                        meter_value=[
                            {
                                "timestamp": f"2025-01-01T00:0{minute}:00Z",
                                "sampled_value": [
                                    {"value": minute * 1000, "measurand": "Power.Active.Import"}
                                ],
                            }
                        ],
                    )
                )
                await asyncio.sleep(MINUTE_S)  # scenario time passing, not synchronisation
            sent_a += a.wire.sent
        # The 1.6 station drops and comes back while the CSMS is still away.
        async with relay_station(site.port, "A16") as a2:
            await a2.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            await a2.call(
                call16.StopTransaction(
                    meter_stop=300, timestamp="2025-01-01T00:04:00Z", transaction_id=start.transaction_id
                )
            )
            await b.call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp="2025-01-01T00:04:00Z",
                    trigger_reason="EVDeparted",
                    seq_no=4,
                    transaction_info={"transaction_id": "B-1"},
                )
            )
            await _enforced_everywhere(site, ids)
            assert site.station("A16").limit_w + site.station("B201").limit_w <= 8000.0  # type: ignore[union-attr]
            sent_a += a2.wire.sent

            await site.csms.start()
            await site.csms.wait_for(lambda f: f.station_id == "A16" and f.action == "StopTransaction", 10.0)
            await site.csms.wait_for(lambda f: f.station_id == "B201" and '"Ended"' in f.raw, 10.0)

        got_a = _durable([f.raw for f in site.csms.frames_of("A16", "in")])
        got_b = _durable([f.raw for f in site.csms.frames_of("B201", "in")])
        want_b = _durable(b.wire.sent)
    want_a = _durable(sent_a)
    # Every message, in order, none twice (1.6: under the transaction id the CSMS assigned).
    assert [m[1] for m in got_a] == [m[1] for m in want_a]
    assert [m[2] for m in got_a] == [
        "StartTransaction",
        "MeterValues",
        "MeterValues",
        "MeterValues",
        "StopTransaction",
    ]
    csms_tx = {m[3].get("transactionId") for m in got_a[1:]}
    assert len(csms_tx) == 1 and start.transaction_id not in csms_tx
    assert [m[2:] for m in got_b] == [m[2:] for m in want_b]  # 2.0.1: replayed under new ids
    assert [m[3]["eventType"] for m in got_b] == ["Started", "Updated", "Updated", "Updated", "Ended"]
