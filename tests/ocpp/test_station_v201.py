"""OCPP 2.0.1 station on loopback: boot, GetVariables discovery, SetVariables metering, profiles, meters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ocpp.v201 import call as call201

from gateway.core.events import SetpointReceived
from gateway.core.model import OcppVersion
from tests.ocpp.conftest import SiteFactory
from tests.ocpp.stations import Behaviour, station

V201 = "ocpp2.0.1"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _boot() -> call201.BootNotification:
    return call201.BootNotification(
        charging_station={"model": "Wallbox", "vendor_name": "ocpp809-test"}, reason="PowerUp"
    )


def _limit(profile: dict) -> Decimal:  # type: ignore[type-arg]
    return Decimal(str(profile["charging_schedule"][0]["charging_schedule_period"][0]["limit"]))


async def test_boot_discovery_metering_and_profiles(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(site.port, "CS201", V201) as cs:
        boot = await cs.call(_boot())
        assert boot.status == "Accepted"
        assert datetime.fromisoformat(boot.current_time).tzinfo is not None

        await cs.log.wait_for(lambda: len(cs.log.of("SetChargingProfile")) >= 2)
        assert cs.log.calls[0][0] == "GetVariables"
        names = {d["variable"]["name"] for d in cs.log.calls[0][1]["get_variable_data"]}
        assert names == {"RateUnit", "ProfileStackLevel"}
        live, fallback = cs.log.of("SetChargingProfile")[:2]
        for profile in (live, fallback):
            assert profile["evse_id"] == 0
            assert profile["charging_profile_purpose"] == "ChargingStationMaxProfile"
            assert profile["charging_profile_kind"] == "Absolute"
            assert profile["charging_schedule"][0]["charging_rate_unit"] == "W"
        assert _limit(live) == Decimal("22000.0") and "valid_to" in live
        assert _limit(fallback) == Decimal("10000.0") and "valid_to" not in fallback
        assert live["stack_level"] > fallback["stack_level"]

        view = await _enforced(site, "CS201")
        assert view.version is OcppVersion.V201

        await cs.log.wait_for(lambda: bool(cs.log.of("SetVariables")))
        data = {
            (d["component"]["name"], d["variable"]["name"]): d["attribute_value"]
            for d in cs.log.of("SetVariables")[0]["set_variable_data"]
        }
        assert data[("SampledDataCtrlr", "TxUpdatedInterval")] == "60"
        assert data[("AlignedDataCtrlr", "Interval")] == "900"
        assert "Power.Active.Import" in data[("SampledDataCtrlr", "TxUpdatedMeasurands")].split(",")
        assert data[("AlignedDataCtrlr", "Measurands")] == data[("SampledDataCtrlr", "TxUpdatedMeasurands")]


async def _enforced(site, station_id: str):  # type: ignore[no-untyped-def]
    await site.until(lambda: (v := site.station(station_id)) is not None and v.enforced)
    return site.station(station_id)


async def test_current_only_station_gets_amps_per_phase(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(
        site.port, "CS201", V201, behaviour=Behaviour(rate_units="Current", max_stack_level=3)
    ) as cs:
        await cs.call(_boot())
        await cs.log.wait_for(lambda: len(cs.log.of("SetChargingProfile")) >= 2)
        live, fallback = cs.log.of("SetChargingProfile")[:2]
        assert live["charging_schedule"][0]["charging_rate_unit"] == "A"
        # 22 kW over 3 x 230 V = 31.88 A, rounded down to 31.8 A; 10 kW -> 14.4 A.
        assert _limit(live) == Decimal("31.8") and _limit(fallback) == Decimal("14.4")
        assert live["charging_schedule"][0]["charging_schedule_period"][0]["number_phases"] == 3
        # Squeezed under the station's maximum stack level 3.
        assert (live["stack_level"], fallback["stack_level"]) == (3, 2)


async def test_setpoint_and_meter_values(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(site.port, "CS201", V201) as cs:
        await cs.call(_boot())
        await _enforced(site, "CS201")
        assert (await site.runtime.submit_setpoint(SetpointReceived(9000.0))).accepted
        await cs.log.wait_for(
            lambda: any(_limit(p) == Decimal("9000.0") for p in cs.log.of("SetChargingProfile"))
        )
        await site.until(lambda: site.station("CS201").limit_w == 9000.0 and site.station("CS201").enforced)

        power = {"value": 7.2, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "kW"}}
        await cs.call(
            call201.MeterValues(evse_id=1, meter_value=[{"timestamp": _now(), "sampled_value": [power]}])
        )
        await site.until(lambda: site.station("CS201").power_w == 7200.0)

        # A transaction on EVSE 2 reports through TransactionEvent; its end drops it to 0 W.
        tx = {"transaction_id": "tx-1"}
        sampled = [{"value": 3000, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}}]
        await cs.call(
            call201.TransactionEvent(
                event_type="Started",
                timestamp=_now(),
                trigger_reason="CablePluggedIn",
                seq_no=0,
                transaction_info=tx,
                evse={"id": 2, "connector_id": 1},
            )
        )
        await cs.call(
            call201.TransactionEvent(
                event_type="Updated",
                timestamp=_now(),
                trigger_reason="MeterValuePeriodic",
                seq_no=1,
                transaction_info=tx,
                meter_value=[{"timestamp": _now(), "sampled_value": sampled}],
            )
        )
        await site.until(lambda: site.station("CS201").power_w == 10200.0)
        await cs.call(
            call201.TransactionEvent(
                event_type="Ended",
                timestamp=_now(),
                trigger_reason="EVDeparted",
                seq_no=2,
                transaction_info=tx,
            )
        )
        await site.until(lambda: site.station("CS201").power_w == 7200.0)


async def test_refused_measurand_leaves_the_rest(make_site: SiteFactory) -> None:
    site = await make_site()
    behaviour = Behaviour(refused_measurands=frozenset({"Voltage"}))
    async with station(site.port, "CS201", V201, behaviour=behaviour) as cs:
        await cs.call(_boot())
        want = "Energy.Active.Import.Register,Power.Active.Import,Current.Import"

        def final(variable: str) -> str | None:
            values = [
                d["attribute_value"]
                for c in cs.log.of("SetVariables")
                for d in c["set_variable_data"]
                if d["variable"]["name"] == variable
            ]
            return values[-1] if values else None

        await cs.log.wait_for(lambda: final("TxUpdatedMeasurands") == want and final("Measurands") == want)


async def test_reboot_reapplies_profiles(make_site: SiteFactory) -> None:
    site = await make_site({"configure_metering": False})
    async with station(site.port, "CS201", V201) as cs:
        await cs.call(_boot())
        await cs.log.wait_for(lambda: len(cs.log.of("SetChargingProfile")) >= 2)
        await _enforced(site, "CS201")
        await cs.call(_boot())  # a reboot on the same connection: discovery and both levels again
        await cs.log.wait_for(lambda: len(cs.log.of("SetChargingProfile")) >= 4)
        assert len(cs.log.of("GetVariables")) == 2
