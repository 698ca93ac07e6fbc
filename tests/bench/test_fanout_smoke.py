"""Smoke test of the benchmark harness: five real stations, real processes, real sockets.

It proves the harness measures something real and notices failure; it asserts no
speed (speed is measured by ``python -m bench.fanout``, never asserted in tests).
"""

from __future__ import annotations

import pytest

from bench.fanout import MIN_METER_PER_STATION, CaseResult, Options, run_case
from bench.gateway_under_test import load_station_server

STATIONS = 5


JOINS = 2


def _options(reject_profiles: bool = False) -> Options:
    return Options(rounds=2, meter_messages=20, timeout_s=20.0, reject_profiles=reject_profiles, joins=JOINS)


def _assert_measured(r: CaseResult) -> None:
    assert r.ok, r.errors
    assert r.connect_boot_s is not None and r.connect_boot_s > 0
    assert len(r.rounds) == 2
    for round_stats in r.rounds:
        assert round_stats["answers"] == STATIONS
        assert (
            0
            < round_stats["p50_s"]
            <= round_stats["p99_s"]
            <= round_stats["max_s"]
            <= round_stats["elapsed_s"]
        )
    # The second round's share (11 kW) is what every station holds at the top of its stack.
    assert r.profiles_held == {"11000 W": STATIONS}
    # The storm's five setpoints reach every station at most once each, and all end on the last.
    assert r.storm_after_last_s is not None and r.storm_after_last_s > 0
    assert r.storm_profiles_per_station is not None and 1 <= r.storm_profiles_per_station <= 5
    assert r.meter_answered == STATIONS * MIN_METER_PER_STATION  # 20 asked, at least 10 each
    assert r.meter_rate is not None and r.meter_rate > 0
    assert r.rss_kb_per_station is not None
    if r.system == "gateway":
        # Stations joining one at a time, each timed to its final share Accepted (from the station).
        assert len(r.joins) == JOINS
        for join in r.joins:
            assert 0 < join["boot_s"] <= join["first_profile_s"] <= join["final_s"]
            assert join["stations_profiled"] >= STATIONS + 1  # the others were cut to make room
        assert r.join_p50_s is not None and r.join_p90_s is not None and 0 < r.join_p50_s <= r.join_p90_s
    else:
        assert not r.joins and r.join_p50_s is None


def test_baseline_fan_out_and_ingestion_are_measured() -> None:
    _assert_measured(run_case("baseline", STATIONS, _options()))


def test_harness_reports_stations_that_reject_the_profile() -> None:
    result = run_case("baseline", STATIONS, _options(reject_profiles=True))
    assert not result.ok
    assert result.not_accepted == 2 * STATIONS
    assert any("not Accepted" in error for error in result.errors)


def test_gateway_fan_out_and_ingestion_are_measured() -> None:
    try:
        load_station_server()
    except ImportError:
        pytest.skip("ocpp_side has no StationServer yet")
    _assert_measured(run_case("gateway", STATIONS, _options()))
