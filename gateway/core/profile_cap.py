"""Domain rules for limits a CSMS sets beside the DSO's (pure, no I/O).

A Local Controller lets the operator's CSMS install its own station maximum, but the
DSO allocation always wins where it is lower: the station gets the minimum of both.
A DSO limit counts as "in force" (and is reported to the CSMS) while it comes from the
DSO and holds the site below its grid connection capacity.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.model import LimitSource

DSO_SOURCES = frozenset({LimitSource.DSO_SETPOINT, LimitSource.HOLD, LimitSource.FALLBACK})


def cap_limit(csms_limit: float, dso_limit: float | None) -> float:
    """The limit to install for a CSMS maximum: never above the DSO allocation."""
    if dso_limit is None:
        return csms_limit
    return min(csms_limit, max(0.0, dso_limit))


def cap_limits(csms_limits: Sequence[float], dso_limit: float | None) -> tuple[float, ...]:
    return tuple(cap_limit(value, dso_limit) for value in csms_limits)


def dso_limit_in_force(source: LimitSource, limit_w: float, capacity_w: float) -> bool:
    """Whether the site limit is a DSO restriction (notify the CSMS) or lifted (clear it)."""
    return source in DSO_SOURCES and limit_w < capacity_w
