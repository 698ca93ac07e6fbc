"""Invariants of the arbiter over random event sequences (hypothesis).

Simulated stations stand for the ground truth: they apply a profile when they answer
Accepted, never when they refuse, and *maybe* when they time out or drop off with calls
on the way (the gateway cannot know which). The cap invariant is checked against them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.arbiter import Arbiter
from gateway.core.decisions import ApplyStationLimit, ConfirmSetpoint, RejectSetpoint, StationReleaseRefused
from gateway.core.events import (
    DsoLinkLost,
    DsoLinkUp,
    Event,
    MeterSampled,
    ProfileResult,
    SetpointReceived,
    StationActivity,
    StationConnected,
    StationDisconnected,
    StationReleased,
    Tick,
)
from gateway.core.ledger import StationLedger
from gateway.core.model import Mode, OcppVersion, ProfileOutcome, SetpointKind
from tests.core.helpers import SETTINGS, T0

STATION_IDS = ["cp1", "cp2", "cp3", "cp4"]
EPS = 1e-3


@dataclass
class SimStation:
    """What a real station holds: the profiles it applied, and the calls it has not answered."""

    online: bool = False
    queue: list[ApplyStationLimit] = field(default_factory=list)
    live: tuple[float, float] | None = None  # (W, validTo)
    fallback_w: float | None = None

    def apply(self, decision: ApplyStationLimit, live_only: bool = False) -> None:
        self.live = (decision.limit_w, decision.valid_until_s)
        if not live_only:
            self.fallback_w = decision.fallback_w

    def bound(self, now: float) -> float | None:
        """The most it may draw now under what it holds; None if nothing of ours binds it."""
        if self.live is not None and self.live[1] > now:
            return self.live[0]
        return self.fallback_w


@dataclass(frozen=True)
class Answer:
    """The station answers its oldest open call."""

    station_id: str
    outcome: ProfileOutcome
    applied: bool  # for a timeout: did the station apply it all the same?


@dataclass(frozen=True)
class Drop:
    """The station vanishes without a close frame; its open calls may or may not have landed."""

    station_id: str
    applied: bool


@dataclass(frozen=True)
class Restart:
    """The gateway stops (crash or restart) and starts again from what its store holds.

    Every station's connection drops with it (its open calls may or may not have landed).
    ``flushed``: the ledgers changed only by answers reached the disk before it stopped
    (the shell stores those a moment later, and a crash may lose them)."""

    flushed: bool
    applied: bool


setpoints = st.builds(
    SetpointReceived,
    value_w=st.one_of(
        st.floats(-1e5, 2e5),
        st.sampled_from([0.0, 6000.0, 8000.0, 20000.0, 45000.0, 100000.0, math.nan, math.inf]),
    ),
    kind=st.sampled_from(list(SetpointKind)),
    time_tag_s=st.one_of(st.none(), st.floats(T0 - 100, T0 + 5000)),
)
station_ids = st.sampled_from(STATION_IDS)
actions = st.one_of(
    setpoints,
    st.just(DsoLinkUp()),
    st.just(DsoLinkLost()),
    st.just(Tick()),
    st.builds(
        StationConnected,
        station_ids,
        st.sampled_from(list(OcppVersion)),
        st.sampled_from([7400.0, 11000.0, 22000.0]),
        st.sampled_from([0.0, 1380.0, 4140.0]),
        st.integers(0, 2),
        st.sampled_from([1.0, 2.0]),
    ),
    st.builds(Drop, station_ids, st.booleans()),
    st.builds(Answer, station_ids, st.sampled_from(list(ProfileOutcome)), st.booleans()),
    st.builds(Answer, station_ids, st.just(ProfileOutcome.ACCEPTED), st.just(True)),
    st.builds(MeterSampled, station_ids, st.floats(0, 25000)),
    st.builds(StationActivity, station_ids, st.booleans()),
    st.builds(StationReleased, station_ids, st.just("test")),
    st.builds(Restart, st.booleans(), st.booleans()),
)
steps = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 5.0, 40.0, 200.0, 700.0]), actions), max_size=70)


class Site:
    def __init__(self, settle_s: float) -> None:
        self.arbiter = Arbiter.start(dataclasses.replace(SETTINGS, reallocation_settle_s=settle_s), None, T0)
        self.sims = {sid: SimStation() for sid in STATION_IDS}
        self.now = T0
        self.last_accepted: float | None = None
        self.settings = self.arbiter.settings
        # The store as the shell keeps it (gateway.runtime): every profile journaled before it
        # goes out; the changed ledgers stored whole a moment later (a crash may lose that
        # write, never the journal), which empties the journal; a release stored at once.
        self.disk: dict[str, tuple[OcppVersion, str]] = {}
        self.journal: list[tuple[str, OcppVersion, list[float]]] = []
        self.unflushed: dict[str, tuple[OcppVersion, str] | None] = {}

    def feed(self, event: Event) -> list[object]:
        decisions = self.arbiter.handle(event, self.now)
        fleet = self.arbiter.fleet
        release = fleet.store_now
        for sid, version, e in fleet.drain_sent():
            self.journal.append((sid, version, [e.seq, e.live_w, e.live_until_s, e.fallback_w, 0]))
        changed, removed, _ = fleet.drain_changes()
        for station in changed:
            self.unflushed[station.station_id] = (station.version, json.dumps(station.ledger.entries()))
        for sid in removed:
            self.unflushed[sid] = None
        if release:
            self.flush()
        for d in decisions:
            if isinstance(d, ApplyStationLimit):
                sim = self.sims[d.station_id]
                assert sim.online, "a profile for a station that is not connected"
                # The adapter coalesces: the call in flight stays, the latest replaces the rest.
                sim.queue = [*sim.queue[:1], d]
        return list(decisions)

    def flush(self) -> None:
        """The shell's store of whole ledgers: what changed (restored stations included), in
        place of the journal."""
        changed, removed, _ = self.arbiter.fleet.drain_changes()
        for station in changed:
            self.unflushed[station.station_id] = (station.version, json.dumps(station.ledger.entries()))
        for sid in removed:
            self.unflushed[sid] = None
        for sid, row in self.unflushed.items():
            if row is None:
                self.disk.pop(sid, None)
            else:
                self.disk[sid] = row
        self.unflushed.clear()
        self.journal.clear()

    def restart(self, action: Restart) -> None:
        if action.flushed:
            self.flush()
        self.unflushed.clear()
        for sim in self.sims.values():
            if sim.online and action.applied and sim.queue:
                sim.apply(sim.queue[0], live_only=True)
            sim.online, sim.queue = False, []
        self.arbiter = Arbiter.start(self.settings, self.arbiter.durable, self.now)
        rows = {sid: (v, json.loads(e)) for sid, (v, e) in self.disk.items()}
        for sid, v, entry in self.journal:
            rows.setdefault(sid, (v, []))[1].append(entry)
        stored = [(sid, v, StationLedger.restored(r)) for sid, (v, r) in rows.items()]
        self.arbiter.restore(stored, self.now)

    def act(self, action: object) -> tuple[Event | None, list[object]]:
        if isinstance(action, Restart):
            self.restart(action)
            return None, []
        if isinstance(action, Answer):
            sim = self.sims[action.station_id]
            if not sim.online or not sim.queue:
                return None, []
            call = sim.queue.pop(0)
            if action.outcome is ProfileOutcome.ACCEPTED or (
                action.outcome is ProfileOutcome.TIMEOUT and action.applied
            ):
                sim.apply(call)
            event: Event = ProfileResult(action.station_id, call.seq, action.outcome)
            return event, self.feed(event)
        if isinstance(action, Drop):
            sim = self.sims[action.station_id]
            if not sim.online:
                return None, []
            if action.applied and sim.queue:
                sim.apply(sim.queue[0], live_only=True)
            sim.online, sim.queue = False, []
            event = StationDisconnected(action.station_id)
            return event, self.feed(event)
        if isinstance(action, StationReleased):
            decisions = self.feed(action)
            if not any(isinstance(d, StationReleaseRefused) for d in decisions):
                # The operator vouches the station is gone for good: it binds nothing any more.
                self.sims[action.station_id] = SimStation()
            return action, decisions
        if isinstance(action, StationConnected):
            self.sims[action.station_id].online = True
            self.sims[action.station_id].queue = []
        assert isinstance(action, Event.__args__)  # type: ignore[attr-defined]
        return action, self.feed(action)

    def reserve(self) -> float:
        return self.arbiter.fleet.reserve_sum(self.now)


def step_and_check(site: Site, action: object) -> None:
    """Do one thing at ``site.now`` and check every invariant right after it."""
    arbiter = site.arbiter
    fallback_limit = SETTINGS.fallback_limit_w
    now = site.now
    limit_before = arbiter.limit_w
    reserve_before = site.reserve()
    over_before = reserve_before > limit_before + EPS
    view_before = (arbiter.view(now), arbiter.durable)
    event, decisions = site.act(action)
    restarted = isinstance(action, Restart)
    arbiter = site.arbiter

    if isinstance(event, SetpointReceived):
        [answer] = [d for d in decisions if isinstance(d, ConfirmSetpoint | RejectSetpoint)]
        if isinstance(answer, RejectSetpoint):
            # A refused setpoint changes nothing and says nothing else.
            assert decisions == [answer]
            assert (arbiter.view(now), arbiter.durable) == view_before
        else:
            site.last_accepted = event.value_w

    # The limit in force is the last accepted setpoint, the fallback or the initial value.
    expected = {
        Mode.INITIAL: SETTINGS.initial_limit_w,
        Mode.NORMAL: site.last_accepted,
        Mode.HOLD: site.last_accepted,
        Mode.FALLBACK: fallback_limit,
    }[arbiter.mode]
    assert arbiter.limit_w == expected
    limit = arbiter.limit_w

    # The ledger never underestimates what a station really holds.
    for sid, sim in site.sims.items():
        bound = sim.bound(now)
        if bound is None:
            continue
        station = arbiter.fleet.stations.get(sid)
        assert station is not None, f"{sid} holds a cap the core forgot"
        assert bound <= station.ledger.commitment_w(now) + EPS, (sid, bound)
        assert (sim.fallback_w or 0.0) <= station.ledger.fallback_commitment_w() + EPS

    # The running sums (kept incrementally on the hot path) equal a fresh reckoning.
    fleet = arbiter.fleet
    kept = (fleet.reserve_sum(now), fleet.fallback_sum(now))
    fleet._cache_until_s = -math.inf
    assert abs(kept[0] - fleet.reserve_sum(now)) < EPS and abs(kept[1] - fleet.fallback_sum(now)) < EPS

    # After every tick the shares aim under the limit: what fixed stations (offline, or
    # silent past their refresh) may draw plus every other station's target fits.
    if isinstance(event, Tick) and fleet._fixed_reserve <= limit + EPS:
        flexible = sum(s.target_w for s in fleet.stations.values() if s.online and not s.fixed)
        assert fleet._fixed_reserve + flexible <= limit + EPS

    # Fallback caps fit the fallback limit, always.
    assert arbiter.fleet.fallback_sum(now) <= fallback_limit + EPS
    # The reserves fit the limit, except right after the cap itself went down ...
    over = site.reserve() > limit + EPS
    if over:
        # ... the limit went down, or a station dropped off holding a higher fallback cap ...
        # ... or the gateway restarted and counts answers it had not stored yet as unanswered ...
        dropped = isinstance(event, StationDisconnected) or restarted
        assert over_before or limit < limit_before or dropped, action
        # ... and then nothing but cuts goes out: no move adds to what stations may draw.
        assert site.reserve() <= reserve_before + EPS or dropped, action
    else:
        # Outside the window the real stations are within the limit.
        assert sum(b for s in site.sims.values() if (b := s.bound(now)) is not None) <= limit + EPS
    # Limit enforced means exactly: commitments fit, every connected station bound by us.
    online = [s for s in arbiter.fleet.stations.values() if s.online]
    assert arbiter.view(now).enforced == (
        not over and arbiter.fleet.fallback_sum(now) <= fallback_limit + EPS and all(s.bound for s in online)
    )
    deadline = arbiter.next_deadline()
    assert deadline is None or math.isfinite(deadline)


def advance(site: Site, dt: float) -> None:
    """Let time pass as the shell does: a Tick at every deadline on the way."""
    target = site.now + dt
    for _ in range(200):
        deadline = site.arbiter.next_deadline()
        if deadline is None or deadline > target:
            break
        site.now = max(site.now, deadline)
        step_and_check(site, Tick())
    site.now = target
    if dt >= 1.0:  # the shell's delayed store of answer-only changes (runtime.COMMITMENTS_FLUSH_S)
        site.flush()


@settings(max_examples=400, deadline=None)
@given(steps=steps, settle_s=st.sampled_from([0.0, 0.5, 30.0]))
def test_the_cap_holds_over_random_sequences(steps: list[tuple[float, object]], settle_s: float) -> None:
    site = Site(settle_s)
    for dt, action in steps:
        advance(site, dt)
        step_and_check(site, action)

    # Liveness: once every station answers Accepted and time passes, every share is reached.
    for _ in range(30):
        for sid, sim in site.sims.items():
            while sim.online and sim.queue:
                step_and_check(site, Answer(sid, ProfileOutcome.ACCEPTED, True))
        advance(site, 31)
    for sid, sim in site.sims.items():
        while sim.online and sim.queue:
            step_and_check(site, Answer(sid, ProfileOutcome.ACCEPTED, True))
    arbiter = site.arbiter  # a Restart builds a new one
    offline_live, _ = arbiter.fleet.offline_reserve(site.now)
    if offline_live <= arbiter.limit_w:
        assert not arbiter.fleet.raises_waiting
        assert arbiter.view(site.now).enforced or not any(s.online for s in site.sims.values())
