"""The recording CSMS that speaks only ocpp2.0.1, on 127.0.0.1: it refuses other offers,
records what it says on a closing link as undelivered, and re-checks every frame against
the ``ocpp`` library's schemas (CALLERRORs counted too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import websockets
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from websockets.asyncio.client import connect

from scenarios.sim_csms import SimCsms

TIMEOUT = 5.0
V201 = websockets.Subprotocol("ocpp2.0.1")
V16 = websockets.Subprotocol("ocpp1.6")


@pytest.fixture
async def csms() -> AsyncIterator[SimCsms]:
    server = SimCsms(subprotocols=("ocpp2.0.1",))
    await server.start()
    yield server
    await server.stop()


def test_only_known_subprotocols() -> None:
    with pytest.raises(ValueError, match="ocpp2.0.1"):
        SimCsms(subprotocols=("ocpp1.5",))
    with pytest.raises(ValueError):
        SimCsms(subprotocols=())


async def test_a_16_offer_is_refused_with_400_and_recorded(csms: SimCsms) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await connect(f"{csms.url}/CP16", subprotocols=[V16], open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 400
    with pytest.raises(websockets.exceptions.InvalidStatus):
        await connect(f"{csms.url}/CPNONE", open_timeout=TIMEOUT)  # no subprotocol at all
    assert [(r.station_id, r.offered) for r in csms.refused] == [("CP16", "ocpp1.6"), ("CPNONE", "")]
    assert csms.frames == []


async def test_a_201_station_is_served_and_its_frames_are_valid(csms: SimCsms) -> None:
    async with connect(f"{csms.url}/CP201", subprotocols=[V16, V201], open_timeout=TIMEOUT) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
        cp = ChargePoint201("CP201", ws)
        reader = asyncio.create_task(cp.start())
        try:
            answer = await cp.call(
                call201.BootNotification(
                    charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"
                )
            )
            assert answer.status == "Accepted"
            schedule = {
                "id": 1,
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 7000.0}],
            }
            limit = await cp.call(
                call201.NotifyChargingLimit(
                    charging_limit={"charging_limit_source": "SO"}, charging_schedule=[schedule]
                )
            )
            assert limit is not None
            assert csms.limits_told() == {"CP201": 7000.0}
            assert await cp.call(call201.ClearedChargingLimit(charging_limit_source="SO")) is not None
            assert csms.limits_told() == {"CP201": None}
        finally:
            reader.cancel()
    assert csms.refused == []
    assert [f.subprotocol for f in csms.frames] == ["ocpp2.0.1"] * 6
    assert csms.schema_failures() == []


async def test_an_invalid_call_and_the_callerror_are_both_failures(csms: SimCsms) -> None:
    async with connect(f"{csms.url}/CPBAD", subprotocols=[V201], open_timeout=TIMEOUT) as ws:
        await ws.send('[2,"m1","BootNotification",{"chargingStation":{"model":"M","vendorName":"V"}}]')
        reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert str(reply).startswith('[4,"m1"')  # the library's strict validation refused it
    failures = csms.schema_failures("CPBAD")
    assert len(failures) == 2, failures
    assert "CALL BootNotification invalid" in failures[0] and "reason" in failures[0]
    assert "CALLERROR" in failures[1] and "BootNotification" in failures[1]
    assert csms.schema_failures("someone else") == []


async def test_an_answer_on_a_closing_link_is_recorded_undelivered(csms: SimCsms) -> None:
    async with connect(f"{csms.url}/CPGONE", subprotocols=[V201], open_timeout=TIMEOUT) as ws:
        boot = '[2,"b1","BootNotification",{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"V"}}]'
        await ws.send(boot)
        await asyncio.wait_for(ws.recv(), TIMEOUT)
        central = csms.stations["CPGONE"]
        await ws.close()
        await asyncio.sleep(0.05)
        # what the CSMS says now never reaches the station
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await central._connection.send('[3,"late",{}]')
    assert ("CPGONE", "late") in csms.undelivered
    assert ("CPGONE", "b1") not in csms.undelivered


async def test_a_call_id_used_again_after_its_answer_was_delivered(csms: SimCsms) -> None:
    boot = '[2,"b1","BootNotification",{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"V"}}]'
    beat = '[2,"h1","Heartbeat",{}]'
    for _ in range(2):  # two connections of the same identity, the same ids on both
        async with connect(f"{csms.url}/CPID", subprotocols=[V201], open_timeout=TIMEOUT) as ws:
            for text in (boot, beat):
                await ws.send(text)
                await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert csms.schema_failures("CPID") == []  # every frame valid: ids are another rule
    assert csms.reused_ids("CPID") == [
        (
            "CPID -> CSMS: BootNotification under id b1, used for BootNotification on an earlier connection"
            " (its answer delivered)"
        ),
        "CPID -> CSMS: Heartbeat under id h1, used for Heartbeat on an earlier connection (its answer delivered)",
    ]
    csms.undelivered.add(("CPID", "b1"))  # had the first answer been lost: a retry, named so
    assert "(its answer lost: a retry)" in csms.reused_ids("CPID")[0]
    assert csms.reused_ids("someone else") == []


async def test_16_ids_need_only_differ_on_one_connection() -> None:
    server = SimCsms(subprotocols=("ocpp1.6",))
    await server.start()
    try:
        beat = '[2,"h1","Heartbeat",{}]'
        for again in (False, True):
            async with connect(f"{server.url}/CP16", subprotocols=[V16], open_timeout=TIMEOUT) as ws:
                for _ in range(2 if again else 1):
                    await ws.send(beat)
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
    finally:
        await server.stop()
    assert server.reused_ids() == [
        "CP16 -> CSMS: Heartbeat under id h1, used for Heartbeat on this connection (its answer delivered)"
    ]
    assert server.schema_failures() == []
