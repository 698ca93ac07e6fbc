"""profiles.py and the version modules: shares to SetChargingProfile payloads, validated against the OCPP schemas."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.model import OcppVersion
from ocpp_side import schemas, v16, v201
from ocpp_side.codec import iso_utc
from ocpp_side.profiles import (
    ProfileLevel,
    ProfileSettings,
    RateUnit,
    StationCaps,
    floor_tenth,
    limit_in_unit,
    retry_delay_s,
    stack_levels,
    station_max,
)
from ocpp_side.versions import rules_for

SETTINGS = ProfileSettings(809002, 809001, 8, 7)
NOW = 1_790_000_000.4


@pytest.mark.parametrize("version", list(OcppVersion))
@pytest.mark.parametrize("level", list(ProfileLevel))
@pytest.mark.parametrize("unit", list(RateUnit))
def test_payload_is_schema_valid(version: OcppVersion, level: ProfileLevel, unit: RateUnit) -> None:
    parts = station_max(level, 7333.37, StationCaps(unit), SETTINGS, NOW)
    payload = rules_for(version).set_charging_profile(parts)
    schemas.validate(version, "SetChargingProfile", payload, request=True)


def test_v16_live_profile() -> None:
    parts = station_max(ProfileLevel.LIVE, 11000.0, StationCaps(RateUnit.W), SETTINGS, NOW, NOW + 900.0)
    payload = v16.set_charging_profile(parts)
    assert payload == {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": 809002,
            "stackLevel": 8,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "validTo": iso_utc(NOW + 900.0),
            "chargingSchedule": {
                "chargingRateUnit": "W",
                "startSchedule": iso_utc(1_790_000_000 - 300),
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0, "numberPhases": 3}],
            },
        },
    }


def test_v201_fallback_profile_has_no_expiry() -> None:
    caps = StationCaps(RateUnit.A, phases=1, voltage_v=230.0)
    payload = v201.set_charging_profile(station_max(ProfileLevel.FALLBACK, 4600.0, caps, SETTINGS, NOW))
    profile = payload["chargingProfile"]
    assert payload["evseId"] == 0
    assert profile["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    assert (profile["id"], profile["stackLevel"]) == (809001, 7)
    assert "validTo" not in profile
    (schedule,) = profile["chargingSchedule"]
    assert schedule["chargingRateUnit"] == "A"
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 20.0, "numberPhases": 1}]
    assert iso_utc(NOW).endswith("Z")


@pytest.mark.parametrize(
    ("limit_w", "caps", "expected"),
    [
        (7333.37, StationCaps(RateUnit.W), 7333.3),  # down to 0.1, never up
        (11000.0, StationCaps(RateUnit.A), 15.9),  # 11000 / 690 = 15.94
        (4140.0, StationCaps(RateUnit.A), 6.0),
        (0.0, StationCaps(RateUnit.A), 0.0),  # a paused station: 0
        (3680.0, StationCaps(RateUnit.A, phases=1), 16.0),
    ],
)
def test_limit_in_unit_rounds_down(limit_w: float, caps: StationCaps, expected: float) -> None:
    assert limit_in_unit(limit_w, caps) == expected


@pytest.mark.parametrize(
    ("max_stack", "levels"), [(None, (8, 7)), (10, (8, 7)), (3, (3, 2)), (1, (1, 0)), (0, (1, 0))]
)
def test_stack_levels_fit_the_station(max_stack: int | None, levels: tuple[int, int]) -> None:
    assert stack_levels(SETTINGS, StationCaps(max_stack_level=max_stack)) == levels


def test_backoff() -> None:
    assert [retry_delay_s(n) for n in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert retry_delay_s(100, base_s=0.5) == 60.0


@given(st.floats(0, 1e7, allow_nan=False))
def test_floor_tenth_is_never_above_the_value_and_at_most_a_tenth_below(value: float) -> None:
    tenth = floor_tenth(value)
    assert tenth <= value
    assert value - tenth < 0.1 + 1e-9 * max(1.0, value)
    assert Decimal(repr(tenth)) == Decimal(repr(tenth)).quantize(Decimal("0.1"))  # 1.6's multipleOf 0.1
