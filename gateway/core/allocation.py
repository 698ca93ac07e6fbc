"""Split a site limit across stations (pure).

Rules, in order:
1. Work in whole deciwatts (0.1 W, the resolution OCPP 1.6 accepts), rounding the limit
   and every maximum down and every minimum up, so quantisation can never overshoot.
2. If the stations' minimums do not fit, pause stations (allocation 0) until they fit:
   the lowest ``priority`` first and, within a priority, the one that connected last
   first. The stations already charging keep charging, and the order depends on
   configuration and connection order only, never on measurements, so it is stable.
3. The rest share the limit by weighted water-filling: every station gets
   ``weight x level``, clamped to its own [min, max]; no station above its maximum, the
   sum never above the limit. With equal weights this is the plain equal split.
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
    weight: float = 1.0
    priority: int = 0


def _floor_dw(watts: float) -> int:
    return math.floor(watts * 10 + 1e-6)


def _ceil_dw(watts: float) -> int:
    return math.ceil(watts * 10 - 1e-6)


def pause_order(stations: Sequence[StationRange]) -> list[int]:
    """Indices of ``stations`` in the order they are paused when minimums do not fit."""
    return sorted(range(len(stations)), key=lambda i: (stations[i].priority, -i))


def allocate(limit_w: float, stations: Sequence[StationRange]) -> dict[str, float]:
    """Return each station's allocation in watts (multiples of 0.1 W)."""
    limit_dw = max(0, _floor_dw(limit_w))
    highs = [max(0, _floor_dw(s.max_w)) for s in stations]
    # A maximum is a safety bound, a minimum a charging one: if rounding makes them
    # cross, the maximum wins.
    lows = [min(_ceil_dw(s.min_w), high) for s, high in zip(stations, highs, strict=True)]

    paused: set[int] = set()
    need = sum(lows)
    order = iter(pause_order(stations)) if need > limit_dw else iter(())
    while need > limit_dw:
        index = next(order)
        paused.add(index)
        need -= lows[index]

    active = [i for i in range(len(stations)) if i not in paused]
    levels = _water_fill(
        limit_dw,
        [lows[i] for i in active],
        [highs[i] for i in active],
        [max(stations[i].weight, 1e-9) for i in active],
    )
    result = {s.station_id: 0.0 for s in stations}
    for i, dw in zip(active, levels, strict=True):
        result[stations[i].station_id] = dw / 10
    return result


def _water_fill(budget: int, lows: list[int], highs: list[int], weights: list[float]) -> list[int]:
    """Shares clamp(w x L, low, high) for the largest level L that fits ``budget``; O(n log n).

    f(L) = sum(clamp(w_i L, lo_i, hi_i)) is piecewise linear and non-decreasing, with
    breakpoints at lo_i / w_i and hi_i / w_i: walk them to find the segment where f
    crosses the budget, solve for L there, then floor every share to whole deciwatts so
    the sum can only fall short of the budget (by less than one deciwatt per station).
    """
    if not lows:
        return []
    if sum(highs) <= budget:
        return list(highs)
    # Each station is pinned at its low below lo/w, free in between, pinned at its high above hi/w.
    events = sorted(
        [(lo / w, 0, i) for i, (lo, w) in enumerate(zip(lows, weights, strict=True))]
        + [(hi / w, 1, i) for i, (hi, w) in enumerate(zip(highs, weights, strict=True))]
    )
    fixed = float(sum(lows))  # the sum of the pinned stations' shares
    free_weight = 0.0
    level = 0.0
    for point, kind, i in events:
        if fixed + free_weight * point > budget:
            break
        level = point
        if kind == 0:  # leaves its low: free from here
            fixed -= lows[i]
            free_weight += weights[i]
        else:  # reaches its high: pinned there
            fixed += highs[i]
            free_weight -= weights[i]
    if free_weight > 1e-12:
        level = max(level, (budget - fixed) / free_weight)
    shares = [
        min(max(math.floor(w * level + 1e-9), lo), hi) for lo, hi, w in zip(lows, highs, weights, strict=True)
    ]
    # Floating point may leave the sum a hair above the budget: take it back from the largest.
    excess = sum(shares) - budget
    while excess > 0:
        i = max(range(len(shares)), key=lambda k: shares[k] - lows[k])
        take = min(excess, shares[i] - lows[i])
        if take <= 0:
            break
        shares[i] -= take
        excess -= take
    return shares
