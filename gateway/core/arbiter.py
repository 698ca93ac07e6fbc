"""The limit-arbitration core: events in, decisions out, time passed in.

Called like a sans-I/O protocol object: ``handle(event, now_s) -> decisions`` and
``next_deadline()``; the shell sleeps until the deadline and feeds a ``Tick``.
It owns no sockets, threads, timers or clock.

Mode transitions (the whole table):

    INITIAL  --valid setpoint-->  NORMAL
    INITIAL  --no master for hold_timeout_s (from start or link loss)-->  FALLBACK
    NORMAL   --link lost------->  HOLD      (last accepted setpoint held)
    HOLD     --link up--------->  NORMAL
    HOLD     --hold_timeout_s-->  FALLBACK  (fallback_limit_w)
    any      --valid setpoint-->  NORMAL
    FALLBACK --link up--------->  FALLBACK  (only a new valid setpoint lifts it)

With ``fallback_without_master`` off, INITIAL ignores link loss and keeps the
configured initial limit until the first setpoint. On resume from the store, NORMAL
becomes HOLD (no master is connected yet) and a HOLD that expired while the gateway
was down is FALLBACK.

The cap invariant (DESIGN.md): the stations' commitments — what each station may
draw under the profiles it holds or may hold, online or offline — add up to at most
the limit in force, and their fallback caps to at most ``fallback_limit_w``, at every
instant; the one exception is the window right after the limit itself went down, in
which only cuts go out. ``gateway.core.ledger`` keeps one station's commitments,
``gateway.core.fleet`` the sums and the order of moves (cuts before raises), and
``gateway.core.demand`` what share a station can use. ``limit_enforced`` means the
commitments fit the limit and every connected station is bound by a profile it
accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.decisions import (
    AllStationsEnforced,
    ConfirmSetpoint,
    Decision,
    EnforcementChanged,
    LimitChanged,
    MeterRefused,
    PublishTotalPower,
    RejectSetpoint,
    StationReleaseRefused,
)
from gateway.core.durable import DurableLimit, resume
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
from gateway.core.fleet import Fleet, FleetSettings, Station
from gateway.core.ledger import StationLedger
from gateway.core.model import MODE_SOURCE, LimitSource, Mode, OcppVersion, ProfileOutcome, Quality
from gateway.core.setpoint_rules import Refusal, SetpointBounds, check_setpoint


@dataclass(frozen=True, slots=True)
class ArbiterSettings:
    bounds: SetpointBounds
    initial_limit_w: float
    fallback_limit_w: float
    hold_timeout_s: float
    meter_stale_after_s: float
    # Station (dis)connections within this window after a reallocation share the next one:
    # every join changes every share, so a burst of N joins would otherwise cost O(N^2).
    reallocation_settle_s: float = 0.0
    # No master within hold_timeout_s of start (or of its loss) before any setpoint: fallback.
    fallback_without_master: bool = True
    # A reading above this multiple of the station's maximum power (or not finite) is refused.
    meter_plausible_factor: float = 1.5
    fleet: FleetSettings = field(default_factory=FleetSettings)


@dataclass(frozen=True, slots=True)
class StationView:
    station_id: str
    version: OcppVersion
    limit_w: float  # the share the core wants it to have
    fallback_w: float
    power_w: float | None
    enforced: bool  # it accepted the latest allocation sent to it
    online: bool = True
    committed_w: float = 0.0  # the most it may draw now under what it holds or may hold
    fallback_committed_w: float = 0.0


@dataclass(frozen=True, slots=True)
class SiteView:
    """Everything an adapter may need to answer an interrogation."""

    limit_w: float
    source: LimitSource
    mode: Mode
    link_up: bool
    total_power_w: float
    quality: Quality
    enforced: bool
    stations: tuple[StationView, ...]
    committed_w: float = 0.0
    fallback_committed_w: float = 0.0
    raises_waiting: int = 0
    # The last closed DSO command's time to comply (None: none yet, or it did not comply);
    # filled in by the shell (``CoreRuntime.view``) from its proof recorder, not by the core.
    time_to_comply_s: float | None = None
    time_to_comply_known: bool = False


@dataclass(slots=True)
class _Totals:
    power_dw: int = 0
    missing: int = 0  # connected stations that never reported
    stale: int = 0


@dataclass(slots=True)
class Arbiter:
    settings: ArbiterSettings
    durable: DurableLimit
    link_up: bool = False
    fleet: Fleet = field(init=False)
    _totals: _Totals = field(default_factory=_Totals)
    _enforced: bool = True
    _pending_since_s: float | None = None
    _next_stale_check_s: float | None = None
    _last_realloc_s: float = float("-inf")
    _realloc_due_s: float | None = None
    _joined: set[str] = field(default_factory=set)  # connected since the last reallocation
    _published: tuple[float, Quality] | None = None
    _last_now_s: float = 0.0
    _checked: tuple[SetpointReceived, float, Refusal | None] | None = None  # see check_setpoint

    def __post_init__(self) -> None:
        self.fleet = Fleet(self.settings.fleet)

    @classmethod
    def start(cls, settings: ArbiterSettings, resumed: DurableLimit | None, now_s: float) -> Arbiter:
        """Build the core at start-up, resuming what the store kept (see gateway.core.durable.resume).

        Nothing stored starts INITIAL here; what a *missing* store means is the shell's call.
        """
        durable = resume(
            resumed,
            settings.hold_timeout_s,
            now_s,
            missing_start="initial",
            initial_fallback=settings.fallback_without_master,
        )
        return cls(settings=settings, durable=durable)

    def restore(self, stations: Iterable[tuple[str, OcppVersion, StationLedger]], now_s: float) -> None:
        """At start-up, before any event: the stations the previous run profiled, offline with
        what they may still hold (``Fleet.restore``). The limit counts as enforced only if
        those commitments fit it."""
        for station_id, version, ledger in stations:
            self.fleet.restore(station_id, version, ledger, now_s)
        self._enforced = self.fleet.fits(now_s, self.limit_w, self.settings.fallback_limit_w)

    # -- reading ---------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self.durable.mode

    @property
    def limit_w(self) -> float:
        mode = self.durable.mode
        if mode is Mode.INITIAL or self.durable.setpoint_w is None and mode is not Mode.FALLBACK:
            return self.settings.initial_limit_w
        if mode is Mode.FALLBACK:
            return self.settings.fallback_limit_w
        assert self.durable.setpoint_w is not None
        return self.durable.setpoint_w

    @property
    def source(self) -> LimitSource:
        return MODE_SOURCE[self.durable.mode]

    def limit_changed(self, reason: str) -> LimitChanged:
        return LimitChanged(self.limit_w, self.source, self.mode, reason)

    def view(self, now_s: float | None = None) -> SiteView:
        """The site as the core sees it; commitments as of ``now_s`` (default: the last event)."""
        fleet = self.fleet
        now = self._last_now_s if now_s is None else now_s
        total, quality = self._total()
        stations = tuple(
            StationView(
                s.station_id,
                s.version,
                s.target_w,
                s.target_fallback_w,
                None if s.power_dw is None else s.power_dw / 10,
                s.up_to_date,
                s.online,
                s.ledger.commitment_w(now),
                s.ledger.fallback_commitment_w(),
            )
            for s in fleet.stations.values()
        )
        return SiteView(
            self.limit_w,
            self.source,
            self.mode,
            self.link_up,
            total,
            quality,
            self._enforced,
            stations,
            sum(s.committed_w for s in stations),
            sum(s.fallback_committed_w for s in stations),
            len(fleet.raises_waiting),
        )

    def next_deadline(self) -> float | None:
        """When the shell must come back with a Tick, or None if only events matter."""
        best: float | None = None
        for d in (
            self._hold_expiry(),
            self._next_stale_check_s,
            self._realloc_due_s,
            self.fleet.next_deadline(),
        ):
            if d is not None and (best is None or d < best):
                best = d
        return best

    # -- deciding --------------------------------------------------------------

    def check_setpoint(self, event: SetpointReceived, now_s: float) -> Refusal | None:
        """Would ``event`` be refused? Lets the shell store an accepted limit before confirming.

        The verdict is kept for ``handle`` of the same event at the same instant: a setpoint
        is validated once on its way in."""
        refusal = check_setpoint(event, self.settings.bounds, now_s)
        self._checked = (event, now_s, refusal)
        return refusal

    def durable_after(self, event: SetpointReceived, now_s: float) -> DurableLimit:
        """The durable state that accepting ``event`` at ``now_s`` produces."""
        return DurableLimit(Mode.NORMAL, event.value_w, now_s)

    def handle(self, event: Event, now_s: float) -> list[Decision]:
        out: list[Decision] = []
        self._last_now_s = now_s
        # The hot paths first: a fan-out's thousands of answers, every station's meter samples.
        if type(event) is ProfileResult:
            self._on_profile_result(event, now_s, out)
            return out
        if type(event) is MeterSampled:
            self._on_meter(event, now_s, out)
            return out
        match event:
            case SetpointReceived():
                self._on_setpoint(event, now_s, out)
            case DsoLinkUp():
                self.link_up = True
                if self.mode is Mode.HOLD:
                    self._set_mode(DurableLimit(Mode.NORMAL, self.durable.setpoint_w, now_s))
                    out.append(self.limit_changed("DSO link restored within the hold time"))
                elif self.mode is Mode.INITIAL and self.durable.hold_started_at_s is not None:
                    self._set_mode(DurableLimit(Mode.INITIAL, None, self.durable.changed_at_s, None))
            case DsoLinkLost():
                self.link_up = False
                if self.mode is Mode.NORMAL:
                    self._set_mode(DurableLimit(Mode.HOLD, self.durable.setpoint_w, now_s, now_s))
                    out.append(self.limit_changed("DSO link lost: holding the last accepted setpoint"))
                elif self.mode is Mode.INITIAL:
                    self._set_mode(DurableLimit(Mode.INITIAL, None, self.durable.changed_at_s, now_s))
            case Tick():
                self._on_tick(now_s, out)
            case StationConnected():
                self._on_connected(event, now_s, out)
            case StationDisconnected():
                self._on_disconnected(event, now_s, out)
            case StationActivity():
                self._on_activity(event, now_s, out)
            case StationReleased():
                self._on_released(event, now_s, out)
            case MeterSampled():
                self._on_meter(event, now_s, out)
            case ProfileResult():
                self._on_profile_result(event, now_s, out)
        return out

    def _on_setpoint(self, event: SetpointReceived, now_s: float, out: list[Decision]) -> None:
        checked, self._checked = self._checked, None
        if checked is not None and checked[0] is event and checked[1] == now_s:
            refusal = checked[2]  # the shell asked already (check_setpoint), for this very event
        else:
            refusal = check_setpoint(event, self.settings.bounds, now_s)
        if refusal is not None:
            out.append(RejectSetpoint(event.value_w, refusal.reason, refusal.detail))
            return
        self.link_up = True  # a command can only arrive over a live link
        old_limit = self.limit_w
        self._set_mode(self.durable_after(event, now_s))
        out.append(ConfirmSetpoint(event.value_w))
        out.append(self.limit_changed(f"DSO setpoint {event.value_w:g} W from {event.peer or 'master'}"))
        if self.limit_w != old_limit or not self._enforced:
            self._pending_since_s = now_s
        # The stations are worked on at once, but after the confirmation has gone out: a
        # deadline of now, so the DSO's ACT_CON never waits on a fan-out to 5,000 stations.
        self._realloc_due_s = now_s
        self._check_enforced(now_s, out)

    def _on_tick(self, now_s: float, out: list[Decision]) -> None:
        expiry = self._hold_expiry()
        if expiry is not None and now_s >= expiry:
            initial = self.mode is Mode.INITIAL
            self._set_mode(DurableLimit(Mode.FALLBACK, self.durable.setpoint_w, now_s))
            why = "no DSO master seen" if initial else "DSO link down"
            out.append(
                self.limit_changed(f"{why} for hold_timeout_s={self.settings.hold_timeout_s:g}: fallback")
            )
            self._pending_since_s = now_s
            self._reallocate(now_s, out)
        fleet = self.fleet
        if self._realloc_due_s is not None and now_s >= self._realloc_due_s or fleet.targets_stale(now_s):
            # Joins and leaves settled, or an offline station's live cap lapsed: shares move.
            self._reallocate(now_s, out)
        else:
            force = fleet.refresh_due(now_s) if fleet.next_deadline() is not None else set()
            if force or fleet.raise_turns_due(now_s) or fleet.raises_waiting:
                fleet.plan(now_s, self.limit_w, self.settings.fallback_limit_w, self.source, force, out)
        self._check_enforced(now_s, out)
        if self._next_stale_check_s is not None and now_s >= self._next_stale_check_s:
            self._refresh_staleness(now_s)
            self._publish_total(out)

    def _on_connected(self, event: StationConnected, now_s: float, out: list[Decision]) -> None:
        old = self.fleet.stations.get(event.station_id)
        if old is not None and old.online:
            self._forget_reading(old)
        self.fleet.join(
            event.station_id,
            event.version,
            event.min_power_w,
            event.max_power_w,
            event.priority,
            event.weight,
            now_s,
        )
        self._totals.missing += 1
        self._joined.add(event.station_id)
        self._reallocate_soon(now_s, out)
        self._check_enforced(now_s, out)
        self._publish_total(out)

    def _on_disconnected(self, event: StationDisconnected, now_s: float, out: list[Decision]) -> None:
        station = self.fleet.stations.get(event.station_id)
        if station is None or not station.online:
            return
        self._forget_reading(station)
        self.fleet.leave(event.station_id, now_s)
        self._joined.discard(event.station_id)
        self._reallocate_soon(now_s, out)
        self._check_enforced(now_s, out)
        self._publish_total(out)

    def _on_activity(self, event: StationActivity, now_s: float, out: list[Decision]) -> None:
        station = self.fleet.stations.get(event.station_id)
        if station is None or not station.online:
            return
        if station.demand.set_charging(event.charging, now_s):
            self._reallocate_soon(now_s, out)
            self._check_enforced(now_s, out)

    def _on_released(self, event: StationReleased, now_s: float, out: list[Decision]) -> None:
        refusal = self.fleet.release(event.station_id)
        if refusal is not None:
            out.append(StationReleaseRefused(event.station_id, refusal))
            return
        self._reallocate(now_s, out)
        self._check_enforced(now_s, out)

    def _on_meter(self, event: MeterSampled, now_s: float, out: list[Decision]) -> None:
        station = self.fleet.stations.get(event.station_id)
        if station is None or not station.online:
            return  # a sample from a station we do not serve cannot count toward the site
        bound_w = self.settings.meter_plausible_factor * station.max_w
        if not math.isfinite(event.power_w) or abs(event.power_w) > bound_w:
            # Never let one station's broken (or hostile) meter poison the DSO's total.
            if station.power_dw is not None:
                self._forget_reading(station)
                self._totals.missing += 1
                station.power_dw, station.stale = None, False
            if not station.meter_refused:
                station.meter_refused = True
                out.append(
                    MeterRefused(
                        station.station_id,
                        event.power_w,
                        f"{event.power_w!r} W is not a plausible reading for a station of"
                        f" {station.max_w:g} W (limit {bound_w:g} W)",
                    )
                )
            self._publish_total(out)
            return
        station.meter_refused = False
        power_w = max(0.0, event.power_w)
        power_dw = round(power_w * 10)
        if station.power_dw is None:
            self._totals.missing -= 1
            self._totals.power_dw += power_dw
        else:
            self._totals.power_dw += power_dw - station.power_dw
        if station.stale:
            station.stale = False
            self._totals.stale -= 1
        station.power_dw = power_dw
        station.sampled_at_s = now_s
        if self._next_stale_check_s is None:
            # Any reading older than this one goes stale first, so an earlier check stays valid.
            self._next_stale_check_s = now_s + self.settings.meter_stale_after_s
        # Judge the EV against the cap it really had, not a share still on its way.
        held = station.ledger.held
        cap_w = station.target_w if held is None else held.live_w
        if station.demand.sample(power_w, cap_w, station.min_w, self.settings.fleet.demand, now_s):
            self._reallocate_soon(now_s, out)
            self._check_enforced(now_s, out)
        self._publish_total(out)

    def _on_profile_result(self, event: ProfileResult, now_s: float, out: list[Decision]) -> None:
        fleet = self.fleet
        if event.outcome is ProfileOutcome.ACCEPTED:
            if fleet.accepted(event.station_id, event.seq, now_s) is None:
                return
        else:
            fleet.refused(event.station_id, event.seq)
        if fleet.targets_stale(now_s):
            # e.g. a station back after its live cap lapsed accepted its bound: it is no longer
            # fixed, so the shares it was left out of are split again (found by scenario V12).
            self._reallocate(now_s, out)
        elif fleet.worth_replanning(now_s, self.limit_w):
            fleet.plan(
                now_s,
                self.limit_w,
                self.settings.fallback_limit_w,
                self.source,
                set(),
                out,
                only=list(fleet.raises_waiting),
            )
        self._check_enforced(now_s, out)

    # -- helpers ---------------------------------------------------------------

    def _set_mode(self, durable: DurableLimit) -> None:
        self.durable = durable

    def _hold_expiry(self) -> float | None:
        mode = self.durable.mode
        if mode is Mode.INITIAL:
            if not self.settings.fallback_without_master or self.link_up:
                return None
            started = self.durable.hold_started_at_s
            return (self.durable.changed_at_s if started is None else started) + self.settings.hold_timeout_s
        if mode is not Mode.HOLD or self.durable.hold_started_at_s is None:
            return None
        return self.durable.hold_started_at_s + self.settings.hold_timeout_s

    def _reallocate_soon(self, now_s: float, out: list[Decision]) -> None:
        """Reallocate now, or at the end of the settle window if one just happened."""
        if self._realloc_due_s is not None:
            return  # already scheduled: this change rides along
        if now_s - self._last_realloc_s >= self.settings.reallocation_settle_s:
            self._reallocate(now_s, out)
        else:
            self._realloc_due_s = self._last_realloc_s + self.settings.reallocation_settle_s

    def _reallocate(self, now_s: float, out: list[Decision]) -> None:
        """Split the limit afresh and move the stations toward it: cuts first, raises into free room."""
        force, self._joined = self._joined, set()
        self._last_realloc_s, self._realloc_due_s = now_s, None
        fleet = self.fleet
        fleet.set_targets(now_s, self.limit_w, self.settings.fallback_limit_w)
        force |= fleet.refresh_due(now_s)
        fleet.plan(now_s, self.limit_w, self.settings.fallback_limit_w, self.source, force, out)

    def _check_enforced(self, now_s: float, out: list[Decision]) -> None:
        enforced = self.fleet.fits(now_s, self.limit_w, self.settings.fallback_limit_w)
        if enforced != self._enforced:
            self._enforced = enforced
            out.append(EnforcementChanged(enforced))
        if self._enforced and self._pending_since_s is not None:
            if any(True for _ in self.fleet.online()):
                out.append(AllStationsEnforced(now_s - self._pending_since_s))
            self._pending_since_s = None

    def _forget_reading(self, station: Station) -> None:
        if station.power_dw is None:
            self._totals.missing -= 1
        else:
            self._totals.power_dw -= station.power_dw
        if station.stale:
            self._totals.stale -= 1

    def _refresh_staleness(self, now_s: float) -> None:
        limit = self.settings.meter_stale_after_s
        earliest: float | None = None
        stale = 0
        for station in self.fleet.online():
            if station.power_dw is None:
                continue
            station.stale = now_s - station.sampled_at_s >= limit
            if station.stale:
                stale += 1
            elif earliest is None or station.sampled_at_s < earliest:
                earliest = station.sampled_at_s
        self._totals.stale = stale
        self._next_stale_check_s = None if earliest is None else earliest + limit

    def _total(self) -> tuple[float, Quality]:
        totals = self._totals
        if totals.missing:
            quality = Quality.INVALID
        elif totals.stale:
            quality = Quality.NOT_TOPICAL
        else:
            quality = Quality.GOOD
        return totals.power_dw / 10, quality

    def _publish_total(self, out: list[Decision]) -> None:
        current = self._total()
        if current != self._published:
            self._published = current
            out.append(PublishTotalPower(*current))
