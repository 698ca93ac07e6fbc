"""What the gateway does with a CSMS call to a station, so the DSO cap stays in force (pure).

- SetChargingProfile of a station maximum (1.6 ChargePointMaxProfile, 2.0.1
  ChargingStationMaxProfile): forwarded with every period limit capped at the station's
  DSO allocation (the minimum of both, ``gateway.core.profile_cap``), and remembered so it is
  capped again when the allocation moves.
- SetChargingProfile or ClearChargingProfile naming one of the gateway's reserved profile
  ids: refused locally (Rejected / Unknown), never forwarded.
- any other ClearChargingProfile: forwarded, then the DSO profiles are re-applied at once
  (a bare 1.6 ClearChargingProfile wipes every profile on the station).
- everything else (TxProfile, TxDefaultProfile, GetCompositeSchedule ...): passes unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from gateway.core.profile_cap import cap_limit
from ocpp_side.profiles import StationCaps, floor_tenth
from ocpp_side.versions import VersionRules

DEFAULT_PHASES = 3  # OCPP: numberPhases absent means three


@dataclass(frozen=True, slots=True)
class Verdict:
    answer: dict[str, Any] | None = None  # answer the CSMS with this, do not forward
    payload: dict[str, Any] | None = None  # forward this instead of the CSMS's payload
    reapply: bool = False  # re-apply the DSO profiles once the station has answered
    max_profile_id: int | None = None  # a CSMS station maximum: re-cap it when the allocation moves


PASS = Verdict()


def capped_max_profile(
    rules: VersionRules, payload: dict[str, Any], cap_w: float | None, caps: StationCaps | None
) -> dict[str, Any] | None:
    """``payload`` with its limits capped at ``cap_w``, or None when nothing needs capping."""
    if cap_w is None:
        return None
    voltage = caps.voltage_v if caps is not None else 230.0
    schedules = rules.schedules_of(rules.profile_of(payload))
    changed: list[tuple[int, int, float]] = []
    for s_index, schedule in enumerate(schedules):
        in_watts = schedule["chargingRateUnit"] == "W"
        for p_index, period in enumerate(schedule["chargingSchedulePeriod"]):
            phases = period.get("numberPhases", DEFAULT_PHASES)
            dso = floor_tenth(cap_w if in_watts else cap_w / (voltage * phases))
            limit = cap_limit(float(period["limit"]), dso)
            if limit < period["limit"]:
                changed.append((s_index, p_index, limit))
    if not changed:
        return None
    capped = copy.deepcopy(payload)
    schedules = rules.schedules_of(rules.profile_of(capped))
    for s_index, p_index, limit in changed:
        schedules[s_index]["chargingSchedulePeriod"][p_index]["limit"] = limit
    return capped


def judge(
    rules: VersionRules,
    action: str,
    payload: dict[str, Any],
    reserved_ids: Collection[int],
    cap_w: float | None,
    caps: StationCaps | None,
) -> Verdict:
    """The verdict on a schema-valid CSMS call ``action``; ``cap_w`` is the station's allocation."""
    if action == "SetChargingProfile":
        profile = rules.profile_of(payload)
        profile_id = rules.profile_id(profile)
        if profile_id in reserved_ids:
            return Verdict(answer={"status": "Rejected"})
        if profile["chargingProfilePurpose"] != rules.MAX_PURPOSE:
            return PASS
        return Verdict(payload=capped_max_profile(rules, payload, cap_w, caps), max_profile_id=profile_id)
    if action == "ClearChargingProfile":
        cleared, _ = rules.cleared_profile(payload)
        if cleared in reserved_ids:
            return Verdict(answer={"status": "Unknown"})
        return Verdict(reapply=True)
    return PASS
