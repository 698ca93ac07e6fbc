"""What the gateway tells the CSMS about the DSO limit, from its own identity (pure).

OCPP 2.0.1 K14 (External Charging Limit with Local Controller): NotifyChargingLimit with
``chargingLimitSource: SO`` and the schedule while a DSO limit is in force,
ClearedChargingLimit when it is lifted. OCPP 1.6 has no such message: a vendor
DataTransfer carrying the same 2.0.1 payload, when configured (``v16.limit_call``).
"""

from __future__ import annotations

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
    if in_force:
        action = "NotifyChargingLimit"
        payload: dict[str, Any] = {
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
    else:
        action, payload = "ClearedChargingLimit", {"chargingLimitSource": "SO"}
    return rules.limit_call(action, payload, VENDOR_ID)


def boot_notification(rules: VersionRules) -> dict[str, Any]:
    return rules.identity_boot(VENDOR_ID, MODEL)
