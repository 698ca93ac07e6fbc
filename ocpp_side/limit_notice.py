"""What the gateway tells the CSMS about DSO limits (pure).

OCPP 2.0.1 K14 (External Charging Limit with Local Controller): NotifyChargingLimit with
``chargingLimitSource: SO`` and the schedule while a DSO limit is in force,
ClearedChargingLimit when it is lifted.

- From the gateway's own identity (``limit_notice``): the site limit. OCPP 1.6 has no
  such message: a vendor DataTransfer carrying the same 2.0.1 payload, when configured
  (``v16.limit_call``).
- On each station's own 2.0.1 upstream connection (``StationCapNotices``): that
  station's DSO cap, told when it moves by more than a significance threshold (a
  fraction of the larger of the last cap told and the new one, like 2.0.1's
  LimitChangeSignificance), cleared when the DSO lifts the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ocpp_side.codec import iso_utc
from ocpp_side.versions import VersionRules

VENDOR_ID = "ocpp809"
SCHEDULE_ID = 809
MODEL = "Local Controller"


def limit_notice(
    rules: VersionRules, in_force: bool, limit_w: float, now_s: float, grid_critical: bool = True
) -> tuple[str, dict[str, Any]]:
    """(action, payload) to send for the current DSO limit on an identity link in ``rules``' version."""
    return rules.limit_call(*so_limit_call(limit_w if in_force else None, now_s, grid_critical), VENDOR_ID)


def so_limit_call(
    limit_w: float | None, now_s: float, grid_critical: bool = True
) -> tuple[str, dict[str, Any]]:
    """The 2.0.1 call for a DSO limit of ``limit_w`` (None: lifted), station-wide (no evseId)."""
    if limit_w is None:
        return "ClearedChargingLimit", {"chargingLimitSource": "SO"}
    return "NotifyChargingLimit", {
        "chargingLimit": {"chargingLimitSource": "SO", "isGridCritical": grid_critical},
        "chargingSchedule": [
            {
                "id": SCHEDULE_ID,
                "chargingRateUnit": "W",
                "startSchedule": iso_utc(now_s),
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit_w, 1)}],
            }
        ],
    }


@dataclass(slots=True)
class StationCapNotices:
    """One station's K14 notices: whether a new DSO cap is worth telling its CSMS."""

    significance: float  # a fraction of the larger of the cap last told and the new one
    told_w: float | None = None  # the cap last told (None: none in force, or cleared)

    def update(self, cap_w: float | None) -> bool:
        """The station's DSO cap is now ``cap_w`` (None: no DSO constraint); True to tell the CSMS."""
        told = self.told_w
        if cap_w is None:
            self.told_w = None
            return told is not None
        if told is not None and abs(cap_w - told) <= self.significance * max(abs(cap_w), abs(told)):
            return False
        self.told_w = cap_w
        return True


def boot_notification(rules: VersionRules) -> dict[str, Any]:
    return rules.identity_boot(VENDOR_ID, MODEL)
