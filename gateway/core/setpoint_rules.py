"""Is a DSO setpoint acceptable? Pure validation, one reason per refusal."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.core.events import SetpointReceived
from gateway.core.model import RejectReason


@dataclass(frozen=True, slots=True)
class SetpointBounds:
    min_limit_w: float
    max_limit_w: float
    max_command_age_s: float
    future_tolerance_s: float


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RejectReason
    detail: str


def check_setpoint(event: SetpointReceived, bounds: SetpointBounds, now_s: float) -> Refusal | None:
    """Return why ``event`` must be refused at ``now_s``, or None when it is valid."""
    value = event.value_w
    if not math.isfinite(value):
        return Refusal(RejectReason.NOT_FINITE, f"setpoint {value!r} is not a finite number")
    if value < bounds.min_limit_w:
        return Refusal(
            RejectReason.BELOW_MIN,
            f"setpoint {value:g} W is below the minimum profile {bounds.min_limit_w:g} W",
        )
    if value > bounds.max_limit_w:
        return Refusal(
            RejectReason.ABOVE_MAX,
            f"setpoint {value:g} W is above the maximum {bounds.max_limit_w:g} W",
        )
    if event.time_tag_s is not None:
        age = now_s - event.time_tag_s
        if not math.isfinite(age) or age > bounds.max_command_age_s:
            return Refusal(
                RejectReason.STALE,
                f"time tag is {age:.3f} s old, more than max_command_age_s={bounds.max_command_age_s:g}",
            )
        if -age > bounds.future_tolerance_s:
            return Refusal(
                RejectReason.FUTURE,
                f"time tag is {-age:.3f} s in the future, more than {bounds.future_tolerance_s:g} s",
            )
    return None
