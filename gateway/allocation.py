"""Split a site limit across stations (pure).

Rules, in order:
1. Work in whole deciwatts (0.1 W, the resolution OCPP 1.6 accepts), rounding the limit
   and every maximum down and every minimum up, so quantisation can never overshoot.
2. If the stations' minimums do not fit, pause stations (allocation 0) starting with
   the one that connected last, until they fit: the stations already charging keep
   charging, and the order does not depend on measurements, so it is stable.
3. The rest share the limit by water-filling: every station gets the same level,
   clamped to its own [min, max]; no station above its maximum, the sum never above
   the limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StationRange:
    """A station's power range, in connection order (earliest first)."""

    station_id: str
    min_w: float
    max_w: float


def _floor_dw(watts: float) -> int:
    return math.floor(watts * 10 + 1e-6)


def _ceil_dw(watts: float) -> int:
    return math.ceil(watts * 10 - 1e-6)


def allocate(limit_w: float, stations: Sequence[StationRange]) -> dict[str, float]:
    """Return each station's allocation in watts (multiples of 0.1 W)."""
    limit_dw = max(0, _floor_dw(limit_w))
    highs = [max(0, _floor_dw(s.max_w)) for s in stations]
    # A maximum is a safety bound, a minimum a charging one: if rounding makes them
    # cross, the maximum wins.
    lows = [min(_ceil_dw(s.min_w), high) for s, high in zip(stations, highs, strict=True)]

    active = len(stations)
    need = sum(lows)
    while active and need > limit_dw:
        active -= 1
        need -= lows[active]

    levels = _water_fill(limit_dw, lows[:active], highs[:active])
    result = {s.station_id: 0.0 for s in stations}
    for station, dw in zip(stations[:active], levels, strict=True):
        result[station.station_id] = dw / 10
    return result


def _water_fill(budget: int, lows: list[int], highs: list[int]) -> list[int]:
    """Largest integer level L with sum(clamp(L, low, high)) <= budget; O(n log n)."""
    if not lows:
        return []
    if sum(highs) <= budget:
        return list(highs)
    # f(L) = sum(clamp(L, lo, hi)) is piecewise linear and non-decreasing; walk its
    # breakpoints to find the segment where it crosses the budget.
    points = sorted(set(lows) | set(highs))
    events_lo = sorted(lows)
    events_hi = sorted(highs)
    below_lo = len(lows)  # stations still pinned at their minimum
    at_hi = 0  # stations already at their maximum
    sum_lo = sum(lows)  # sum of minimums of stations pinned at minimum
    sum_hi = 0
    i_lo = i_hi = 0
    level = points[0]
    for point in points:
        while i_lo < len(events_lo) and events_lo[i_lo] <= point:
            sum_lo -= events_lo[i_lo]
            below_lo -= 1
            i_lo += 1
        while i_hi < len(events_hi) and events_hi[i_hi] <= point:
            sum_hi += events_hi[i_hi]
            at_hi += 1
            i_hi += 1
        free = len(lows) - below_lo - at_hi
        if sum_lo + sum_hi + free * point > budget:
            break
        level = point
    # Between `level` and the next breakpoint, the stations free at `level` grow together.
    free_at = [lo <= level < hi for lo, hi in zip(lows, highs, strict=True)]
    fixed = sum(min(max(level, lo), hi) for lo, hi in zip(lows, highs, strict=True))
    n_free = sum(free_at)
    if n_free:
        level += (budget - fixed) // n_free
    return [min(max(level, lo), hi) for lo, hi in zip(lows, highs, strict=True)]
