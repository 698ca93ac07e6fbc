"""Stations: allocations on connect/disconnect, enforcement tracking, measured power."""

from __future__ import annotations

import dataclasses

from gateway.core.arbiter import Arbiter
from gateway.core.decisions import (
    AllStationsEnforced,
    ApplyStationLimit,
    EnforcementChanged,
    MeterRefused,
    PublishTotalPower,
)
from gateway.core.events import (
    MeterSampled,
    ProfileResult,
    SetpointReceived,
    StationConnected,
    StationDisconnected,
    Tick,
)
from gateway.core.model import LimitSource, OcppVersion, ProfileOutcome, Quality
from tests.core.helpers import SETTINGS, T0, new_arbiter, of_type, step

V16 = OcppVersion.V16


def connect(arbiter, station_id: str, now: float = T0, max_w: float = 22000, min_w: float = 4140):  # type: ignore[no-untyped-def]
    return step(arbiter, StationConnected(station_id, V16, max_w, min_w), now)


def accept_all(arbiter, decisions, now: float):  # type: ignore[no-untyped-def]
    out = []
    for apply in of_type(decisions, ApplyStationLimit):
        out += step(arbiter, ProfileResult(apply.station_id, apply.seq, ProfileOutcome.ACCEPTED), now)
    return out


def test_a_connecting_station_gets_its_share_and_fallback_share() -> None:
    arbiter = new_arbiter()
    [apply] = of_type(connect(arbiter, "cp1"), ApplyStationLimit)
    assert (apply.station_id, apply.limit_w, apply.fallback_w, apply.source) == (
        "cp1",
        22000.0,
        10000.0,
        LimitSource.INITIAL,
    )


def test_second_station_splits_the_limit_cut_first_then_raise() -> None:
    arbiter = new_arbiter()
    step(arbiter, SetpointReceived(20000), T0)
    accept_all(arbiter, connect(arbiter, "cp1"), T0)
    applies = of_type(connect(arbiter, "cp2"), ApplyStationLimit)
    # cp1 is cut at once; cp2 is bound at once, but only to the room that is free (none yet).
    assert [(a.station_id, a.limit_w, a.fallback_w) for a in applies] == [
        ("cp1", 10000.0, 5000.0),
        ("cp2", 0.0, 0.0),
    ]
    # cp1's Accepted cut frees the room: cp2's raise goes out.
    raised = of_type(accept_all(arbiter, applies[:1], T0 + 1), ApplyStationLimit)
    assert [(a.station_id, a.limit_w, a.fallback_w) for a in raised] == [("cp2", 10000.0, 5000.0)]


def test_reconnect_always_reapplies_even_when_unchanged() -> None:
    arbiter = new_arbiter()
    first = of_type(connect(arbiter, "cp1"), ApplyStationLimit)
    again = of_type(connect(arbiter, "cp1"), ApplyStationLimit)
    assert [a.limit_w for a in again] == [a.limit_w for a in first]
    assert again[0].seq > first[0].seq


def test_disconnect_gives_the_share_to_the_others() -> None:
    arbiter = new_arbiter()
    step(arbiter, SetpointReceived(20000), T0)
    connect(arbiter, "cp1")
    connect(arbiter, "cp2")
    [apply] = of_type(step(arbiter, StationDisconnected("cp2"), T0), ApplyStationLimit)
    assert (apply.station_id, apply.limit_w) == ("cp1", 20000.0)
    assert step(arbiter, StationDisconnected("nobody"), T0) == []


def test_enforced_only_when_every_station_accepted_its_latest_allocation() -> None:
    arbiter = new_arbiter()
    d1 = connect(arbiter, "cp1")
    d2 = connect(arbiter, "cp2")
    assert EnforcementChanged(False) in d1
    accept_all(arbiter, d1, T0)  # cp1's first allocation was replaced when cp2 came
    assert not arbiter.view().enforced
    out = accept_all(arbiter, d2, T0 + 0.5)
    assert EnforcementChanged(True) in out and arbiter.view().enforced


