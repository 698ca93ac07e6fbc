"""The limit-arbitration core: events in, decisions out, time passed in.

Called like a sans-I/O protocol object: ``handle(event, now_s) -> decisions`` and
``next_deadline()``; the shell sleeps until the deadline and feeds a ``Tick``.
It owns no sockets, threads, timers or clock.

Mode transitions (the whole table):

    INITIAL  --valid setpoint-->  NORMAL
    NORMAL   --link lost------->  HOLD      (last accepted setpoint held)
    HOLD     --link up--------->  NORMAL
    HOLD     --hold_timeout_s-->  FALLBACK  (fallback_limit_w)
    any      --valid setpoint-->  NORMAL
    FALLBACK --link up--------->  FALLBACK  (only a new valid setpoint lifts it)

INITIAL ignores link loss: no DSO limit was ever in force, so the configured
initial limit stays. On resume from the store, NORMAL becomes HOLD (no master is
connected yet) and a HOLD that expired while the gateway was down is FALLBACK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.allocation import StationRange, allocate
from gateway.decisions import (
    AllStationsEnforced,
    ApplyStationLimit,
    ConfirmSetpoint,
    Decision,
    EnforcementChanged,
    LimitChanged,
    PublishTotalPower,
    RejectSetpoint,
)
from gateway.durable import DurableLimit, resume
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
from gateway.model import MODE_SOURCE, LimitSource, Mode, OcppVersion, ProfileOutcome, Quality
from gateway.setpoint_rules import Refusal, SetpointBounds, check_setpoint


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


@dataclass(frozen=True, slots=True)
class StationView:
    station_id: str
    version: OcppVersion
    limit_w: float
    fallback_w: float
    power_w: float | None
    enforced: bool


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


@dataclass(slots=True)
class _Station:
    station_id: str
    version: OcppVersion
    min_w: float
    max_w: float
    limit_w: float = 0.0
    fallback_w: float = 0.0
    seq: int = 0
    accepted_seq: int = -1
    power_dw: int | None = None  # deciwatts, so the running total stays exact
    sampled_at_s: float = 0.0
    stale: bool = False


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
    _stations: dict[str, _Station] = field(default_factory=dict)  # insertion = connection order
    _totals: _Totals = field(default_factory=_Totals)
    _seq: int = 0
    _enforced: bool = True
    _unaccepted: set[str] = field(default_factory=set)  # ids with accepted_seq != seq: O(1) "all enforced"
    _pending_since_s: float | None = None
    _next_stale_check_s: float | None = None
    _last_realloc_s: float = float("-inf")
    _realloc_due_s: float | None = None
    _joined: set[str] = field(default_factory=set)  # connected since the last reallocation
    _published: tuple[float, Quality] | None = None

    @classmethod
    def start(cls, settings: ArbiterSettings, resumed: DurableLimit | None, now_s: float) -> Arbiter:
        """Build the core at start-up, resuming what the store kept (see gateway.durable.resume).

        Nothing stored starts INITIAL here; what a *missing* store means is the shell's call.
        """
        durable = resume(resumed, settings.hold_timeout_s, now_s, missing_start="initial")
        return cls(settings=settings, durable=durable)

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

    def view(self) -> SiteView:
        total, quality = self._total()
        stations = tuple(
            StationView(
                s.station_id,
                s.version,
                s.limit_w,
                s.fallback_w,
                None if s.power_dw is None else s.power_dw / 10,
                s.accepted_seq == s.seq,
            )
            for s in self._stations.values()
        )
        return SiteView(
            self.limit_w, self.source, self.mode, self.link_up, total, quality, self._enforced, stations
        )

    def next_deadline(self) -> float | None:
        """When the shell must come back with a Tick, or None if only events matter."""
        candidates = (self._hold_expiry(), self._next_stale_check_s, self._realloc_due_s)
        deadlines = [d for d in candidates if d is not None]
        return min(deadlines) if deadlines else None

    # -- deciding --------------------------------------------------------------

    def check_setpoint(self, event: SetpointReceived, now_s: float) -> Refusal | None:
        """Would ``event`` be refused? Lets the shell store an accepted limit before confirming."""
        return check_setpoint(event, self.settings.bounds, now_s)

    def durable_after(self, event: SetpointReceived, now_s: float) -> DurableLimit:
        """The durable state that accepting ``event`` at ``now_s`` produces."""
        return DurableLimit(Mode.NORMAL, event.value_w, now_s)

    def handle(self, event: Event, now_s: float) -> list[Decision]:
        out: list[Decision] = []
        match event:
            case SetpointReceived():
                self._on_setpoint(event, now_s, out)
            case DsoLinkUp():
                self.link_up = True
                if self.mode is Mode.HOLD:
                    self._set_mode(DurableLimit(Mode.NORMAL, self.durable.setpoint_w, now_s))
                    out.append(self.limit_changed("DSO link restored within the hold time"))
            case DsoLinkLost():
                self.link_up = False
                if self.mode is Mode.NORMAL:
                    self._set_mode(DurableLimit(Mode.HOLD, self.durable.setpoint_w, now_s, now_s))
                    out.append(self.limit_changed("DSO link lost: holding the last accepted setpoint"))
            case Tick():
                self._on_tick(now_s, out)
            case StationConnected():
                self._on_connected(event, now_s, out)
            case StationDisconnected():
                self._on_disconnected(event, now_s, out)
            case MeterSampled():
                self._on_meter(event, now_s, out)
            case ProfileResult():
                self._on_profile_result(event, now_s, out)
        return out

    def _on_setpoint(self, event: SetpointReceived, now_s: float, out: list[Decision]) -> None:
        refusal = self.check_setpoint(event, now_s)
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
        self._reallocate(now_s, out)
        self._check_enforced(now_s, out)

    def _on_tick(self, now_s: float, out: list[Decision]) -> None:
        expiry = self._hold_expiry()
        if expiry is not None and now_s >= expiry:
            self._set_mode(DurableLimit(Mode.FALLBACK, self.durable.setpoint_w, now_s))
            out.append(
                self.limit_changed(
                    f"DSO link down longer than hold_timeout_s={self.settings.hold_timeout_s:g}: fallback"
                )
            )
            self._pending_since_s = now_s
            self._reallocate(now_s, out)
            self._check_enforced(now_s, out)
        if self._realloc_due_s is not None and now_s >= self._realloc_due_s:
            self._reallocate(now_s, out)
            self._check_enforced(now_s, out)
        if self._next_stale_check_s is not None and now_s >= self._next_stale_check_s:
            self._refresh_staleness(now_s)
            self._publish_total(out)

    def _on_connected(self, event: StationConnected, now_s: float, out: list[Decision]) -> None:
        old = self._stations.pop(event.station_id, None)
        if old is not None:
            self._forget_reading(old)
            self._unaccepted.discard(event.station_id)
        station = _Station(
            event.station_id, event.version, event.min_power_w, max(event.max_power_w, event.min_power_w)
        )
        self._stations[event.station_id] = station
        self._totals.missing += 1
        # Until its first allocation the station counts as 0 W and not enforced.
        self._unaccepted.add(event.station_id)
        self._joined.add(event.station_id)
        self._reallocate_soon(now_s, out)
        self._update_enforced(out)
        self._publish_total(out)

    def _on_disconnected(self, event: StationDisconnected, now_s: float, out: list[Decision]) -> None:
        station = self._stations.pop(event.station_id, None)
        if station is None:
            return
        self._forget_reading(station)
        self._unaccepted.discard(event.station_id)
        self._joined.discard(event.station_id)
        self._reallocate_soon(now_s, out)
        self._check_enforced(now_s, out)
        self._publish_total(out)

    def _on_meter(self, event: MeterSampled, now_s: float, out: list[Decision]) -> None:
        station = self._stations.get(event.station_id)
        if station is None:
            return  # a sample from a station we do not serve cannot count toward the site
        power_dw = round(max(0.0, event.power_w) * 10)
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
        self._publish_total(out)

    def _on_profile_result(self, event: ProfileResult, now_s: float, out: list[Decision]) -> None:
        station = self._stations.get(event.station_id)
        if station is None or event.seq != station.seq:
            return  # an answer to an allocation that has since been replaced
        if event.outcome is ProfileOutcome.ACCEPTED:
            station.accepted_seq = event.seq
            self._unaccepted.discard(event.station_id)
        self._check_enforced(now_s, out)

    # -- helpers ---------------------------------------------------------------

    def _set_mode(self, durable: DurableLimit) -> None:
        self.durable = durable

    def _hold_expiry(self) -> float | None:
        if self.durable.mode is not Mode.HOLD or self.durable.hold_started_at_s is None:
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
        """Split the limit afresh; tell every station whose share moved and every new one."""
        force, self._joined = self._joined, set()
        self._last_realloc_s, self._realloc_due_s = now_s, None
        ranges = [StationRange(s.station_id, s.min_w, s.max_w) for s in self._stations.values()]
        live = allocate(self.limit_w, ranges)
        fallback = allocate(self.settings.fallback_limit_w, ranges)
        source = self.source
        for station in self._stations.values():
            limit_w, fallback_w = live[station.station_id], fallback[station.station_id]
            if station.station_id in force or (limit_w, fallback_w) != (station.limit_w, station.fallback_w):
                self._seq += 1
                station.limit_w, station.fallback_w, station.seq = limit_w, fallback_w, self._seq
                self._unaccepted.add(station.station_id)
                out.append(ApplyStationLimit(station.station_id, limit_w, fallback_w, self._seq, source))

    def _update_enforced(self, out: list[Decision]) -> None:
        enforced = not self._unaccepted
        if enforced != self._enforced:
            self._enforced = enforced
            out.append(EnforcementChanged(enforced))

    def _check_enforced(self, now_s: float, out: list[Decision]) -> None:
        self._update_enforced(out)
        if self._enforced and self._pending_since_s is not None:
            if self._stations:
                out.append(AllStationsEnforced(now_s - self._pending_since_s))
            self._pending_since_s = None

    def _forget_reading(self, station: _Station) -> None:
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
        for station in self._stations.values():
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
