"""Splitting the site limit across stations."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.allocation import StationRange, allocate


def s(station_id: str, min_w: float = 4140, max_w: float = 22000) -> StationRange:
    return StationRange(station_id, min_w, max_w)


def test_equal_share_when_nobody_is_capped() -> None:
    assert allocate(20000, [s("a"), s("b")]) == {"a": 10000.0, "b": 10000.0}


def test_capped_station_leaves_the_rest_to_the_others() -> None:
    result = allocate(30000, [s("small", 1380, 7400), s("a"), s("b")])
    assert result == {"small": 7400.0, "a": 11300.0, "b": 11300.0}


def test_everyone_at_maximum_when_the_limit_is_generous() -> None:
    assert allocate(1e6, [s("a"), s("b", max_w=11000)]) == {"a": 22000.0, "b": 11000.0}


def test_stations_that_connected_last_are_paused_first() -> None:
    # Three minimums of 4140 W need 12420 W; 10000 W fits two.
    assert allocate(10000, [s("first"), s("second"), s("third")]) == {
        "first": 5000.0,
        "second": 5000.0,
        "third": 0.0,
    }


def test_a_limit_below_one_minimum_pauses_everyone() -> None:
    assert allocate(1000, [s("a"), s("b")]) == {"a": 0.0, "b": 0.0}


def test_a_station_with_a_higher_minimum_gets_at_least_it() -> None:
    result = allocate(12000, [s("a", 1380), s("b", 8000)])
    assert result == {"a": 4000.0, "b": 8000.0}


def test_values_are_quantised_down_to_a_tenth_of_a_watt() -> None:
    result = allocate(20000, [s("a", 0), s("b", 0), s("c", 0)])
    assert set(result.values()) == {6666.6}


def test_no_stations_no_allocation() -> None:
    assert allocate(20000, []) == {}


ranges = st.lists(
    st.tuples(
        st.floats(0, 12000, allow_nan=False),
        st.floats(0, 50000, allow_nan=False),
    ),
    max_size=12,
)


@given(limit=st.floats(0, 200000, allow_nan=False), bounds=ranges)
def test_allocation_invariants(limit: float, bounds: list[tuple[float, float]]) -> None:
    stations = [StationRange(f"s{i}", lo, max(lo, hi)) for i, (lo, hi) in enumerate(bounds)]
    result = allocate(limit, stations)
    assert set(result) == {st_.station_id for st_ in stations}
    assert sum(result.values()) <= limit + 1e-6
    paused_seen = False
    for station in stations:
        value = result[station.station_id]
        assert round(value * 10) == value * 10 or abs(round(value * 10) - value * 10) < 1e-6
        assert value <= station.max_w + 1e-6
        if value == 0 and station.min_w > 0.05:
            paused_seen = True
        else:
            assert value >= station.min_w - 0.1 - 1e-6
            # Pausing is in reverse connection order: no active station after a paused one.
            assert not paused_seen or station.min_w <= 0.05


def _reference(limit_w: float, stations: list[StationRange]) -> dict[str, float]:
    """The rules of ``gateway.core.allocation`` station by station (no kinds): an oracle."""
    limit_dw = max(0, math.floor(limit_w * 10 + 1e-6))
    highs = [max(0, math.floor(s.max_w * 10 + 1e-6)) for s in stations]
    lows = [min(math.ceil(s.min_w * 10 - 1e-6), h) for s, h in zip(stations, highs, strict=True)]
    paused: set[int] = set()
    need = sum(lows)
    for index in sorted(range(len(stations)), key=lambda i: (stations[i].priority, -i)):
        if need <= limit_dw:
            break
        paused.add(index)
        need -= lows[index]
    active = [i for i in range(len(stations)) if i not in paused]
    weights = {i: max(stations[i].weight, 1e-9) for i in active}

    def total(level: float) -> int:
        return sum(min(max(math.floor(weights[i] * level + 1e-9), lows[i]), highs[i]) for i in active)

    lo_level, hi_level = 0.0, max([highs[i] / weights[i] for i in active], default=0.0)
    for _ in range(200):  # bisection on the level: slow and obviously right
        mid = (lo_level + hi_level) / 2
        lo_level, hi_level = (mid, hi_level) if total(mid) <= limit_dw else (lo_level, mid)
    result = {s.station_id: 0.0 for s in stations}
    for i in active:
        result[stations[i].station_id] = (
            min(max(math.floor(weights[i] * lo_level + 1e-9), lows[i]), highs[i]) / 10
        )
    return result


kinds = st.sampled_from(
    [
        (0.0, 11000.0, 1.0),
        (4140.0, 22000.0, 1.0),
        (1380.0, 7400.0, 2.0),
        (6000.0, 6000.0, 0.5),
        (0.0, 3.3, 1.0),
    ]
)


@given(
    limit=st.floats(0, 300000, allow_nan=False),
    drawn=st.lists(st.tuples(kinds, st.integers(0, 2)), max_size=40),
)
def test_stations_of_a_kind_share_alike_and_the_split_matches_the_station_by_station_rule(
    limit: float, drawn: list[tuple[tuple[float, float, float], int]]
) -> None:
    """Grouping stations by kind (range and weight) changes nothing: the shares match a
    station-by-station water level to within a deciwatt each, never above the limit."""
    stations = [StationRange(f"s{i}", lo, hi, w, prio) for i, ((lo, hi, w), prio) in enumerate(drawn)]
    result = allocate(limit, stations)
    expected = _reference(limit, stations)
    assert list(result) == list(expected)
    assert sum(result.values()) <= limit + 1e-6
    for station in stations:
        assert abs(result[station.station_id] - expected[station.station_id]) <= 0.1 + 1e-9
        assert (result[station.station_id] == 0) == (expected[station.station_id] == 0) or station.min_w == 0
