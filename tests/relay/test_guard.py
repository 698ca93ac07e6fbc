"""CSMS charging profiles never lift the DSO cap; NotifyChargingLimit(SO) reaches a 2.0.1 CSMS."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from gateway.core.events import SetpointReceived
from tests.relay.conftest import Site, SiteFactory, relay_station

pytestmark = pytest.mark.asyncio


def _max16(profile_id: int, limit_w: float, purpose: str = "ChargePointMaxProfile") -> Any:
    return call16.SetChargingProfile(
        connector_id=0,
        cs_charging_profiles={
            "charging_profile_id": profile_id,
            "stack_level": 2,
            "charging_profile_purpose": purpose,
            "charging_profile_kind": "Absolute",
            "charging_schedule": {
                "charging_rate_unit": "W",
                "start_schedule": "2025-01-01T00:00:00Z",
                "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
            },
        },
    )


def _max201(profile_id: int, limit_w: float, purpose: str = "ChargingStationMaxProfile") -> Any:
    return call201.SetChargingProfile(
        evse_id=0,
        charging_profile={
            "id": profile_id,
            "stack_level": 2,
            "charging_profile_purpose": purpose,
            "charging_profile_kind": "Absolute",
            "charging_schedule": [
                {
                    "id": 1,
                    "charging_rate_unit": "W",
                    "start_schedule": "2025-01-01T00:00:00Z",
                    "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
                }
            ],
        },
    )


def _limits(cp: Any, profile_id: int, v16: bool) -> list[Decimal]:
    out = []
    for p in cp.log.of("SetChargingProfile"):
        if p.get("charging_profile_id", p.get("id")) == profile_id:
            schedule = p["charging_schedule"] if v16 else p["charging_schedule"][0]
            out.append(Decimal(str(schedule["charging_schedule_period"][0]["limit"])))
    return out


async def _enforced(site: Site, station_id: str, limit_w: float) -> None:
    await site.until(
        lambda: (v := site.station(station_id)) is not None and v.enforced and v.limit_w == limit_w
    )


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
async def test_csms_profiles_leave_the_dso_cap_in_force(make_site: SiteFactory, version: str) -> None:
    v16 = version == "ocpp1.6"
    site = await make_site()
    live, fallback = site.config.ocpp.live_profile_id, site.config.ocpp.fallback_profile_id
    make_max = _max16 if v16 else _max201
    async with relay_station(site.port, "CP", version) as cp:
        boot = (
            call16.BootNotification(charge_point_model="M", charge_point_vendor="V")
            if v16
            else call201.BootNotification(
                charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"
            )
        )
        await cp.call(boot)
        assert (await site.runtime.submit_setpoint(SetpointReceived(7000.0))).accepted
        await _enforced(site, "CP", 7000.0)

        # A CSMS maximum above the DSO allocation is installed at the allocation.
        assert (await site.csms.call("CP", make_max(5, 20000.0))).status == "Accepted"
        assert _limits(cp, 5, v16) == [Decimal(7000)]
        # The allocation moves: the CSMS's maximum is capped again.
        assert (await site.runtime.submit_setpoint(SetpointReceived(6500.0))).accepted
        await cp.log.wait_for(lambda: len(_limits(cp, 5, v16)) == 2)
        assert _limits(cp, 5, v16)[-1] == Decimal(6500)
        # A CSMS maximum below it passes exactly as the CSMS sent it.
        assert (await site.csms.call("CP", make_max(6, 4000.0))).status == "Accepted"
        last_out = [f for f in site.upstream_out("CP") if orjson.loads(f)[0] == 2][-1]
        assert last_out in cp.wire.received
        # TxDefaultProfile passes through unchanged.
        tx_purpose = "TxDefaultProfile"
        if v16:
            tx = call16.SetChargingProfile(
                connector_id=1,
                cs_charging_profiles={
                    "charging_profile_id": 7,
                    "stack_level": 1,
                    "charging_profile_purpose": tx_purpose,
                    "charging_profile_kind": "Absolute",
                    "charging_schedule": {
                        "charging_rate_unit": "W",
                        "start_schedule": "2025-01-01T00:00:00Z",
                        "charging_schedule_period": [{"start_period": 0, "limit": 50000.0}],
                    },
                },
            )
        else:
            tx = make_max(7, 50000.0, tx_purpose)
        assert (await site.csms.call("CP", tx)).status == "Accepted"
        assert _limits(cp, 7, v16) == [Decimal(50000)]

        # The reserved ids cannot be overwritten or cleared by the CSMS: refused, never forwarded.
        seen = len(cp.log.calls)
        assert (await site.csms.call("CP", make_max(live, 90000.0))).status == "Rejected"
        clear_reserved = (
            call16.ClearChargingProfile(id=fallback)
            if v16
            else call201.ClearChargingProfile(charging_profile_id=fallback)
        )
        assert (await site.csms.call("CP", clear_reserved)).status == "Unknown"
        assert len(cp.log.calls) == seen

        # A bare ClearChargingProfile is relayed, then the DSO profiles go back on at once.
        clear_all = (
            call16.ClearChargingProfile()
            if v16
            else call201.ClearChargingProfile(
                charging_profile_criteria={"charging_profile_purpose": "ChargingStationMaxProfile"}
            )
        )
        assert (await site.csms.call("CP", clear_all)).status == "Accepted"
        await cp.log.wait_for(
            lambda: (
                len(_limits(cp, live, v16)) > 0
                and cp.log.calls[-1][0] == "SetChargingProfile"
                and len(_limits(cp, fallback, v16)) > 0
                and [a for a, _ in cp.log.calls].index("ClearChargingProfile") < len(cp.log.calls) - 2
            )
        )
        after = cp.log.calls[[a for a, _ in cp.log.calls].index("ClearChargingProfile") + 1 :]
        ids = {p.get("charging_profile_id", p.get("id")) for a, p in after if a == "SetChargingProfile"}
        assert {live, fallback} <= ids
        assert _limits(cp, live, v16)[-1] == Decimal(6500)
        await _enforced(site, "CP", 6500.0)
    # None of these guard exchanges leaked gateway ids upstream (a 2.0.1 link hears the
    # station's cap from the gateway itself: K14, see test_station_notices).
    k14 = {"NotifyChargingLimit", "ClearedChargingLimit"}
    leaked = [m for f in site.upstream_in("CP") if str((m := orjson.loads(f))[1]).startswith("ocpp809-")]
    assert not [m for m in leaked if not (m[0] == 2 and m[2] in k14)]


async def test_notify_charging_limit_reaches_a_201_csms(make_site: SiteFactory) -> None:
    site = await make_site({"gateway_id": "LC-1"})
    csms = site.csms

    def action_of(raw: str) -> str | None:
        msg = orjson.loads(raw)
        return str(msg[2]) if msg[0] == 2 else None

    boot = await csms.wait_for(lambda f: f.station_id == "LC-1" and f.action == "BootNotification", 5.0)
    assert boot.direction == "in"
    assert (await site.runtime.submit_setpoint(SetpointReceived(42000.0))).accepted
    frame = await csms.wait_for(lambda f: f.station_id == "LC-1" and f.action == "NotifyChargingLimit", 5.0)
    payload = orjson.loads(frame.raw)[3]
    assert payload["chargingLimit"] == {"chargingLimitSource": "SO", "isGridCritical": True}
    assert payload["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 42000.0
    assert payload["chargingSchedule"][0]["chargingRateUnit"] == "W"
    # The CSMS accepted it (answered, not a CALLERROR).
    await site.until(
        lambda: any(orjson.loads(r)[:2] == [3, orjson.loads(frame.raw)[1]] for r in site.upstream_out("LC-1"))
    )
    # The DSO lifts the limit (back to the grid capacity): ClearedChargingLimit.
    assert (await site.runtime.submit_setpoint(SetpointReceived(site.config.limits.max_limit_w))).accepted
    cleared = await csms.wait_for(
        lambda f: f.station_id == "LC-1" and f.action == "ClearedChargingLimit", 5.0
    )
    assert orjson.loads(cleared.raw)[3] == {"chargingLimitSource": "SO"}
    actions = [a for r in site.upstream_in("LC-1") if (a := action_of(r))]
    assert actions == ["BootNotification", "NotifyChargingLimit", "ClearedChargingLimit"]


async def test_a_16_csms_hears_the_limit_by_datatransfer_only_when_configured(make_site: SiteFactory) -> None:
    site = await make_site(
        {"gateway_id": "LC-16", "gateway_protocol": "ocpp1.6", "notify_v16": "datatransfer"}
    )
    await site.csms.wait_for(lambda f: f.station_id == "LC-16" and f.action == "BootNotification", 5.0)
    assert (await site.runtime.submit_setpoint(SetpointReceived(30000.0))).accepted
    frame = await site.csms.wait_for(lambda f: f.station_id == "LC-16" and f.action == "DataTransfer", 5.0)
    payload = orjson.loads(frame.raw)[3]
    assert payload["vendorId"] == "ocpp809" and payload["messageId"] == "NotifyChargingLimit"
    assert (
        orjson.loads(payload["data"])["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 30000.0
    )

    quiet = await make_site({"gateway_id": "LC-Q", "gateway_protocol": "ocpp1.6", "notify_v16": "none"})
    assert quiet.server.relay_hub is not None and quiet.server.relay_hub.identity is None
