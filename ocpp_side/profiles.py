"""ApplyStationLimit → SetChargingProfile payloads per OCPP version (pure).

Two station-wide maximum profiles with reserved ids, both ``Absolute``:
- the *fallback* profile, at the lower stack level, carries the station's fallback
  share and never expires: a station that loses the gateway falls back by itself,
  and profiles persist across its reboots;
- the *live* profile, at the top stack level, carries the current allocation with the
  ``validTo`` the core chose (``ApplyStationLimit.valid_until_s``): the core counts the
  station's commitment until then, and re-sends the profile before it lapses.

1.6: ``ChargePointMaxProfile`` on connectorId 0; 2.0.1: ``ChargingStationMaxProfile`` on
evseId 0 (never ChargingStationExternalConstraints, which a controller may not set).
Limits are in W, or in A per phase with ``numberPhases`` when the station only takes
current; always rounded *down* to the 0.1 resolution OCPP 1.6 accepts, so rounding can
never lift a station above its share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.model import OcppVersion
from ocpp_side.codec import iso_utc

# Absolute schedules start this far in the past, so a station whose clock runs a little
# behind ours does not see the schedule as "not started yet" and skip it.
START_SLACK_S = 300


class RateUnit(StrEnum):
    W = "W"
    A = "A"


class ProfileLevel(StrEnum):
    LIVE = "live"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    live_profile_id: int
    fallback_profile_id: int
    live_stack_level: int
    fallback_stack_level: int


@dataclass(frozen=True, slots=True)
class StationCaps:
    """What one station takes: found by discovery, overridden by its config entry."""

    rate_unit: RateUnit = RateUnit.A
    phases: int = 3
    voltage_v: float = 230.0
    max_stack_level: int | None = None


def stack_levels(settings: ProfileSettings, caps: StationCaps) -> tuple[int, int]:
    """(live, fallback) stack levels, squeezed under the station's maximum, live always above."""
    live = settings.live_stack_level
    if caps.max_stack_level is not None:
        live = max(1, min(live, caps.max_stack_level))
    fallback = max(0, min(settings.fallback_stack_level, live - 1))
    return live, fallback


def _floor_tenth(value: float) -> float:
    return max(0.0, math.floor(value * 10 + 1e-6) / 10)


def limit_in_unit(limit_w: float, caps: StationCaps) -> float:
    if caps.rate_unit is RateUnit.W:
        return _floor_tenth(limit_w)
    return _floor_tenth(limit_w / (caps.voltage_v * caps.phases))


def set_charging_profile(
    version: OcppVersion,
    level: ProfileLevel,
    limit_w: float,
    caps: StationCaps,
    settings: ProfileSettings,
    now_s: float,
    valid_until_s: float | None = None,
) -> dict[str, Any]:
    """The SetChargingProfile request payload installing ``limit_w`` at ``level``.

    The live profile carries ``validTo = valid_until_s``; the fallback one never expires.
    """
    live_level, fallback_level = stack_levels(settings, caps)
    if level is ProfileLevel.LIVE:
        profile_id, stack_level = settings.live_profile_id, live_level
    else:
        profile_id, stack_level = settings.fallback_profile_id, fallback_level
    period = {"startPeriod": 0, "limit": limit_in_unit(limit_w, caps), "numberPhases": caps.phases}
    schedule: dict[str, Any] = {
        "chargingRateUnit": caps.rate_unit.value,
        "startSchedule": iso_utc(math.floor(now_s) - START_SLACK_S),
        "chargingSchedulePeriod": [period],
    }
    profile: dict[str, Any]
    if version is OcppVersion.V16:
        profile = {
            "chargingProfileId": profile_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        }
        payload = {"connectorId": 0, "csChargingProfiles": profile}
    else:
        schedule["id"] = profile_id
        profile = {
            "id": profile_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": "ChargingStationMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [schedule],
        }
        payload = {"evseId": 0, "chargingProfile": profile}
    if level is ProfileLevel.LIVE and valid_until_s is not None and math.isfinite(valid_until_s):
        profile["validTo"] = iso_utc(valid_until_s)
    return payload


def retry_delay_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential backoff for a profile a station refused: 1, 2, 4 ... 60 s."""
    return float(min(cap_s, base_s * 2 ** min(attempt, 16)))