def test_time_from_setpoint_to_all_enforced_is_reported() -> None:
    arbiter = new_arbiter()
    accept_all(arbiter, connect(arbiter, "cp1") + connect(arbiter, "cp2"), T0)
    decisions = step(arbiter, SetpointReceived(20000), T0 + 10)
    assert EnforcementChanged(False) in decisions
    applies = of_type(decisions, ApplyStationLimit)
    first = step(
        arbiter, ProfileResult(applies[0].station_id, applies[0].seq, ProfileOutcome.ACCEPTED), T0 + 10.1
    )
    assert of_type(first, AllStationsEnforced) == []
    last = step(
        arbiter, ProfileResult(applies[1].station_id, applies[1].seq, ProfileOutcome.ACCEPTED), T0 + 10.4
    )
    [done] = of_type(last, AllStationsEnforced)
    assert abs(done.elapsed_s - 0.4) < 1e-6


def test_rejected_profile_keeps_enforcement_off() -> None:
    arbiter = new_arbiter()
    [apply] = of_type(connect(arbiter, "cp1"), ApplyStationLimit)
    step(arbiter, ProfileResult("cp1", apply.seq, ProfileOutcome.REJECTED), T0)
    assert not arbiter.view().enforced
    stale_answer = step(arbiter, ProfileResult("cp1", apply.seq - 1, ProfileOutcome.ACCEPTED), T0)
    assert stale_answer == [] and not arbiter.view().enforced


def test_t4_two_stations_drawing_7200_w_in_total() -> None:
    arbiter = new_arbiter()
    connect(arbiter, "cp1")
    connect(arbiter, "cp2")
    first = step(arbiter, MeterSampled("cp1", 3600), T0)
    assert of_type(first, PublishTotalPower) == [PublishTotalPower(3600.0, Quality.INVALID)]
    [total] = of_type(step(arbiter, MeterSampled("cp2", 3600), T0), PublishTotalPower)
    assert total == PublishTotalPower(7200.0, Quality.GOOD)
    assert arbiter.view().total_power_w == 7200.0


def test_total_follows_updates_and_disconnects_exactly() -> None:
    arbiter = new_arbiter()
    connect(arbiter, "cp1")
    connect(arbiter, "cp2")
    for value in (0.1, 0.2, 3600.3, 7200.7):
        step(arbiter, MeterSampled("cp1", value), T0)
    step(arbiter, MeterSampled("cp2", 0.2), T0)
    assert arbiter.view().total_power_w == 7200.9
    [total] = of_type(step(arbiter, StationDisconnected("cp1"), T0), PublishTotalPower)
    assert total == PublishTotalPower(0.2, Quality.GOOD)


def test_unknown_station_sample_is_ignored() -> None:
    arbiter = new_arbiter()
    assert step(arbiter, MeterSampled("ghost", 1000), T0) == []
    assert arbiter.view().total_power_w == 0


def test_stale_reading_is_flagged_not_topical_then_recovers() -> None:
    arbiter = new_arbiter()
    connect(arbiter, "cp1")
    step(arbiter, MeterSampled("cp1", 7200), T0)
    stale_at = T0 + SETTINGS.meter_stale_after_s
    assert arbiter.next_deadline() == stale_at
    assert of_type(step(arbiter, Tick(), stale_at - 1), PublishTotalPower) == []
    [flagged] = of_type(step(arbiter, Tick(), stale_at), PublishTotalPower)
    assert flagged == PublishTotalPower(7200.0, Quality.NOT_TOPICAL)
    [fresh] = of_type(step(arbiter, MeterSampled("cp1", 7000), stale_at + 1), PublishTotalPower)
    assert fresh == PublishTotalPower(7000.0, Quality.GOOD)


def test_stale_check_follows_the_oldest_fresh_reading() -> None:
    arbiter = new_arbiter()
    connect(arbiter, "cp1")
    step(arbiter, MeterSampled("cp1", 1000), T0)
    step(arbiter, MeterSampled("cp1", 1000), T0 + 100)
    # The first check comes early (conservative), finds nothing stale and re-arms.
    assert step(arbiter, Tick(), T0 + 180) == []
    assert arbiter.next_deadline() == T0 + 280


