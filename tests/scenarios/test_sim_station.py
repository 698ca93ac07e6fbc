"""The station simulator against the recording CSMS, on real sockets over 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from ocpp.exceptions import OCPPError
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from gateway.core.model import OcppVersion
from scenarios.charging import RateUnit
from scenarios.sim_csms import Frame, SimCsms
from scenarios.sim_station import SimStation
from scenarios.station_spec import StationSpec

TIMEOUT = 10.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@pytest.fixture
async def csms() -> AsyncIterator[SimCsms]:
    server = SimCsms(heartbeat_s=60)
    await server.start()
    yield server
    await server.stop()


async def started(spec: StationSpec, csms: SimCsms) -> SimStation:
    station = SimStation(spec, csms.url)
    station.start()
    await asyncio.wait_for(station.booted.wait(), TIMEOUT)
    return station


def meter_power(frame: Frame) -> float | None:
    """Power.Active.Import in a 1.6 MeterValues or a 2.0.1 TransactionEvent/MeterValues frame."""
    msg = frame.message
    if not msg or msg[0] != 2 or msg[2] not in ("MeterValues", "TransactionEvent"):
        return None
    for mv in msg[3].get("meterValue", []):
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == "Power.Active.Import":
                return float(sv["value"])
    return None


def is_power(predicate: object) -> object:
    def check(frame: Frame) -> bool:
        power = meter_power(frame)
        return frame.direction == "in" and power is not None and predicate(power)  # type: ignore[operator]

    return check


def v16_max_profile(pid: int, stack: int, limit_w: float, valid_to: float | None = None) -> dict[str, object]:
    profile: dict[str, object] = {
        "charging_profile_id": pid,
        "stack_level": stack,
        "charging_profile_purpose": "ChargePointMaxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "charging_rate_unit": "W",
            "start_schedule": iso(time.time() - 1),
            "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
        },
    }
    if valid_to is not None:
        profile["valid_to"] = iso(valid_to)
    return profile


async def test_v16_station_boots_starts_a_transaction_and_meters(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16", demand_w=7000, ramp_w_per_s=20000), csms)
    try:
        await csms.wait_for(lambda f: f.action == "StartTransaction", TIMEOUT)
        await csms.wait_for(is_power(lambda p: p == 7000), TIMEOUT)
        actions = [f.action for f in csms.frames_of("cs16", "in") if f.action]
        assert actions[0] == "BootNotification"
        charging = [
            f
            for f in csms.frames_of("cs16", "in")
            if f.action == "StatusNotification" and f.message and f.message[3]["status"] == "Charging"
        ]
        start = next(f for f in csms.frames_of("cs16", "in") if f.action == "StartTransaction")
        assert charging and csms.frames.index(start) < csms.frames.index(charging[0])
        assert csms.subprotocols["cs16"] == "ocpp1.6"
    finally:
        await station.stop()


async def test_v16_configuration_and_max_profile_limit_the_draw(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16", demand_w=11000, ramp_w_per_s=10000), csms)
    try:
        answer = await csms.call(
            "cs16", call16.ChangeConfiguration(key="MeterValueSampleInterval", value="1")
        )
        assert answer.status == "Accepted"
        answer = await csms.call(
            "cs16",
            call16.ChangeConfiguration(
                key="MeterValuesSampledData",
                value="Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage",
            ),
        )
        assert answer.status == "Accepted"
        bad = await csms.call(
            "cs16", call16.ChangeConfiguration(key="MeterValuesSampledData", value="Bogus.Measurand")
        )
        assert bad.status == "Rejected"
        unknown = await csms.call("cs16", call16.ChangeConfiguration(key="NoSuchKey", value="1"))
        assert unknown.status == "NotSupported"
        conf = await csms.call("cs16", call16.GetConfiguration(key=["ChargeProfileMaxStackLevel", "Nope"]))
        assert conf.configuration_key == [
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"}
        ]
        assert conf.unknown_key == ["Nope"]
        await csms.wait_for(is_power(lambda p: p == 11000), TIMEOUT)

        mark = len(csms.frames)
        sent_at = time.time()
        answer = await csms.call(
            "cs16",
            call16.SetChargingProfile(connector_id=0, cs_charging_profiles=v16_max_profile(1, 1, 5000)),
        )
        assert answer.status == "Accepted"
        # Promptly a Trigger sample (the ramp has just begun), then the settled value.
        first = await csms.wait_for(is_power(lambda p: True), TIMEOUT, start=mark)
        assert first.at_s - sent_at < 0.5
        settled = await csms.wait_for(is_power(lambda p: p == 5000), TIMEOUT, start=mark)
        assert settled.at_s - sent_at >= 0.55  # 6 kW at 10 kW/s: a ramp, not a jump
        assert station.power_w() == 5000
        msg = settled.message
        assert msg is not None
        measurands = {sv["measurand"] for sv in msg[3]["meterValue"][0]["sampledValue"]}
        assert measurands == {
            "Energy.Active.Import.Register",
            "Power.Active.Import",
            "Current.Import",
            "Voltage",
        }
    finally:
        await station.stop()


async def test_v16_higher_stack_level_wins_until_its_valid_to(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16", demand_w=22000, ramp_w_per_s=1e6), csms)
    try:
        await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(1, 1, 4000)))
        valid_to = time.time() + 1.5
        answer = await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(2, 2, 9000, valid_to)))
        assert answer.status == "Accepted"
        assert station.limit_w() == 9000
        mark = len(csms.frames)
        # After validTo the station falls back to stack level 1 on its own, and says so.
        frame = await csms.wait_for(is_power(lambda p: p == 4000), TIMEOUT, start=mark)
        assert frame.at_s >= valid_to
        assert station.limit_w() == 4000
    finally:
        await station.stop()


async def test_v16_refuses_what_a_real_station_refuses(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16", max_stack_level=3, rate_units=()), csms)
    try:
        on_connector = await csms.call("cs16", call16.SetChargingProfile(1, v16_max_profile(1, 1, 4000)))
        assert on_connector.status == "Rejected"  # a station-wide max belongs on connector 0
        too_high = await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(1, 4, 4000)))
        assert too_high.status == "Rejected"
        assert station.limit_w() is None
    finally:
        await station.stop()


async def test_v201_station_variables_profiles_in_amperes_and_transaction_events(csms: SimCsms) -> None:
    spec = StationSpec(
        "cs201", version=OcppVersion.V201, demand_w=11000, ramp_w_per_s=1e6, rate_units=(RateUnit.A,)
    )
    station = await started(spec, csms)
    try:
        assert csms.subprotocols["cs201"] == "ocpp2.0.1"
        result = await csms.call(
            "cs201",
            call201.SetVariables(
                set_variable_data=[
                    {
                        "attribute_value": "1",
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                    },
                    {
                        "attribute_value": "5",
                        "component": {"name": "SmartChargingCtrlr"},
                        "variable": {"name": "ProfileStackLevel"},
                    },
                    {"attribute_value": "1", "component": {"name": "NoSuchCtrlr"}, "variable": {"name": "X"}},
                ]
            ),
        )
        assert [r["attribute_status"] for r in result.set_variable_result] == [
            "Accepted",
            "Rejected",
            "UnknownComponent",
        ]
        got = await csms.call(
            "cs201",
            call201.GetVariables(
                get_variable_data=[
                    {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "RateUnit"}}
                ]
            ),
        )
        assert got.get_variable_result[0]["attribute_value"] == "A"
        profile = {
            "id": 10,
            "stack_level": 1,
            "charging_profile_purpose": "ChargingStationMaxProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": [
                {
                    "id": 1,
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 8.0, "number_phases": 3}],
                }
            ],
        }
        mark = len(csms.frames)
        answer = await csms.call("cs201", call201.SetChargingProfile(evse_id=0, charging_profile=profile))
        assert answer.status == "Accepted"
        frame = await csms.wait_for(is_power(lambda p: abs(p - 8 * 3 * 230) < 0.01), TIMEOUT, start=mark)
        assert frame.action == "TransactionEvent"
        external = {**profile, "id": 11, "charging_profile_purpose": "ChargingStationExternalConstraints"}
        refused = await csms.call("cs201", call201.SetChargingProfile(evse_id=0, charging_profile=external))
        assert refused.status == "Rejected"
        cleared = await csms.call("cs201", call201.ClearChargingProfile(charging_profile_id=10))
        assert cleared.status == "Accepted"
        await csms.wait_for(is_power(lambda p: p == 11000), TIMEOUT, start=mark)
    finally:
        await station.stop()


async def test_station_keeps_profiles_and_reconnects_with_backoff(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16", demand_w=11000, ramp_w_per_s=1e6, reconnect_min_s=0.05), csms)
    try:
        await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(1, 1, 6000)))
        await csms.wait_for(is_power(lambda p: p == 6000), TIMEOUT)
        await station.disconnect(for_s=0.3)
        await asyncio.wait_for(_until(lambda: not station.connected.is_set()), TIMEOUT)
        assert station.power_w() == 6000  # the profile lives in the station, not in the link
        await asyncio.wait_for(station.booted.wait(), TIMEOUT)
        assert station.connections == 2
        boots = [f for f in csms.frames_of("cs16", "in") if f.action == "BootNotification"]
        assert len(boots) == 2
        starts = [f for f in csms.frames_of("cs16", "in") if f.action == "StartTransaction"]
        assert len(starts) == 1  # the transaction survives a lost connection
    finally:
        await station.stop()


async def test_station_retries_until_the_central_system_appears() -> None:
    server = SimCsms()
    await server.start()
    port = server.port
    await server.stop()  # nothing listens on the port now
    station = SimStation(
        StationSpec("late", reconnect_min_s=0.05, reconnect_max_s=0.2), f"ws://127.0.0.1:{port}"
    )
    station.start()
    try:
        await asyncio.wait_for(_until(lambda: station.attempts >= 3), TIMEOUT)
        assert not station.connected.is_set()
        late = SimCsms(port=port)
        await late.start()
        try:
            await asyncio.wait_for(station.booted.wait(), TIMEOUT)
        finally:
            await station.stop()
            await late.stop()
    finally:
        await station.stop()


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_an_ev_arriving_later_starts_a_transaction(csms: SimCsms) -> None:
    station = await started(
        StationSpec("cs201", version=OcppVersion.V201, demand_w=0, ramp_w_per_s=1e6), csms
    )
    try:
        frame = await csms.wait_for(lambda f: f.action == "StatusNotification", TIMEOUT)
        assert frame.message is not None and frame.message[3]["connectorStatus"] == "Available"
        assert station.transaction_id is None
        station.set_demand(4000)
        started_tx = await csms.wait_for(lambda f: f.action == "TransactionEvent", TIMEOUT)
        assert started_tx.message is not None and started_tx.message[3]["eventType"] == "Started"
        await csms.wait_for(is_power(lambda p: p == 4000), TIMEOUT)
    finally:
        await station.stop()


async def test_station_validates_what_it_receives_strictly(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16"), csms)
    try:
        invalid = call16.SetChargingProfile(connector_id=0, cs_charging_profiles={"stackLevel": "high"})
        with pytest.raises(OCPPError):  # a CALLERROR, never a crash or a silent accept
            await csms.stations["cs16"].call(invalid, suppress=False, skip_schema_validation=True)
        assert station.limit_w() is None
        ok = await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(1, 1, 6000)))
        assert ok.status == "Accepted"  # and the connection goes on
    finally:
        await station.stop()


@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201])
async def test_an_ev_leaving_stops_the_transaction_and_frees_the_connector(
    csms: SimCsms, version: OcppVersion
) -> None:
    station = await started(StationSpec("cs", version=version, demand_w=7000, ramp_w_per_s=1e6), csms)
    try:
        await csms.wait_for(is_power(lambda p: p == 7000), TIMEOUT)
        mark = len(csms.frames)
        station.ev_leaves()
        if version is OcppVersion.V16:
            stop = await csms.wait_for(lambda f: f.action == "StopTransaction", TIMEOUT, start=mark)
            assert stop.message is not None and stop.message[3]["reason"] == "EVDisconnected"
            status = await csms.wait_for(
                lambda f: f.action == "StatusNotification" and f.message[3]["connectorId"] == 1,  # type: ignore[index]
                TIMEOUT,
                start=mark,
            )
            assert status.message is not None and status.message[3]["status"] == "Available"
        else:
            ended = await csms.wait_for(
                lambda f: f.action == "TransactionEvent" and f.message[3]["eventType"] == "Ended",  # type: ignore[index]
                TIMEOUT,
                start=mark,
            )
            assert ended.message is not None
            assert ended.message[3]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            status = await csms.wait_for(lambda f: f.action == "StatusNotification", TIMEOUT, start=mark)
            assert status.message is not None and status.message[3]["connectorStatus"] == "Available"
        assert station.transaction_id is None
        await asyncio.wait_for(_until(lambda: station.power_w() == 0), TIMEOUT)  # the end of its ramp
        station.set_demand(5000)  # the next EV starts a new transaction
        await csms.wait_for(is_power(lambda p: p == 5000), TIMEOUT, start=mark)
        assert station.transaction_id is not None
    finally:
        await station.stop()


async def test_the_cap_is_the_live_max_profile_while_valid_then_the_fallback(csms: SimCsms) -> None:
    station = await started(StationSpec("cs16", demand_w=22000, ramp_w_per_s=1e6), csms)
    try:
        assert station.cap_w() is None  # never bound yet
        await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(1, 7, 5000)))
        live_until = time.time() + 1.0
        await csms.call("cs16", call16.SetChargingProfile(0, v16_max_profile(2, 8, 9000, live_until)))
        assert station.cap_w() == 9000
        await asyncio.wait_for(_until(lambda: time.time() >= live_until), TIMEOUT)
        assert station.cap_w() == 5000  # by the station's own clock
        await csms.call("cs16", call16.ClearChargingProfile())
        assert station.cap_w() == 22000  # bound once, bound by nothing now: its rating
    finally:
        await station.stop()


@pytest.mark.parametrize(("how", "close_frame"), [("close", True), ("abort", False)])
async def test_a_station_drops_with_or_without_a_close_frame(how: str, close_frame: bool) -> None:
    ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for _ in ws:
                pass
        ended.set_result(ws.protocol.close_rcvd)

    async with websockets.serve(
        handler, "127.0.0.1", 0, subprotocols=[websockets.Subprotocol("ocpp1.6")]
    ) as server:
        port = server.sockets[0].getsockname()[1]
        station = SimStation(StationSpec("cs16"), f"ws://127.0.0.1:{port}")
        station.start()
        try:
            await asyncio.wait_for(station.connected.wait(), TIMEOUT)
            await station.disconnect(3600, how)
            received = await asyncio.wait_for(ended, TIMEOUT)
            assert (received is not None) is close_frame
        finally:
            await station.stop()
