"""Charging profiles between OCPP 2.0.1 and 1.6 (pure).

2.0.1 → 1.6 (``profile_to_16``), field by field:
- ``id`` → ``chargingProfileId``; ``stackLevel``, ``chargingProfileKind``, ``recurrencyKind``,
  ``validFrom``, ``validTo`` as they are;
- purpose: ``ChargingStationMaxProfile`` → ``ChargePointMaxProfile``; ``TxDefaultProfile`` and
  ``TxProfile`` as they are; ``ChargingStationExternalConstraints`` has no 1.6 counterpart
  (and a CSMS may not set it): refused;
- ``transactionId`` (a 2.0.1 string) → the station's own 1.6 integer id; an id the station
  does not have is refused;
- ``chargingSchedule``: 1.6 has exactly one. A 2.0.1 profile with several (ISO 15118
  alternatives for the EV to choose from) is refused rather than silently cut to one;
- per schedule: ``duration``, ``startSchedule``, ``chargingRateUnit`` and the periods'
  ``startPeriod`` and ``numberPhases`` as they are; ``limit`` rounded *down* to the 0.1
  resolution of 1.6 (never above what the CSMS allowed), ``minChargingRate`` rounded *up*
  (never below the EV's minimum); the schedule ``id``, ``phaseToUse`` and ``salesTariff``
  have no 1.6 field and are dropped.

1.6 → 2.0.1 (``profile_to_201``, ``composite_to_201``) is the inverse; a schedule's ``id``
is the profile's id. Every limit, period and unit survives the round trip unchanged when
the 2.0.1 limits are already multiples of 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

Payload = dict[str, Any]

PURPOSE_TO_16 = {
    "ChargingStationMaxProfile": "ChargePointMaxProfile",
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
}
PURPOSE_TO_201 = {v: k for k, v in PURPOSE_TO_16.items()}

# Larger limits are refused: no charger takes them, and ten times them must stay an exact
# float for the 1.6 schema's ``multipleOf 0.1``.
MAX_RATE = 1e12
_TENTH = Decimal("0.1")


class ProfileError(ValueError):
    """A 2.0.1 profile the 1.6 station cannot be given; ``reason`` is a 2.0.1 reasonCode."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


def _tenth(value: float, rounding: str) -> float:
    if not math.isfinite(value) or abs(value) > MAX_RATE:
        raise ProfileError("ValueOutOfRange", f"rate {value} is out of range")
    # In decimal, from the float's shortest spelling: 16.3 stays 16.3, and a float rounded
    # down is never above the value (float arithmetic with an epsilon can be, when large).
    tenth = Decimal(repr(float(value))).quantize(_TENTH, rounding=rounding)
    return max(0.0, float(tenth))


def limit_to_16(limit: float) -> float:
    """Down to 0.1, never below 0."""
    return _tenth(float(limit), ROUND_FLOOR)


def min_rate_to_16(rate: float) -> float:
    """Up to 0.1, never below 0."""
    return _tenth(float(rate), ROUND_CEILING)


def _periods_to_16(periods: list[Payload]) -> list[Payload]:
    out = []
    for period in periods:
        converted: Payload = {"startPeriod": period["startPeriod"], "limit": limit_to_16(period["limit"])}
        if "numberPhases" in period:
            converted["numberPhases"] = period["numberPhases"]
        out.append(converted)
    return out


def _periods_to_201(periods: list[Payload]) -> list[Payload]:
    return [
        {k: period[k] for k in ("startPeriod", "limit", "numberPhases") if k in period} for period in periods
    ]


def schedule_to_16(schedule: Payload) -> Payload:
    out: Payload = {
        "chargingRateUnit": schedule["chargingRateUnit"],
        "chargingSchedulePeriod": _periods_to_16(schedule["chargingSchedulePeriod"]),
    }
    for name in ("duration", "startSchedule"):
        if name in schedule:
            out[name] = schedule[name]
    if "minChargingRate" in schedule:
        out["minChargingRate"] = min_rate_to_16(schedule["minChargingRate"])
    return out


def schedule_to_201(schedule: Payload, schedule_id: int) -> Payload:
    out: Payload = {
        "id": schedule_id,
        "chargingRateUnit": schedule["chargingRateUnit"],
        "chargingSchedulePeriod": _periods_to_201(schedule["chargingSchedulePeriod"]),
    }
    for name in ("duration", "startSchedule", "minChargingRate"):
        if name in schedule:
            out[name] = schedule[name]
    return out


_COMMON = ("stackLevel", "chargingProfileKind", "recurrencyKind", "validFrom", "validTo")


def profile_to_16(profile: Payload, tx16_of: Callable[[str], int | None]) -> Payload:
    """The 1.6 ``csChargingProfiles`` for a 2.0.1 ``chargingProfile``; ``tx16_of`` maps a
    2.0.1 transactionId to the station's 1.6 one (None: unknown). Raises ``ProfileError``."""
    purpose = PURPOSE_TO_16.get(profile["chargingProfilePurpose"])
    if purpose is None:
        raise ProfileError(
            "UnsupportedParam", f"{profile['chargingProfilePurpose']} has no OCPP 1.6 counterpart"
        )
    schedules = profile["chargingSchedule"]
    if len(schedules) != 1:
        raise ProfileError("UnsupportedParam", f"OCPP 1.6 takes one charging schedule, not {len(schedules)}")
    out: Payload = {"chargingProfileId": profile["id"], "chargingProfilePurpose": purpose}
    out.update({name: profile[name] for name in _COMMON if name in profile})
    if "transactionId" in profile:
        tx16 = tx16_of(profile["transactionId"])
        if tx16 is None:
            raise ProfileError("UnknownTxId", f"no transaction {profile['transactionId']} on this station")
        out["transactionId"] = tx16
    out["chargingSchedule"] = schedule_to_16(schedules[0])
    return out


def profile_to_201(profile: Payload, tx201_of: Mapping[int, str]) -> Payload:
    """The 2.0.1 ``chargingProfile`` for a 1.6 ``csChargingProfiles`` (the inverse of
    ``profile_to_16``); a 1.6 transactionId without a 2.0.1 id is left out."""
    out: Payload = {
        "id": profile["chargingProfileId"],
        "chargingProfilePurpose": PURPOSE_TO_201[profile["chargingProfilePurpose"]],
    }
    out.update({name: profile[name] for name in _COMMON if name in profile})
    if profile.get("transactionId") in tx201_of:
        out["transactionId"] = tx201_of[profile["transactionId"]]
    out["chargingSchedule"] = [schedule_to_201(profile["chargingSchedule"], profile["chargingProfileId"])]
    return out


def composite_to_201(answer: Payload, evse_id: int, duration_s: int, now_iso: str) -> Payload | None:
    """A 2.0.1 CompositeScheduleType from a 1.6 GetCompositeSchedule answer, or None when
    it carries no periods. ``scheduleStart`` falls back to the schedule's ``startSchedule``,
    then to the request time; ``duration`` to the requested one."""
    schedule = answer.get("chargingSchedule")
    if not schedule or not schedule.get("chargingSchedulePeriod"):
        return None
    return {
        "evseId": evse_id,
        "duration": schedule.get("duration", duration_s),
        "scheduleStart": answer.get("scheduleStart") or schedule.get("startSchedule") or now_iso,
        "chargingRateUnit": schedule["chargingRateUnit"],
        "chargingSchedulePeriod": _periods_to_201(schedule["chargingSchedulePeriod"]),
    }