def test_a_burst_of_joins_shares_one_reallocation() -> None:
    settings = dataclasses.replace(SETTINGS, reallocation_settle_s=1.0)
    arbiter = Arbiter.start(settings, None, T0)
    first = of_type(step(arbiter, StationConnected("cp1", V16, 22000, 4140), T0), ApplyStationLimit)
    assert [a.station_id for a in first] == ["cp1"]  # the first join is served at once
    accept_all(arbiter, first, T0)
    for i in range(2, 6):
        joined = step(arbiter, StationConnected(f"cp{i}", V16, 22000, 4140), T0 + 0.1 * i)
        assert of_type(joined, ApplyStationLimit) == []
    assert arbiter.next_deadline() == T0 + 1.0
    view = arbiter.view()
    assert not view.enforced and sum(s.limit_w for s in view.stations) <= view.limit_w
    applies = of_type(step(arbiter, Tick(), T0 + 1.0), ApplyStationLimit)
    # One reallocation: cp1 is cut to its share; of the newcomers, those whose whole share fits
    # the free room (50 - 22 kW) get it, the others are bound at 0 W until the cut is Accepted.
    assert {a.station_id: a.limit_w for a in applies} == {
        "cp1": 10000.0,
        "cp2": 10000.0,
        "cp3": 10000.0,
        "cp4": 0.0,
        "cp5": 0.0,
    }
    raised = of_type(accept_all(arbiter, applies, T0 + 1.5), ApplyStationLimit)
    # cp2's fallback share waited for cp1's fallback cut too (the fallback caps must fit 10 kW).
    assert {(a.station_id, a.limit_w, a.fallback_w) for a in raised} == {
        ("cp2", 10000.0, 5000.0),
        ("cp4", 10000.0, 0.0),
        ("cp5", 10000.0, 0.0),
    }
    accept_all(arbiter, raised, T0 + 2)
    assert arbiter.view().enforced and arbiter.view().committed_w == 50000.0


def test_a_departure_within_the_window_waits_for_it_too() -> None:
    settings = dataclasses.replace(SETTINGS, reallocation_settle_s=1.0)
    arbiter = Arbiter.start(settings, None, T0)
    step(arbiter, SetpointReceived(20000), T0)
    [first] = of_type(connect(arbiter, "cp1", T0 + 5), ApplyStationLimit)  # outside the window: at once
    assert first.limit_w == 20000.0
    assert of_type(connect(arbiter, "cp2", T0 + 5.5), ApplyStationLimit) == []  # waits for the window
    assert of_type(step(arbiter, StationDisconnected("cp2"), T0 + 5.8), ApplyStationLimit) == []
    # cp2 left before it was ever profiled: nothing binds it, nothing is kept, cp1's share stands.
    assert of_type(step(arbiter, Tick(), T0 + 6.5), ApplyStationLimit) == []
    assert set(arbiter.fleet.stations) == {"cp1"}


def test_implausible_readings_are_refused_once_and_make_the_total_invalid() -> None:
    arbiter = new_arbiter()
    connect(arbiter, "cp1")
    connect(arbiter, "cp2")
    step(arbiter, MeterSampled("cp1", 7000), T0)
    step(arbiter, MeterSampled("cp2", 7000), T0)
    for poison in (1e38, float("inf"), float("nan"), -1e9):
        out = step(arbiter, MeterSampled("cp2", poison), T0 + 1)
        refused = of_type(out, MeterRefused)
        assert len(refused) == (1 if poison == 1e38 else 0)  # told once per streak
        assert arbiter.view().total_power_w == 7000.0 and arbiter.view().quality is Quality.INVALID
    # 1.5 x its 22 kW maximum is still believed; a good reading clears it.
    [total] = of_type(step(arbiter, MeterSampled("cp2", 33000), T0 + 2), PublishTotalPower)
    assert total == PublishTotalPower(40000.0, Quality.GOOD)
    assert len(of_type(step(arbiter, MeterSampled("cp2", 33000.1), T0 + 3), MeterRefused)) == 1
