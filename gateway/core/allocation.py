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
    """Return each station's allocation in watts (multiples of 0.1 W).

    Stations with the same range and weight (a site has a few kinds of charger) are one
    *kind*: the water level is found over kinds, so a 5,000-station split costs a pass
    over the stations plus a sort of the kinds, not a sort of every station.
    """
    limit_dw = max(0, _floor_dw(limit_w))
    kinds: dict[tuple[float, float, float], int] = {}
    kind_low: list[int] = []
    kind_high: list[int] = []
    kind_weight: list[float] = []
    kind_of: list[int] = []
    for s in stations:
        key = (s.min_w, s.max_w, s.weight)
        k = kinds.get(key)
        if k is None:
            k = kinds[key] = len(kind_low)
            high = max(0, _floor_dw(s.max_w))
            # A maximum is a safety bound, a minimum a charging one: if rounding makes them
            # cross, the maximum wins.
            kind_low.append(min(_ceil_dw(s.min_w), high))
            kind_high.append(high)
            kind_weight.append(max(s.weight, 1e-9))
        kind_of.append(k)

    paused: set[int] = set()
    need = sum(kind_low[k] for k in kind_of)
    if need > limit_dw:
        for index in pause_order(stations):
            paused.add(index)
            need -= kind_low[kind_of[index]]
            if need <= limit_dw:
                break

    counts = [0] * len(kind_low)
    for i, k in enumerate(kind_of):
        if i not in paused:
            counts[k] += 1
    levels = _water_fill(limit_dw, kind_low, kind_high, kind_weight, counts)
    result: dict[str, float] = {}
    for i, s in enumerate(stations):
        result[s.station_id] = 0.0 if i in paused else levels[kind_of[i]] / 10
    excess = sum(counts[k] * levels[k] for k in range(len(counts))) - limit_dw
    if excess > 0:  # floating point left the sum a hair above the budget: take it back
        _take_back(excess, stations, result, [kind_low[k] for k in kind_of], paused)
    return result


def _water_fill(
    budget: int, lows: list[int], highs: list[int], weights: list[float], counts: list[int]
) -> list[int]:
    """Shares clamp(w x L, low, high) per kind (``counts`` stations each) for the largest
    level L that fits ``budget``; O(k log k) in the number of kinds.

    f(L) = sum(count x clamp(w L, lo, hi)) is piecewise linear and non-decreasing, with
    breakpoints at lo / w and hi / w: walk them to find the segment where f crosses the
    budget, solve for L there, then floor every share to whole deciwatts so the sum can
    only fall short of the budget (by less than one deciwatt per station, floating point
    aside: ``allocate`` takes such a hair back).
    """
    if sum(n * hi for n, hi in zip(counts, highs, strict=True)) <= budget:
        return list(highs)
    # Each kind is pinned at its low below lo/w, free in between, pinned at its high above hi/w.
    live = [k for k, n in enumerate(counts) if n]
    events = sorted(
        [(lows[k] / weights[k], 0, k) for k in live] + [(highs[k] / weights[k], 1, k) for k in live]
    )
    fixed = float(sum(counts[k] * lows[k] for k in live))  # the sum of the pinned stations' shares
    free_weight = 0.0
    level = 0.0
    for point, kind, k in events:
        if fixed + free_weight * point > budget:
            break
        level = point
        if kind == 0:  # leaves its low: free from here
            fixed -= counts[k] * lows[k]
            free_weight += counts[k] * weights[k]
        else:  # reaches its high: pinned there
            fixed += counts[k] * highs[k]
            free_weight -= counts[k] * weights[k]
    if free_weight > 1e-12:
        level = max(level, (budget - fixed) / free_weight)
    return [
        min(max(math.floor(w * level + 1e-9), lo), hi) for lo, hi, w in zip(lows, highs, weights, strict=True)
    ]


def _take_back(
    excess: int, stations: Sequence[StationRange], result: dict[str, float], lows: list[int], paused: set[int]
) -> None:
    """Lower the stations furthest above their minimum until ``excess`` deciwatts are back."""
    shares = {i: round(result[s.station_id] * 10) for i, s in enumerate(stations) if i not in paused}
    while excess > 0 and shares:
        i = max(shares, key=lambda k: shares[k] - lows[k])
        take = min(excess, shares[i] - lows[i])
        if take <= 0:
            break
        shares[i] -= take
        excess -= take
        result[stations[i].station_id] = shares[i] / 10
