"""Splitting the site limit across stations."""

from __future__ import annotations

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
