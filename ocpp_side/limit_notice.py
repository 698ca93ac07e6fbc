"""What the gateway tells the CSMS about the DSO limit, from its own identity (pure).

OCPP 2.0.1 K14 (External Charging Limit with Local Controller): NotifyChargingLimit with
``chargingLimitSource: SO`` and the schedule while a DSO limit is in force,
ClearedChargingLimit when it is lifted. OCPP 1.6 has no such message: a vendor
DataTransfer carrying the same 2.0.1 payload, when configured.
"""

from __future__ import annotations

from typing import Any

import orjson

from ocpp_side.codec import iso_utc

VENDOR_ID = "ocpp809"
SCHEDULE_ID = 809


def limit_notice(
    protocol: str, in_force: bool, limit_w: float, now_s: float, grid_critical: bool = True
) -> tuple[str, dict[str, Any]]:
    """(action, payload) to send for the current DSO limit, for a ``protocol`` identity link."""
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
    if protocol == "ocpp1.6":
        return "DataTransfer", {
            "vendorId": VENDOR_ID,
            "messageId": action,
            "data": orjson.dumps(payload).decode(),
        }
    return action, payload


def boot_notification(protocol: str) -> dict[str, Any]:
    if protocol == "ocpp1.6":
        return {"chargePointVendor": VENDOR_ID, "chargePointModel": "Local Controller"}
    return {"reason": "PowerUp", "chargingStation": {"vendorName": VENDOR_ID, "model": "Local Controller"}}
