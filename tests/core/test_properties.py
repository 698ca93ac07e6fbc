"""Invariants of the arbiter over random event sequences (hypothesis)."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.arbiter import Arbiter
from gateway.decisions import ApplyStationLimit, ConfirmSetpoint, RejectSetpoint
from gateway.events import (
    DsoLinkLost,
    DsoLinkUp,
    Event,
    MeterSampled,
    ProfileResult,
    SetpointReceived,
    StationConnected,
    StationDisconnected,
    Tick,
)
from gateway.model import Mode, OcppVersion, ProfileOutcome, SetpointKind
from tests.core.helpers import SETTINGS, T0

STATION_IDS = ["cp1", "cp2", "cp3", "cp4"]

setpoints = st.builds(
    SetpointReceived,
    value_w=st.one_of(
        st.floats(-1e5, 2e5),
        st.sampled_from([0.0, 6000.0, 20000.0, 100000.0, math.nan, math.inf, -math.inf]),
    ),
    kind=st.sampled_from(list(SetpointKind)),
    time_tag_s=st.one_of(st.none(), st.floats(T0 - 100, T0 + 5000)),
)
events = st.one_of(
    setpoints,
    st.just(DsoLinkUp()),
    st.just(DsoLinkLost()),
    st.just(Tick()),
    st.builds(
        StationConnected,
        st.sampled_from(STATION_IDS),
        st.sampled_from(list(OcppVersion)),
        st.floats(0, 50000),
        st.floats(0, 12000),
    ),
    st.builds(StationDisconnected, st.sampled_from(STATION_IDS)),
    st.builds(MeterSampled, st.sampled_from(STATION_IDS), st.floats(0, 50000)),
    st.builds(
        ProfileResult, st.sampled_from(STATION_IDS), st.integers(0, 40), st.sampled_from(list(ProfileOutcome))
    ),
)
steps = st.lists(st.tuples(st.floats(0, 400), events), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps=steps, settle_s=st.sampled_from([0.0, 0.5, 30.0]))
def test_invariants_over_random_sequences(steps: list[tuple[float, Event]], settle_s: float) -> None:
    arbiter = Arbiter.start(dataclasses.replace(SETTINGS, reallocation_settle_s=settle_s), None, T0)
    now = T0
    last_accepted: float | None = None
    readings: dict[str, float] = {}
    for dt, event in steps:
        now += dt
        before = (arbiter.view(), arbiter.durable)
        decisions = arbiter.handle(event, now)

        if isinstance(event, SetpointReceived):
            [answer] = [d for d in decisions if isinstance(d, ConfirmSetpoint | RejectSetpoint)]
            if isinstance(answer, RejectSetpoint):
                # A refused setpoint changes nothing and says nothing else.
                assert decisions == [answer]
                assert (arbiter.view(), arbiter.durable) == before
            else:
                last_accepted = event.value_w
        if isinstance(event, StationConnected):
            readings.pop(event.station_id, None)
        if isinstance(event, StationDisconnected):
            readings.pop(event.station_id, None)
        if isinstance(event, MeterSampled) and event.station_id in {
            s.station_id for s in arbiter.view().stations
        }:
            readings[event.station_id] = event.power_w

        view = arbiter.view()
        # The limit in force is the last accepted setpoint, the fallback or the initial value.
        expected = {
            Mode.INITIAL: SETTINGS.initial_limit_w,
            Mode.NORMAL: last_accepted,
            Mode.HOLD: last_accepted,
            Mode.FALLBACK: SETTINGS.fallback_limit_w,
        }[view.mode]
        assert view.limit_w == expected
        # The sum of allocations never exceeds the limit; fallback shares never exceed the fallback.
        assert sum(s.limit_w for s in view.stations) <= view.limit_w + 1e-6
        assert sum(s.fallback_w for s in view.stations) <= SETTINGS.fallback_limit_w + 1e-6
        # Every decision for a station is about a connected station.
        connected = {s.station_id for s in view.stations}
        assert {d.station_id for d in decisions if isinstance(d, ApplyStationLimit)} <= connected
        # The measured total is exactly the sum of the latest readings (to 0.1 W per station).
        assert abs(view.total_power_w - sum(round(v * 10) / 10 for v in readings.values())) < 1e-6
        # "Enforced on every station" is exactly every station having accepted its latest share.
        assert view.enforced == all(s.enforced for s in view.stations)
        deadline = arbiter.next_deadline()
        assert deadline is None or math.isfinite(deadline)
