"""ApplyStationLimit → station-wide maximum profiles, version-neutral (pure).

Two station-wide maximum profiles with reserved ids, both ``Absolute``:
- the *fallback* profile, at the lower stack level, carries the station's fallback
  share and never expires: a station that loses the gateway falls back by itself,
  and profiles persist across its reboots;
- the *live* profile, at the top stack level, carries the current allocation with the
  ``validTo`` the core chose (``ApplyStationLimit.valid_until_s``): the core counts the
  station's commitment until then, and re-sends the profile before it lapses.

1.6: ``ChargePointMaxProfile`` on connectorId 0; 2.0.1: ``ChargingStationMaxProfile`` on
evseId 0 (never ChargingStationExternalConstraints, which a controller may not set): the
version modules wrap ``station_max`` in their payloads (``v16.set_charging_profile``).
Limits are in W, or in A per phase with ``numberPhases`` when the station only takes
current; always rounded *down* to the 0.1 resolution OCPP 1.6 accepts, so rounding can
never lift a station above its share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any

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


_TENTH = Decimal("0.1")


def floor_tenth(value: float) -> float:
    """Down to the 0.1 resolution OCPP 1.6 accepts, never below 0 and never above ``value``.

    In decimal, from the float's shortest spelling: 16.3 stays 16.3, where float arithmetic
    needs an epsilon that rounds a large value up (99999.99999999 became 100000.0)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite limit: {value}")
    return max(0.0, float(Decimal(repr(float(value))).quantize(_TENTH, rounding=ROUND_FLOOR)))


def limit_in_unit(limit_w: float, caps: StationCaps) -> float:
    if caps.rate_unit is RateUnit.W:
        return floor_tenth(limit_w)
    return floor_tenth(limit_w / (caps.voltage_v * caps.phases))


@dataclass(frozen=True, slots=True)
class StationMax:
    """One station-wide maximum profile, in version-neutral parts: each version module
    (``set_charging_profile``) wraps them in its own SetChargingProfile payload."""

    profile_id: int
    stack_level: int
    schedule: dict[str, Any]  # chargingRateUnit, startSchedule, chargingSchedulePeriod
    valid_to: str | None  # ISO 8601, the live profile only


def station_max(
    level: ProfileLevel,
    limit_w: float,
    caps: StationCaps,
    settings: ProfileSettings,
    now_s: float,
    valid_until_s: float | None = None,
) -> StationMax:
    """The profile installing ``limit_w`` at ``level``; the live one carries
    ``validTo = valid_until_s``, the fallback one never expires."""
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
    valid_to = None
    if level is ProfileLevel.LIVE and valid_until_s is not None and math.isfinite(valid_until_s):
        valid_to = iso_utc(valid_until_s)
    return StationMax(profile_id, stack_level, schedule, valid_to)


def retry_delay_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential backoff for a profile a station refused: 1, 2, 4 ... 60 s."""
    return float(min(cap_s, base_s * 2 ** min(attempt, 16)))
