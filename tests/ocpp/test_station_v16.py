"""OCPP 1.6J station on loopback: boot, discovery, metering setup, two-level profiles, meter values."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ocpp.v16 import call as call16

from gateway.core.events import SetpointReceived
from gateway.core.model import ProfileOutcome
from tests.ocpp.conftest import SiteFactory
from tests.ocpp.stations import Behaviour, station

NOW = lambda: datetime.now(UTC).isoformat()


def _boot() -> call16.BootNotification:
    return call16.BootNotification(charge_point_model="Wallbox", charge_point_vendor="ocpp809-test")


async def test_boot_discovery_metering_and_both_profiles(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(site.port, "CP16") as cp:
        boot = await cp.call(_boot())
        assert boot.status == "Accepted" and boot.interval == site.config.ocpp.heartbeat_interval_s
        assert datetime.fromisoformat(boot.current_time).tzinfo is not None

        await cp.log.wait_for(lambda: len(cp.log.of("SetChargingProfile")) >= 2)
        live, fallback = cp.log.of("SetChargingProfile")[:2]
        # Discovery came first: the station takes Power, so the profiles are in W.
        assert cp.log.calls[0][0] == "GetConfiguration"
        for profile in (live, fallback):
            assert profile["connector_id"] == 0
            assert profile["charging_profile_purpose"] == "ChargePointMaxProfile"
            assert profile["charging_profile_kind"] == "Absolute"
            assert profile["charging_schedule"]["charging_rate_unit"] == "W"
        # One station alone: live share is its max (22 kW), fallback share the site fallback (10 kW).
        assert live["charging_profile_id"] == site.config.ocpp.live_profile_id
        assert live["charging_schedule"]["charging_schedule_period"][0]["limit"] == Decimal("22000.0")
        assert live["stack_level"] > fallback["stack_level"]
        assert "valid_to" in live and "valid_to" not in fallback
        assert fallback["charging_profile_id"] == site.config.ocpp.fallback_profile_id
        assert fallback["charging_schedule"]["charging_schedule_period"][0]["limit"] == Decimal("10000.0")

        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
        assert site.runtime.view().enforced

        await cp.log.wait_for(lambda: len(cp.log.of("ChangeConfiguration")) >= 4)
        changes = {c["key"]: c["value"] for c in cp.log.of("ChangeConfiguration")}
        assert changes["MeterValueSampleInterval"] == "60"
        assert changes["MeterValuesSampledData"] == (
            "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage"
        )
        assert changes["ClockAlignedDataInterval"] == "900"
        assert changes["MeterValuesAlignedData"] == changes["MeterValuesSampledData"]


async def test_setpoint_reaches_station_and_result_reaches_core(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(site.port, "CP16") as cp:
        await cp.call(_boot())
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
        before = len(cp.log.of("SetChargingProfile"))

        outcome = await site.runtime.submit_setpoint(SetpointReceived(7500.0))
        assert outcome.accepted
        await cp.log.wait_for(lambda: len(cp.log.of("SetChargingProfile")) > before)
        sent = cp.log.of("SetChargingProfile")[before]
        assert sent["charging_profile_id"] == site.config.ocpp.live_profile_id
        assert sent["charging_schedule"]["charging_schedule_period"][0]["limit"] == Decimal("7500.0")
        # The fallback share did not change, so only the live profile went out.
        await site.until(lambda: site.station("CP16").limit_w == 7500.0 and site.station("CP16").enforced)
        assert len(cp.log.of("SetChargingProfile")) == before + 1


async def test_meter_values_reach_core_as_watts(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(site.port, "CP16") as cp:
        await cp.call(_boot())
        sampled = [
            {"value": "2.4", "measurand": "Power.Active.Import", "unit": "kW", "phase": phase}
            for phase in ("L1", "L2", "L3")
        ]
        await cp.call(
            call16.MeterValues(connector_id=1, meter_value=[{"timestamp": NOW(), "sampled_value": sampled}])
        )
        await site.until(lambda: site.station("CP16").power_w == 7200.0)
        assert site.runtime.view().total_power_w == 7200.0

        # A second connector adds up; a stopped transaction drops its connector to 0.
        start = await cp.call(
            call16.StartTransaction(connector_id=2, id_tag="TAG", meter_start=0, timestamp=NOW())
        )
        one = [{"value": "3000", "measurand": "Power.Active.Import", "unit": "W"}]
        await cp.call(
            call16.MeterValues(connector_id=2, meter_value=[{"timestamp": NOW(), "sampled_value": one}])
        )
        await site.until(lambda: site.station("CP16").power_w == 10200.0)
        await cp.call(
            call16.StopTransaction(meter_stop=10, timestamp=NOW(), transaction_id=start.transaction_id)
        )
        await site.until(lambda: site.station("CP16").power_w == 7200.0)


async def test_profiles_reapplied_after_reconnect(make_site: SiteFactory) -> None:
    site = await make_site()
    async with station(site.port, "CP16") as cp:
        await cp.call(_boot())
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
    await site.until(lambda: site.station("CP16") is None)
    assert (await site.runtime.submit_setpoint(SetpointReceived(8000.0))).accepted
    # Back again without a boot (a network blip): it speaks, and both levels go out again.
    async with station(site.port, "CP16") as cp:
        await cp.call(call16.Heartbeat())
        await cp.log.wait_for(lambda: len(cp.log.of("SetChargingProfile")) >= 2)
        limits = {
            p["charging_profile_id"]: p["charging_schedule"]["charging_schedule_period"][0]["limit"]
            for p in cp.log.of("SetChargingProfile")
        }
        assert limits == {
            site.config.ocpp.live_profile_id: Decimal("8000.0"),
            site.config.ocpp.fallback_profile_id: Decimal("10000.0"),
        }
        # Discovery was remembered across the reconnect: no second GetConfiguration.
        assert not cp.log.of("GetConfiguration")
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)


def _results(site: object, outcome: ProfileOutcome) -> float:
    value = site.runtime.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "ocpp809_profile_results_total", {"outcome": outcome.value}
    )
    return value or 0.0


async def test_rejected_profile_reported_and_retried(make_site: SiteFactory) -> None:
    site = await make_site({"profile_retry_base_s": 0.1})
    behaviour = Behaviour(profile_status="Rejected")
    async with station(site.port, "CP16", behaviour=behaviour) as cp:
        await cp.call(_boot())
        await site.until(lambda: _results(site, ProfileOutcome.REJECTED) >= 1)
        assert not site.station("CP16").enforced
        # Retried with backoff, the same allocation, until the station takes it.
        await cp.log.wait_for(lambda: len(cp.log.of("SetChargingProfile")) >= 2)
        behaviour.profile_status = "Accepted"
        await site.until(lambda: site.station("CP16").enforced)
        assert site.runtime.view().enforced
        live = [p for p in cp.log.of("SetChargingProfile") if p["charging_profile_id"] == 809002]
        assert len(live) >= 2 and all(p == live[0] or p["valid_to"] for p in live)


async def test_unanswered_profile_is_a_timeout_for_the_core(make_site: SiteFactory) -> None:
    site = await make_site({"call_timeout_s": 0.3, "profile_retry_base_s": 30.0, "configure_metering": False})
    async with station(site.port, "CP16", behaviour=Behaviour(profile_delay_s=0.6)) as cp:
        await cp.call(_boot())
        await site.until(lambda: _results(site, ProfileOutcome.TIMEOUT) >= 1)
        assert not site.station("CP16").enforced
        # The connection keeps working after the timeout; the late answer is dropped.
        assert (await cp.call(call16.Heartbeat())).current_time
        assert not site.station("CP16").enforced


def _live_limits(cp: object, live_id: int) -> list[Decimal]:
    return [
        p["charging_schedule"]["charging_schedule_period"][0]["limit"]
        for p in cp.log.of("SetChargingProfile")  # type: ignore[attr-defined]
        if p["charging_profile_id"] == live_id
    ]


async def test_setpoints_during_a_fan_out_are_coalesced(make_site: SiteFactory) -> None:
    site = await make_site({"configure_metering": False})
    live_id = site.config.ocpp.live_profile_id
    async with station(site.port, "CP16", behaviour=Behaviour(profile_delay_s=0.3)) as cp:
        await cp.call(_boot())
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
        assert (await site.runtime.submit_setpoint(SetpointReceived(7000.0))).accepted
        await cp.log.wait_for(lambda: len(_live_limits(cp, live_id)) == 2)  # 7000 is with the station now
        for value_w in (8000.0, 9000.0):
            assert (await site.runtime.submit_setpoint(SetpointReceived(value_w))).accepted
        await site.until(lambda: site.station("CP16").limit_w == 9000.0 and site.station("CP16").enforced)
        # 8000 W was replaced before it went out: the station only ever got the latest.
        assert _live_limits(cp, live_id) == [Decimal("22000.0"), Decimal("7000.0"), Decimal("9000.0")]


async def test_live_profile_refreshed_before_it_lapses(make_site: SiteFactory) -> None:
    site = await make_site({"configure_metering": False, "profile_refresh_s": 0.3, "profile_validity_s": 2.0})
    live_id = site.config.ocpp.live_profile_id
    async with station(site.port, "CP16") as cp:
        await cp.call(_boot())
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)

        def live() -> list[dict]:  # type: ignore[type-arg]
            return [p for p in cp.log.of("SetChargingProfile") if p["charging_profile_id"] == live_id]

        def valid_to() -> list[datetime]:
            return [datetime.fromisoformat(p["valid_to"]) for p in live()]

        # validTo has whole seconds: refreshes every 0.3 s move it ahead within a few of them.
        await cp.log.wait_for(lambda: valid_to()[-1] > valid_to()[0])
        assert valid_to() == sorted(valid_to())
        assert all(
            p["charging_schedule"]["charging_schedule_period"][0]["limit"] == Decimal("22000.0")
            for p in live()
        )
        # The fallback level is not re-sent by a refresh; the core hears every refresh Accepted,
        # since each moves the validTo up to which it counts the station's live cap.
        assert len(cp.log.of("SetChargingProfile")) - len(live()) == 1
        await site.until(lambda: _results(site, ProfileOutcome.ACCEPTED) >= 2)
        reserved = site.reserved("CP16")
        assert reserved is not None and reserved.committed_w == 22000.0


async def test_refused_measurand_leaves_the_rest(make_site: SiteFactory) -> None:
    site = await make_site()
    behaviour = Behaviour(refused_measurands=frozenset({"Current.Import"}))
    async with station(site.port, "CP16", behaviour=behaviour) as cp:
        await cp.call(_boot())
        want = "Energy.Active.Import.Register,Power.Active.Import,Voltage"

        def last(key: str) -> str | None:
            values = [c["value"] for c in cp.log.of("ChangeConfiguration") if c["key"] == key]
            return values[-1] if values else None

        await cp.log.wait_for(
            lambda: last("MeterValuesSampledData") == want and last("MeterValuesAlignedData") == want
        )
        assert last("MeterValueSampleInterval") == "60"
        # The station still charges under the gateway's limit.
        await site.until(lambda: (v := site.station("CP16")) is not None and v.enforced)
