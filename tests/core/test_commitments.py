"""The cap invariant, rule by rule: offline stations, cuts before raises, refreshes, demand."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.arbiter import Arbiter, ArbiterSettings
from gateway.core.decisions import ApplyStationLimit, Decision, EnforcementChanged, StationReleaseRefused
from gateway.core.demand import DemandSettings
from gateway.core.events import (
    DsoLinkUp,
    MeterSampled,
    ProfileResult,
    SetpointReceived,
    StationActivity,
    StationConnected,
    StationDisconnected,
    StationReleased,
    Tick,
)
from gateway.core.fleet import FleetSettings
from gateway.core.ledger import Profiles, StationLedger
from gateway.core.model import OcppVersion, ProfileOutcome
from tests.core.helpers import SETTINGS, T0, of_type, step

V16 = OcppVersion.V16
FLEET = FleetSettings(
    live_validity_s=600, refresh_s=480, raise_interval_s=30, demand=DemandSettings(enabled=False)
)


def site(limit_w: float = 30000, n: int = 3, fleet: FleetSettings = FLEET, **station: float) -> Arbiter:
    """``n`` stations sharing ``limit_w``, every profile Accepted."""
    arbiter = Arbiter.start(dataclasses.replace(SETTINGS, fleet=fleet), None, T0)
    step(arbiter, DsoLinkUp(), T0)
    step(arbiter, SetpointReceived(limit_w), T0)
    for i in range(1, n + 1):
        accept(arbiter, join(arbiter, f"cp{i}", T0, **station), T0)
    settle(arbiter, T0)
    return arbiter


def join(
    arbiter: Arbiter, sid: str, now: float, max_w: float = 22000, min_w: float = 4140, **kw: float
) -> list[Decision]:
    return step(arbiter, StationConnected(sid, V16, max_w, min_w, **kw), now)  # type: ignore[arg-type]


def accept(
    arbiter: Arbiter, decisions: list[Decision], now: float, skip: set[str] = frozenset()
) -> list[Decision]:  # type: ignore[assignment]
    """Every station except ``skip`` accepts what it was sent; follow-ups are accepted too."""
    out: list[Decision] = []
    todo = of_type(decisions, ApplyStationLimit)
    for _ in range(20):
        if not todo:
            break
        more: list[Decision] = []
        for apply in todo:
            if apply.station_id not in skip:
                more += step(
                    arbiter, ProfileResult(apply.station_id, apply.seq, ProfileOutcome.ACCEPTED), now
                )
        out += more
        todo = of_type(more, ApplyStationLimit)
    return out


def settle(arbiter: Arbiter, now: float) -> None:
    assert not arbiter.fleet.raises_waiting


def shares(arbiter: Arbiter) -> dict[str, float]:
    return {s.station_id: s.limit_w for s in arbiter.view().stations if s.online}


def committed(arbiter: Arbiter, now: float) -> float:
    return arbiter.fleet.reserve_sum(now)


def test_an_offline_station_keeps_its_share_and_nobody_gets_it() -> None:
    arbiter = site()
    assert shares(arbiter) == {"cp1": 10000.0, "cp2": 10000.0, "cp3": 10000.0}
    # cp3's modem drops: no close frame, it may go on charging under the 10 kW it holds.
    out = step(arbiter, StationDisconnected("cp3"), T0 + 10)
    assert of_type(out, ApplyStationLimit) == []
    assert committed(arbiter, T0 + 10) <= 30000
    view = arbiter.view(T0 + 10)
    [cp3] = [s for s in view.stations if s.station_id == "cp3"]
    assert not cp3.online and cp3.committed_w == 10000.0


def test_an_offline_station_frees_its_live_share_when_its_profile_lapses() -> None:
    arbiter = site()
    step(arbiter, StationDisconnected("cp3"), T0 + 10)
    # Its live cap (validTo T0 + 600) lapses onto its fallback cap: 0 W, as three 4.14 kW
    # minimums do not fit the 10 kW fallback limit and it connected last.
    assert arbiter.next_deadline() is not None
    now = T0 + 600
    out: list[Decision] = []
    for _ in range(10):  # the shell ticks at every deadline on the way
        deadline = arbiter.next_deadline()
        if deadline is None or deadline > now:
            break
        out += accept(arbiter, step(arbiter, Tick(), deadline), deadline)
    out += accept(arbiter, step(arbiter, Tick(), now), now)
    assert shares(arbiter) == {"cp1": 15000.0, "cp2": 15000.0}
    assert committed(arbiter, now) <= 30000


def test_a_joining_station_gets_only_free_room() -> None:
    arbiter = site(n=2)
    out = join(arbiter, "cp3", T0 + 5)
    applies = {a.station_id: a for a in of_type(out, ApplyStationLimit)}
    assert applies["cp1"].limit_w == applies["cp2"].limit_w == 10000.0
    assert applies["cp3"].limit_w == 0.0  # bound at once, paused until the cuts are Accepted
    assert committed(arbiter, T0 + 5) <= 30000
    # One cut Accepted is not enough room for a whole share.
    after_one = step(arbiter, ProfileResult("cp1", applies["cp1"].seq, ProfileOutcome.ACCEPTED), T0 + 6)
    assert of_type(after_one, ApplyStationLimit) == []
    after_two = step(arbiter, ProfileResult("cp2", applies["cp2"].seq, ProfileOutcome.ACCEPTED), T0 + 7)
    [raised] = of_type(after_two, ApplyStationLimit)
    assert (raised.station_id, raised.limit_w) == ("cp3", 10000.0)


def test_a_station_that_never_answers_its_cut_keeps_its_old_cap_and_the_others_wait() -> None:
    arbiter = site(n=2)
    out = join(arbiter, "cp3", T0 + 5)
    applies = {a.station_id: a for a in of_type(out, ApplyStationLimit)}
    step(arbiter, ProfileResult("cp3", applies["cp3"].seq, ProfileOutcome.ACCEPTED), T0 + 6)
    step(arbiter, ProfileResult("cp1", applies["cp1"].seq, ProfileOutcome.ACCEPTED), T0 + 6)
    # cp2 times out on its cut: it still may draw 15 kW. With nothing awaited any more, cp3
    # gets what is really free (5 kW, above its 4.14 kW minimum), not its whole share.
    partial = of_type(
        step(arbiter, ProfileResult("cp2", applies["cp2"].seq, ProfileOutcome.TIMEOUT), T0 + 16),
        ApplyStationLimit,
    )
    assert [(a.station_id, a.limit_w) for a in partial] == [("cp3", 5000.0)]
    accept(arbiter, partial, T0 + 17)
    # The retry is refused: cp2 keeps its old cap, and nobody is raised into it.
    refused = step(arbiter, ProfileResult("cp2", applies["cp2"].seq, ProfileOutcome.REJECTED), T0 + 20)
    assert of_type(refused, ApplyStationLimit) == []
    view = arbiter.view(T0 + 20)
    assert {s.station_id: s.committed_w for s in view.stations} == {
        "cp1": 10000.0,
        "cp2": 15000.0,
        "cp3": 5000.0,
    }
    assert committed(arbiter, T0 + 20) <= 30000
    # When cp2 finally accepts its cut, cp3 gets the rest of its share at its next raise turn.
    step(arbiter, ProfileResult("cp2", applies["cp2"].seq, ProfileOutcome.ACCEPTED), T0 + 41)
    assert arbiter.next_deadline() == T0 + 16 + FLEET.raise_interval_s
    [raised] = of_type(step(arbiter, Tick(), T0 + 46), ApplyStationLimit)
    assert (raised.station_id, raised.limit_w) == ("cp3", 10000.0)


def test_a_lower_setpoint_sends_cuts_only_and_is_enforced_when_they_are_accepted() -> None:
    arbiter = site(limit_w=30000, n=2)
    out = step(arbiter, SetpointReceived(20000), T0 + 5)
    assert EnforcementChanged(False) in out
    cuts = of_type(out, ApplyStationLimit)
    assert [(a.limit_w) for a in cuts] == [10000.0, 10000.0]
    done = accept(arbiter, cuts, T0 + 6)
    assert EnforcementChanged(True) in done and committed(arbiter, T0 + 6) == 20000.0


def test_a_higher_setpoint_raises_at_once_into_the_new_room() -> None:
    arbiter = site(limit_w=20000, n=2)
    raises = of_type(step(arbiter, SetpointReceived(30000), T0 + 100), ApplyStationLimit)
    assert [a.limit_w for a in raises] == [15000.0, 15000.0]


def test_raises_are_rate_limited_per_station_cuts_never() -> None:
    arbiter = site(limit_w=20000, n=2)
    accept(arbiter, step(arbiter, SetpointReceived(30000), T0 + 100), T0 + 100)  # a raise at T0 + 100
    cuts = of_type(step(arbiter, SetpointReceived(20000), T0 + 101), ApplyStationLimit)
    assert [a.limit_w for a in cuts] == [10000.0, 10000.0]  # cuts go at once
    accept(arbiter, cuts, T0 + 101)
    held = step(arbiter, SetpointReceived(30000), T0 + 102)
    assert of_type(held, ApplyStationLimit) == []  # the raise waits for its turn
    assert arbiter.next_deadline() == T0 + 130
    [a, b] = of_type(step(arbiter, Tick(), T0 + 130), ApplyStationLimit)
    assert (a.limit_w, b.limit_w) == (15000.0, 15000.0)


def test_the_live_profile_is_refreshed_before_it_lapses() -> None:
    arbiter = site(n=1)
    assert arbiter.next_deadline() == T0 + 480
    [refresh] = of_type(step(arbiter, Tick(), T0 + 480), ApplyStationLimit)
    assert (refresh.limit_w, refresh.valid_until_s) == (22000.0, T0 + 480 + 600)


def test_a_reconnecting_station_is_released_by_accepting_its_new_share() -> None:
    arbiter = site()
    step(arbiter, StationDisconnected("cp3"), T0 + 10)
    out = join(arbiter, "cp3", T0 + 20)
    [apply] = [a for a in of_type(out, ApplyStationLimit) if a.station_id == "cp3"]
    accept(arbiter, out, T0 + 21)
    view = arbiter.view(T0 + 21)
    assert {s.station_id: s.online for s in view.stations} == {"cp1": True, "cp2": True, "cp3": True}
    assert view.enforced and apply.limit_w == 10000.0


def test_an_operator_releases_an_offline_station_never_an_online_one() -> None:
    arbiter = site()
    [refused] = step(arbiter, StationReleased("cp3", "decommissioned"), T0 + 5)
    assert isinstance(refused, StationReleaseRefused) and "online" in refused.detail
    step(arbiter, StationDisconnected("cp3"), T0 + 10)
    out = accept(arbiter, step(arbiter, StationReleased("cp3", "decommissioned"), T0 + 11), T0 + 11)
    assert "cp3" not in arbiter.fleet.stations
    assert shares(arbiter) == {"cp1": 15000.0, "cp2": 15000.0}
    assert isinstance(step(arbiter, StationReleased("ghost", "typo"), T0 + 12)[0], StationReleaseRefused)
    del out


def test_idle_stations_give_their_share_to_the_charging_ones() -> None:
    fleet = dataclasses.replace(FLEET, demand=DemandSettings(enabled=True, idle_share_w=None))
    arbiter = site(limit_w=30000, n=4, fleet=fleet)
    assert set(shares(arbiter).values()) == {7500.0}
    now = T0 + 10
    out: list[Decision] = []
    for sid, charging in (("cp1", True), ("cp2", True), ("cp3", False), ("cp4", False)):
        out += step(arbiter, StationActivity(sid, charging), now)
    accept(arbiter, out, now)
    for _ in range(5):  # raises come as cuts free the room (and their turns)
        now += 31
        accept(arbiter, step(arbiter, Tick(), now), now)
    # Idle stations keep their minimum (an arriving EV starts at once), the rest charges.
    assert shares(arbiter) == {"cp1": 10860.0, "cp2": 10860.0, "cp3": 4140.0, "cp4": 4140.0}
    assert committed(arbiter, now) <= 30000


def test_an_ev_limited_station_hands_over_its_share_and_gets_it_back() -> None:
    fleet = dataclasses.replace(FLEET, demand=DemandSettings(enabled=True, headroom_w=1000, window_s=120))
    arbiter = site(limit_w=30000, n=2, fleet=fleet)
    now = T0 + 10
    for sid in ("cp1", "cp2"):
        step(arbiter, StationActivity(sid, True), now)
    # cp1's EV is nearly full: it takes 3 kW of its 15 kW for two minutes.
    out: list[Decision] = []
    for t in range(0, 130, 10):
        out += step(arbiter, MeterSampled("cp1", 3000), now + t)
        out += step(arbiter, MeterSampled("cp2", 15000), now + t)
    now += 130
    accept(arbiter, out + step(arbiter, Tick(), now), now)
    for _ in range(3):
        now += 31
        accept(arbiter, step(arbiter, Tick(), now), now)
    assert shares(arbiter) == {"cp1": 4140.0, "cp2": 22000.0}  # 3 kW + 1 kW headroom, raised to its minimum
    # Small wobbles do not move it (hysteresis) ...
    assert of_type(step(arbiter, MeterSampled("cp1", 3500), now), ApplyStationLimit) == []
    # ... but drawing up to its cap gives the room back as cuts elsewhere free it.
    out = step(arbiter, MeterSampled("cp1", 3800), now + 1)
    cuts = of_type(out, ApplyStationLimit)
    assert [(a.station_id, a.limit_w) for a in cuts] == [("cp2", 15000.0)]
    raised = accept(arbiter, cuts, now + 2)
    assert [(a.station_id, a.limit_w) for a in of_type(raised, ApplyStationLimit)] == [("cp1", 15000.0)]
    assert committed(arbiter, now + 2) <= 30000


def test_priority_decides_who_is_paused_and_weight_the_split() -> None:
    arbiter = Arbiter.start(dataclasses.replace(SETTINGS, fleet=FLEET), None, T0)
    step(arbiter, SetpointReceived(10000), T0)
    accept(arbiter, join(arbiter, "vip", T0, priority=1), T0)
    accept(arbiter, join(arbiter, "a", T0), T0)
    accept(arbiter, join(arbiter, "b", T0 + 1), T0 + 1)
    # Three minimums (12.42 kW) do not fit 10 kW: the last-connected of the lowest priority pauses.
    assert shares(arbiter) == {"vip": 5000.0, "a": 5000.0, "b": 0.0}
    weighted = Arbiter.start(dataclasses.replace(SETTINGS, fleet=FLEET), None, T0)
    step(weighted, SetpointReceived(30000), T0)
    accept(weighted, join(weighted, "big", T0, weight=2.0), T0)
    accept(weighted, join(weighted, "small", T0), T0)
    assert shares(weighted) == {"big": 20000.0, "small": 10000.0}


def test_settings_used_here_are_the_documented_defaults() -> None:
    defaults = ArbiterSettings(SETTINGS.bounds, 1, 1, 1, 1).fleet
    assert (defaults.live_validity_s, defaults.refresh_s, defaults.raise_interval_s) == (600, 480, 30)


def test_a_refresh_does_not_restart_the_ev_limited_window() -> None:
    # Window longer than the refresh interval: an EV taking 3 kW is still judged EV-limited.
    fleet = dataclasses.replace(
        FLEET, refresh_s=60, live_validity_s=120, demand=DemandSettings(enabled=True, window_s=100)
    )
    arbiter = site(limit_w=30000, n=2, fleet=fleet)
    now = T0 + 1
    for sid in ("cp1", "cp2"):
        step(arbiter, StationActivity(sid, True), now)
    out: list[Decision] = []
    for t in range(0, 200, 10):  # refreshes at T0 + 60, 120, ... go out on the way
        deadline = arbiter.next_deadline()
        while deadline is not None and deadline <= now + t:
            out += accept(arbiter, step(arbiter, Tick(), deadline), deadline)
            deadline = arbiter.next_deadline()
        out += step(arbiter, MeterSampled("cp1", 3000), now + t)
        out += step(arbiter, MeterSampled("cp2", 15000), now + t)
    accept(arbiter, out, now + 200)
    assert shares(arbiter)["cp1"] == 4140.0


# -- across a restart -----------------------------------------------------------------------

_entry = st.tuples(st.sampled_from([0.0, 4140.0, 7400.0, 11000.0]), st.sampled_from([0.0, 3000.0, 6000.0]))
_history = st.lists(
    st.tuples(st.sampled_from(["send", "accept", "refuse"]), _entry, st.sampled_from([0.0, 100.0, 700.0])),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(history=_history, probes=st.lists(st.floats(0, 3000), min_size=1, max_size=5))
def test_a_restored_ledger_binds_an_offline_station_exactly_as_the_original(
    history: list[tuple[str, tuple[float, float], float]], probes: list[float]
) -> None:
    ledger, seq, now = StationLedger(), 0, T0
    for what, (live_w, fallback_w), dt in history:
        now += dt
        if what == "send":
            seq += 1
            ledger.sent(Profiles(seq, live_w, now + 600, fallback_w), now)
        elif ledger.pending:
            oldest = ledger.pending[0].seq
            ledger.accepted(oldest) if what == "accept" else ledger.answered(oldest)
    restored = StationLedger.restored(json.loads(json.dumps(ledger.entries())))
    assert restored.held == ledger.held and restored.last_sent == ledger.last_sent
    assert restored.fallback_commitment_w() == ledger.fallback_commitment_w()
    assert not restored.awaiting  # the answers went with the gateway that sent them
    for dt in probes:
        at = now + dt
        assert restored.reserve_w(at, False, 60.0) == ledger.reserve_w(at, False, 60.0)
        assert restored.commitment_w(at) == ledger.commitment_w(at)


def test_restored_stations_come_back_offline_and_the_first_to_return_shares_the_rest() -> None:
    arbiter = site(30000)  # cp1..cp3 hold 10 kW each
    stored = [(s.station_id, s.version, s.ledger.entries()) for s in arbiter.fleet.stations.values()]
    again = Arbiter.start(dataclasses.replace(SETTINGS, fleet=FLEET), arbiter.durable, T0 + 10)
    again.restore([(i, v, StationLedger.restored(e)) for i, v, e in stored], T0 + 10)
    assert again.fleet.offline_count == 3 and again.fleet.reserve_sum(T0 + 10) == 30000
    assert not again.view(T0 + 10).enforced or again.limit_w >= 30000
    step(again, DsoLinkUp(), T0 + 10)
    decisions = join(again, "cp3", T0 + 10)
    shares = [d.limit_w for d in of_type(decisions, ApplyStationLimit)]
    assert shares and max(shares) <= 10000  # the absent two may still draw 20 kW
    # Their live caps lapse at T0 + 600 onto their fallback caps: then cp3 may be raised.
    assert again.fleet.reserve_sum(T0 + 601) < 30000


# -- a station back after its live cap lapsed (found by scenario V12) -------------------------


def _tick_until(arbiter: Arbiter, now: float) -> None:
    for _ in range(50):  # the shell ticks at every deadline on the way
        deadline = arbiter.next_deadline()
        if deadline is None or deadline > now:
            break
        accept(arbiter, step(arbiter, Tick(), deadline), deadline)
    accept(arbiter, step(arbiter, Tick(), now), now)


def test_a_station_back_after_its_live_cap_lapsed_gets_its_share_again() -> None:
    """Back with its old live profile lapsed it is *fixed* (its live cap not assured), bound at
    0 W; once it accepts that it is not fixed any more, and the shares are split again.
    Before: the targets only followed the fixed stations' reserve sums (0 W before and
    after), so it stayed at 0 W for good while the others kept its share."""
    arbiter = site()  # cp1..cp3 share 30 kW: 10 kW each
    step(arbiter, StationDisconnected("cp3"), T0 + 10)
    _tick_until(arbiter, T0 + 600)  # cp3's live cap lapses onto its 0 W fallback cap
    assert shares(arbiter) == {"cp1": 15000.0, "cp2": 15000.0}
    back = T0 + 700
    accept(arbiter, join(arbiter, "cp3", back), back)  # bound at 0 W, Accepted: the cuts should follow
    _tick_until(arbiter, back + 1200)  # two refresh cycles later
    view = arbiter.view(back + 1200)
    held = {s.station_id: s.committed_w for s in view.stations}
    targets = {s.station_id: s.limit_w for s in view.stations}
    assert held == {"cp1": 10000.0, "cp2": 10000.0, "cp3": 10000.0}, (held, targets)
