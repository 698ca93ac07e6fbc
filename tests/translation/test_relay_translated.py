"""1.6 stations behind a 2.0.1 CSMS through the translated relay, on loopback with the ``ocpp``
library on both ends (strict validation): a whole transaction, an outage, the CSMS's calls,
NotSupported, a gateway restart mid-transaction, and per-station K14 notices."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import InternalError, NotSupportedError
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from gateway.core.events import SetpointReceived
from gateway.core.model import OcppVersion
from gateway.errors import InternalError as OursInternalError
from tests.relay.conftest import relay_station
from tests.translation.relay_support import (
    Csms201,
    Site,
    Station16,
    csms_wire,
    schema_failures,
    site_config,
    start_site,
    station16,
    station_wire,
)

pytestmark = pytest.mark.asyncio

MakeSite = Callable[..., Awaitable[Site]]


@pytest.fixture
async def csms() -> AsyncIterator[Csms201]:
    server = Csms201()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_site(tmp_path: Path, csms: Csms201) -> AsyncIterator[MakeSite]:
    sites: list[Site] = []

    async def make(name: str = "gw", upstream: dict[str, Any] | None = None) -> Site:
        site = await start_site(site_config(tmp_path, csms, name, upstream), csms)
        sites.append(site)
        return site

    yield make
    for site in sites:
        if not site.stopped:
            await site.stop()


def _boot() -> Any:
    return call16.BootNotification(charge_point_model="Wallbox", charge_point_vendor="Acme")


def _status(connector: int, status: str) -> Any:
    return call16.StatusNotification(connector_id=connector, error_code="NoError", status=status)


def _meter(tx: int, minute: int, kw: str, wh: int) -> Any:
    return call16.MeterValues(
        connector_id=1,
        transaction_id=tx,
        meter_value=[
            {
                "timestamp": f"2025-01-01T00:{minute:02d}:00Z",
                "sampled_value": [
                    {"value": kw, "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                ],
            }
        ],
    )


def _events(csms: Csms201, station_id: str) -> list[dict[str, Any]]:
    return [f.payload for f in csms.calls_in(station_id, "TransactionEvent")]


def _assert_clean(csms: Csms201, station_id: str, cp: Station16, allowed: int = 0) -> None:
    up = schema_failures(csms_wire(csms, station_id), OcppVersion.V201)
    down = schema_failures(station_wire(cp), OcppVersion.V16)
    assert len(up) == allowed and down == [], (up, down)


async def _booted(site: Site, cp: Station16, station_id: str) -> None:
    assert (await cp.call(_boot())).status == "Accepted"
    await site.until(lambda: (v := site.station(station_id)) is not None and v.enforced)


async def test_a_whole_transaction_reaches_the_csms_as_201(make_site: MakeSite, csms: Csms201) -> None:
    site = await make_site()
    async with station16(site.port, "CP1") as cp:
        boot = await cp.call(_boot())
        assert boot.status == "Accepted" and boot.interval == 300  # the CSMS's answer, translated
        await cp.call(_status(1, "Available"))
        await cp.call(_status(1, "Preparing"))
        assert (await cp.call(call16.Authorize(id_tag="TAG1"))).id_tag_info["status"] == "Accepted"
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=1000, timestamp="2025-01-01T00:00:00Z"
            )
        )
        tx = start.transaction_id
        await cp.call(_status(1, "Charging"))
        await cp.call(_meter(tx, 1, "7.2", 1100))
        await site.until(lambda: (v := site.station("CP1")) is not None and v.power_w == 7200.0)
        await cp.call(
            call16.StopTransaction(
                meter_stop=2000, timestamp="2025-01-01T00:10:00Z", transaction_id=tx, reason="Local"
            )
        )
        await cp.call(_status(1, "Finishing"))
        await cp.call(call16.Heartbeat())
        await site.until(lambda: (v := site.station("CP1")) is not None and v.enforced)

    assert csms.subprotocols == ["ocpp2.0.1"]
    actions = [f.action for f in csms.calls_in("CP1")]
    assert actions[0] == "BootNotification"
    assert {"StatusNotification", "Authorize", "TransactionEvent", "Heartbeat"} <= set(actions)
    events = _events(csms, "CP1")
    assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1  # one 2.0.1 id
    seq = [e["seqNo"] for e in events]
    assert seq == sorted(set(seq))  # strictly increasing
    assert events[-1]["transactionInfo"].get("stoppedReason") == "Local"
    # The gateway's own calls to the station stay between the gateway and the station.
    assert all(not f.raw.startswith('[3,"ocpp809-') for f in csms.of("CP1", "in"))
    _assert_clean(csms, "CP1", cp)


async def test_a_csms_outage_is_replayed_in_order_none_twice(make_site: MakeSite, csms: Csms201) -> None:
    site = await make_site()
    async with station16(site.port, "CP2") as cp:
        await _booted(site, cp, "CP2")
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        tx = start.transaction_id
        await csms.wait_for(lambda: len(_events(csms, "CP2")) == 1)
        relay = site.server.relay_hub.relays["CP2"]  # type: ignore[union-attr]
        await csms.stop()
        await site.until(lambda: not relay.link.up)

        # Away: answered locally, kept already translated.
        for minute, kw in ((1, "7.0"), (2, "6.5"), (3, "6.0")):
            await cp.call(_meter(tx, minute, kw, 100 * minute))
        await cp.call(
            call16.StopTransaction(meter_stop=900, timestamp="2025-01-01T00:05:00Z", transaction_id=tx)
        )
        start2 = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=900, timestamp="2025-01-01T00:06:00Z"
            )
        )
        assert start2.transaction_id != tx and start2.id_tag_info["status"] == "Accepted"
        await cp.call(
            call16.StopTransaction(
                meter_stop=950, timestamp="2025-01-01T00:07:00Z", transaction_id=start2.transaction_id
            )
        )
        assert site.metric("ocpp809_upstream_outbox_depth") >= 6

        await csms.start()
        await csms.wait_for(
            lambda: len([e for e in _events(csms, "CP2") if e["eventType"] == "Ended"]) == 2, 10
        )
        await cp.call(call16.Heartbeat())
        await csms.wait_for(lambda: bool(csms.calls_in("CP2", "Heartbeat")))
        await site.until(lambda: site.metric("ocpp809_upstream_outbox_depth") == 0)

    events = _events(csms, "CP2")
    by_tx: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_tx.setdefault(e["transactionInfo"]["transactionId"], []).append(e)
    assert len(by_tx) == 2
    for tx_events in by_tx.values():
        assert tx_events[0]["eventType"] == "Started" and tx_events[-1]["eventType"] == "Ended"
        seq = [e["seqNo"] for e in tx_events]
        assert seq == sorted(set(seq)), seq  # in order, none twice
    ids = [f.message[1] for f in csms.calls_in("CP2")]
    assert len(ids) == len(set(ids))
    # The boot went again on the new connection, before the replay.
    actions = [f.action for f in csms.calls_in("CP2")]
    assert actions.count("BootNotification") == 2
    assert actions.index("BootNotification", 1) < actions.index("TransactionEvent", 2)
    _assert_clean(csms, "CP2", cp)


async def test_csms_calls_reach_the_16_station(make_site: MakeSite, csms: Csms201) -> None:
    site = await make_site()
    async with station16(site.port, "CP3") as cp:
        await _booted(site, cp, "CP3")
        assert (await site.runtime.submit_setpoint(SetpointReceived(7000.0))).accepted
        await site.until(
            lambda: (v := site.station("CP3")) is not None and v.enforced and v.limit_w == 7000.0
        )

        started = await csms.call(
            "CP3",
            call201.RequestStartTransaction(
                id_token={"id_token": "REMOTE1", "type": "ISO14443"}, remote_start_id=42, evse_id=1
            ),
        )
        assert started.status == "Accepted"
        assert cp.log.of("RemoteStartTransaction")[-1]["id_tag"] == "REMOTE1"
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="REMOTE1", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        started_event = _events(csms, "CP3")[-1]
        assert started_event["triggerReason"] == "RemoteStart"
        assert started_event["transactionInfo"]["remoteStartId"] == 42
        tx201 = started_event["transactionInfo"]["transactionId"]

        status = await csms.call("CP3", call201.GetTransactionStatus(transaction_id=tx201))
        assert (status.ongoing_indicator, status.messages_in_queue) == (True, False)
        outbox = site.server.relay_hub.outbox  # type: ignore[union-attr]
        outbox.append("CP3", "MeterValues", '[2,"kept","MeterValues",{"evseId":1,"meterValue":[]}]')
        status = await csms.call("CP3", call201.GetTransactionStatus(transaction_id=tx201))
        assert status.messages_in_queue is True  # something kept for the CSMS is still to come
        outbox.delete("CP3", outbox.pending("CP3")[0].seq)

        stopped = await csms.call("CP3", call201.RequestStopTransaction(transaction_id=tx201))
        assert stopped.status == "Accepted"
        assert cp.log.of("RemoteStopTransaction")[-1] == {"transaction_id": start.transaction_id}

        variables = await csms.call(
            "CP3",
            call201.GetVariables(
                get_variable_data=[
                    {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
                ]
            ),
        )
        assert variables.get_variable_result[0]["attribute_status"] == "Accepted"
        assert variables.get_variable_result[0]["attribute_value"] == "300"
        assert cp.log.of("GetConfiguration")[-1]["key"] == ["HeartbeatInterval"]

        # A CSMS station maximum above the DSO allocation reaches the station at the allocation.
        profile = await csms.call(
            "CP3",
            call201.SetChargingProfile(
                evse_id=0,
                charging_profile={
                    "id": 5,
                    "stack_level": 2,
                    "charging_profile_purpose": "ChargingStationMaxProfile",
                    "charging_profile_kind": "Absolute",
                    "charging_schedule": [
                        {
                            "id": 1,
                            "charging_rate_unit": "W",
                            "start_schedule": "2025-01-01T00:00:00Z",
                            "charging_schedule_period": [{"start_period": 0, "limit": 20000.0}],
                        }
                    ],
                },
            ),
        )
        assert profile.status == "Accepted"
        guarded = "ocpp809_upstream_csms_calls_guarded_total"
        registry = site.runtime.metrics.registry  # known labels exist at zero before their first event
        assert (
            registry.get_sample_value(guarded, {"action": "ClearChargingProfile", "verdict": "refused"})
            == 0.0
        )
        installed = [p for p in cp.log.of("SetChargingProfile") if p.get("charging_profile_id") == 5]
        assert installed[-1]["charging_profile_purpose"] == "ChargePointMaxProfile"
        assert float(installed[-1]["charging_schedule"]["charging_schedule_period"][0]["limit"]) == 7000.0
        assert (
            site.metric(
                "ocpp809_upstream_csms_calls_guarded_total", action="SetChargingProfile", verdict="capped"
            )
            == 1
        )
        # ... and capped again when the allocation moves.
        assert (await site.runtime.submit_setpoint(SetpointReceived(6500.0))).accepted
        await cp.log.wait_for(
            lambda: (
                float(
                    [p for p in cp.log.of("SetChargingProfile") if p.get("charging_profile_id") == 5][-1][
                        "charging_schedule"
                    ]["charging_schedule_period"][0]["limit"]
                )
                == 6500.0
            )
        )

        reset = await csms.call("CP3", call201.Reset(type="Immediate"))
        assert reset.status == "Accepted" and cp.log.of("Reset")[-1] == {"type": "Soft"}
    _assert_clean(csms, "CP3", cp)


async def test_an_action_without_a_16_counterpart_is_not_supported(
    make_site: MakeSite, csms: Csms201
) -> None:
    site = await make_site()
    assert (
        site.metric("ocpp809_relay_not_supported_total", action="SetDisplayMessage") == 0
    )  # zero-initialised
    async with station16(site.port, "CP4") as cp:
        await _booted(site, cp, "CP4")

        def relayed() -> int:  # CSMS calls that reached the station (translated: ocpp809-t...)
            return len([m for m in cp.wire.calls_received() if str(m[1]).startswith("ocpp809-t")])

        seen = relayed()
        with pytest.raises(NotSupportedError):
            await csms.call(
                "CP4",
                call201.SetDisplayMessage(
                    message={
                        "id": 1,
                        "priority": "NormalCycle",
                        "message": {"format": "UTF8", "content": "Hi"},
                    }
                ),
                suppress=False,
            )
        assert relayed() == seen  # nothing reached the station
    assert site.metric("ocpp809_relay_not_supported_total", action="SetDisplayMessage") == 1
    _assert_clean(csms, "CP4", cp, allowed=1)  # the one CALLERROR: NotSupported


async def test_a_gateway_restart_mid_transaction_loses_no_id_and_repeats_no_seq_no(
    make_site: MakeSite, csms: Csms201
) -> None:
    first = await make_site("gw")
    async with station16(first.port, "CP5") as cp:
        await _booted(first, cp, "CP5")
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp="2025-01-01T00:00:00Z"
            )
        )
        tx = start.transaction_id
        await cp.call(_meter(tx, 1, "7.0", 100))
        await csms.wait_for(lambda: len(_events(csms, "CP5")) == 2)
    await first.stop()

    second = await make_site("gw")  # the same store and outbox files
    async with station16(second.port, "CP5") as cp:
        await _booted(second, cp, "CP5")
        await cp.call(_meter(tx, 2, "6.0", 200))
        await cp.call(
            call16.StopTransaction(meter_stop=300, timestamp="2025-01-01T00:03:00Z", transaction_id=tx)
        )
        start2 = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=300, timestamp="2025-01-01T00:04:00Z"
            )
        )
        assert start2.transaction_id != tx  # the translator's counter survived too
        await csms.wait_for(lambda: len(_events(csms, "CP5")) == 5)

    events = _events(csms, "CP5")
    assert [e["eventType"] for e in events] == ["Started", "Updated", "Updated", "Ended", "Started"]
    first_tx = {e["transactionInfo"]["transactionId"] for e in events[:4]}
    assert len(first_tx) == 1 and events[4]["transactionInfo"]["transactionId"] not in first_tx
    assert [e["seqNo"] for e in events[:4]] == sorted({e["seqNo"] for e in events[:4]})
    _assert_clean(csms, "CP5", cp)


async def test_each_station_hears_its_own_dso_cap(make_site: MakeSite, csms: Csms201) -> None:
    site = await make_site(upstream={"limit_change_significance": 0.1})
    async with station16(site.port, "CP6") as cp:
        await _booted(site, cp, "CP6")
        assert not csms.calls_in("CP6", "NotifyChargingLimit")  # the initial limit is no DSO limit

        assert (await site.runtime.submit_setpoint(SetpointReceived(20000.0))).accepted
        await csms.wait_for(lambda: len(csms.calls_in("CP6", "NotifyChargingLimit")) == 1)
        notice = csms.calls_in("CP6", "NotifyChargingLimit")[0].payload
        assert notice["chargingLimit"] == {"chargingLimitSource": "SO", "isGridCritical": True}
        cap_w = site.station("CP6").limit_w  # type: ignore[union-attr]
        assert notice["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == round(cap_w, 1)
        assert "evseId" not in notice  # station-wide

        # A move within the significance threshold is not told; a larger one is.
        assert (await site.runtime.submit_setpoint(SetpointReceived(0.95 * cap_w))).accepted
        await site.until(lambda: (v := site.station("CP6")) is not None and v.enforced and v.limit_w < cap_w)
        assert (await site.runtime.submit_setpoint(SetpointReceived(0.5 * cap_w))).accepted
        await csms.wait_for(lambda: len(csms.calls_in("CP6", "NotifyChargingLimit")) == 2)
        second = csms.calls_in("CP6", "NotifyChargingLimit")[1].payload
        assert second["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == round(0.5 * cap_w, 1)

        # The DSO lifts its limit: cleared, once.
        assert (await site.runtime.submit_setpoint(SetpointReceived(site.config.limits.max_limit_w))).accepted
        await csms.wait_for(lambda: len(csms.calls_in("CP6", "ClearedChargingLimit")) == 1)
        assert csms.calls_in("CP6", "ClearedChargingLimit")[0].payload == {"chargingLimitSource": "SO"}
    _assert_clean(csms, "CP6", cp)


async def test_a_201_station_beside_them_stays_verbatim_and_hears_its_cap(
    make_site: MakeSite, csms: Csms201
) -> None:
    site = await make_site()
    async with relay_station(site.port, "CP201", "ocpp2.0.1") as cp:
        await cp.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        await cp.call(call201.Heartbeat())
        await site.until(lambda: (v := site.station("CP201")) is not None and v.enforced)
        assert (await site.runtime.submit_setpoint(SetpointReceived(15000.0))).accepted
        await csms.wait_for(lambda: len(csms.calls_in("CP201", "NotifyChargingLimit")) == 1)
    station_calls = [f.raw for f in csms.calls_in("CP201") if f.action != "NotifyChargingLimit"]
    assert station_calls == cp.wire.calls_sent()  # verbatim, byte for byte
    notice = csms.calls_in("CP201", "NotifyChargingLimit")[0].payload
    assert notice["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 15000.0
    assert schema_failures(csms_wire(csms, "CP201"), OcppVersion.V201) == []


async def test_an_answer_of_ours_that_breaks_the_schema_is_an_internal_error(
    make_site: MakeSite, csms: Csms201, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of ours (here: a translator that builds an invalid Reset answer) reaches the CSMS
    as a CALLERROR InternalError, is logged as ours, and the link goes on."""
    site = await make_site()
    async with station16(site.port, "CP5") as cp:
        await _booted(site, cp, "CP5")
        hub = site.server.relay_hub
        assert hub is not None and hub.translators is not None
        translators = hub.translators
        real = translators.downward

        def broken(state: Any, station_id: str, action: str, payload: Any, now: Any) -> Any:
            translated = real(state, station_id, action, payload, now)
            return dataclasses.replace(translated, answer=lambda answers: {"status": "Maybe"})

        object.__setattr__(translators, "downward", broken)  # frozen: the relay holds this very object
        with pytest.raises(InternalError):
            await csms.call("CP5", call201.Reset(type="Immediate"), suppress=False)
        [logged] = [r for r in caplog.records if r.exc_info and r.exc_info[0] is OursInternalError]
        assert "our Reset answer is invalid" in str(logged.exc_info[1])  # type: ignore[index]
        object.__setattr__(translators, "downward", real)
        reset = await csms.call("CP5", call201.Reset(type="Immediate"))
        assert reset.status == "Accepted"  # the link went on
