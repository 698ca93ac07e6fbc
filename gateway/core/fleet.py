"""The stations the core has profiled, their shares and commitments: cuts before raises (pure).

A ``Fleet`` keeps, for every station it has ever profiled (online or not), a
``StationLedger`` of the profiles it holds or may hold, and the sums of what they may
draw. It turns the shares the arbiter wants into ``ApplyStationLimit`` decisions under
one rule: **the stations' reserves never add up to more than the limit in force**
(``gateway.core.ledger`` defines a reserve), apart from the window right after the limit
itself went down, when only cuts go out.

- A cut (a value at or below what was last sent) goes out at once: it can only lower
  what the station may draw, and while it is on its way the old value still counts.
- A raise goes out only into room that is really free: limit minus every reserve. If it
  does not fit, it waits (``raises_waiting``) until Accepted cuts free the room or old
  caps lapse. While cuts are still unanswered only whole raises go out, so a join does
  not cost one message per Accepted cut; once nothing is awaited, what is free is given
  in part (never below the station's minimum).
- Raises are rate-limited per station (``raise_interval_s``), cuts never: every profile
  is a flash write on many stations.
- A station that goes offline keeps its reserve: it may be charging under what it holds.
  Its live cap lapses at its ``validTo``; from then its fallback cap counts. Only a
  reconnect followed by Accepted profiles, or an operator's release, frees it.
- Commitments outlive the gateway. Every profile sent is handed to the shell
  (``drain_sent``), which journals it before the decisions go out: a raise, or a cut
  that moves a validTo on, must be on disk before a station can hold it. Appending the
  new entries is one short write whatever the fan-out (storing 5,000 whole ledgers
  first cost a 5,000-station fan-out ~50 ms, bench/README.md). The ledgers that changed
  are stored whole soon after (``drain_changes``), replacing the journal; answers alone
  are stored that way too (they can only lower a commitment), and an operator's release
  at once (``store_now``). ``restore`` brings each stored station back at start-up as
  offline, reserving what it may still hold: its stored ledger plus every journaled
  entry newer than it, counted as possibly held.
- The live profile is re-sent every ``refresh_s`` (in batches, so stations share one
  tick) with a new ``validTo`` of ``live_validity_s`` ahead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.allocation import StationRange, allocate
from gateway.core.decisions import ApplyStationLimit, Decision
from gateway.core.demand import Demand, DemandSettings
from gateway.core.ledger import Profiles, StationLedger
from gateway.core.model import LimitSource, OcppVersion

_EPS_W = 1e-3


@dataclass(frozen=True, slots=True)
class FleetSettings:
    # The live profile's validTo is this far ahead when sent: an offline station's live
    # share lapses to its fallback share within this time.
    live_validity_s: float = 600.0
    # Re-sent this often (one flash write per station each time): 480 s is ~66,000 a year.
    refresh_s: float = 480.0
    # A station's raises at most this often; cuts are never delayed.
    raise_interval_s: float = 30.0
    demand: DemandSettings = field(default_factory=DemandSettings)

    @property
    def margin_s(self) -> float:
        """A held live cap closer than this to its validTo is no longer assured."""
        return (self.live_validity_s - self.refresh_s) / 2

    @property
    def refresh_batch_s(self) -> float:
        return (self.live_validity_s - self.refresh_s) / 4


@dataclass(slots=True)
class Station:
    station_id: str
    version: OcppVersion
    min_w: float
    max_w: float
    priority: int
    weight: float
    order: int
    online: bool = True
    ledger: StationLedger = field(default_factory=StationLedger)
    demand: Demand = field(default_factory=Demand)
    target_w: float = 0.0
    target_fallback_w: float = 0.0
    seq: int = 0  # the newest allocation sent
    accepted_seq: int = -1
    live_sent_s: float = -math.inf
    last_raise_s: float = -math.inf
    reserve_w: float = 0.0  # cached: ledger.reserve_w at the fleet's cache time
    fixed: bool = False  # cached: offline, or its live cap no longer assured (its share is not ours to move)
    counted_offline: bool = False  # cached: its reserve is in the offline sums
    fallback_commit_w: float = 0.0  # cached: ledger.fallback_commitment_w()
    # Meter readings (kept by the arbiter).
    power_dw: int | None = None
    sampled_at_s: float = 0.0
    stale: bool = False
    meter_refused: bool = False  # its last reading was implausible (told once per streak)
    _ranges: dict[float | None, StationRange] = field(default_factory=dict)

    @property
    def bound(self) -> bool:
        """Holds a profile it accepted from us."""
        return self.ledger.held is not None

    @property
    def up_to_date(self) -> bool:
        return self.accepted_seq == self.seq

    def range(self, settings: DemandSettings, with_demand: bool) -> StationRange:
        ceiling = self.demand.ceiling_w(settings, self.min_w) if with_demand else None
        cached = self._ranges.get(ceiling)
        if cached is None:  # shares are recomputed often, ceilings rarely move: build each once
            high = self.max_w if ceiling is None else min(self.max_w, ceiling)
            cached = StationRange(self.station_id, min(self.min_w, high), high, self.weight, self.priority)
            if len(self._ranges) > 8:
                self._ranges.clear()
            self._ranges[ceiling] = cached
        return cached


@dataclass(slots=True)
class Fleet:
    settings: FleetSettings
    stations: dict[str, Station] = field(default_factory=dict)  # insertion = connection order
    raises_waiting: set[str] = field(default_factory=set)
    _awaiting: set[str] = field(default_factory=set)  # online stations with an unanswered profile
    _unbound: set[str] = field(default_factory=set)  # online stations holding no profile of ours
    offline_count: int = 0
    _orders: int = 0
    _seq: int = 0
    _reserve_sum: float = 0.0
    _fallback_sum: float = 0.0
    _offline_reserve: float = 0.0
    _offline_fallback: float = 0.0
    _fixed_reserve: float = 0.0  # offline stations and those whose refresh went unanswered
    _fixed_fallback: float = 0.0
    _cache_until_s: float = -math.inf  # the sums hold until this instant
    _next_refresh_s: float | None = None
    _raise_due_s: float | None = None
    _targets_fixed: tuple[float, float] = (0.0, 0.0)  # what fixed stations held when targets were set
    _fixed_epoch: int = 0  # counts changes of which stations are fixed
    _targets_epoch: int = 0  # ... as it was when targets were set
    _margin_s: float = 0.0  # settings.margin_s, read on every answer
    # Ledgers changed since the shell last stored them whole, stations forgotten since then,
    # and the profiles sent since the shell last journaled them (see the module doc).
    _changed: set[str] = field(default_factory=set)
    _removed: set[str] = field(default_factory=set)
    _sent: list[tuple[Station, Profiles]] = field(default_factory=list)
    _unjournaled: bool = False  # a journal write failed: the next store of whole ledgers syncs

    def __post_init__(self) -> None:
        self._margin_s = self.settings.margin_s

    # -- membership --------------------------------------------------------------

    def join(
        self,
        station_id: str,
        version: OcppVersion,
        min_w: float,
        max_w: float,
        priority: int,
        weight: float,
        now_s: float,
    ) -> Station:
        """A station (re)connected: it keeps its ledger, and goes to the end of the connection order.

        O(1): the sums move by this station's own difference (a burst of 5,000 joins must not
        cost 5,000 walks over the fleet).
        """
        old = self.stations.pop(station_id, None)
        if old is not None and not old.online:
            self.offline_count -= 1
        self._orders += 1
        station = Station(station_id, version, min_w, max(max_w, min_w), priority, weight, self._orders)
        if old is not None:
            station.ledger, station.seq, station.accepted_seq = old.ledger, old.seq, old.accepted_seq
            station.last_raise_s = old.last_raise_s
            station.reserve_w, station.fallback_commit_w = old.reserve_w, old.fallback_commit_w
            station.fixed, station.counted_offline = old.fixed, old.counted_offline
        self.stations[station_id] = station
        if station.ledger.held is None:
            self._unbound.add(station_id)
        self._restate(station, now_s)
        return station

    def restore(self, station_id: str, version: OcppVersion, ledger: StationLedger, now_s: float) -> None:
        """At start-up: a station the previous run profiled, offline until it reconnects.

        It keeps every cap it may hold (live until its validTo, then its fallback cap), so
        the stations that connect first share only what it leaves of the limit.
        """
        if station_id in self.stations or (ledger.held is None and not ledger.pending):
            return
        self._orders += 1
        station = Station(station_id, version, 0.0, 0.0, 0, 1.0, self._orders, online=False, ledger=ledger)
        last = ledger.last_sent
        station.seq = 0 if last is None else last.seq
        station.accepted_seq = -1 if ledger.held is None else ledger.held.seq
        self._seq = max(self._seq, station.seq)  # new entries stay newer than every restored one
        self.stations[station_id] = station
        self.offline_count += 1
        self._restate(station, now_s)
        # Stored whole at the next store (which empties the journal it may have come from).
        self._changed.add(station_id)

    def drain_sent(self) -> list[tuple[str, OcppVersion, Profiles]]:
        """The profiles sent since the last call (or ``drain_changes``), oldest first: the
        shell journals them before they go out (see the module doc)."""
        sent, self._sent = self._sent, []
        return [(station.station_id, station.version, entry) for station, entry in sent]

    def drain_changes(self) -> tuple[list[Station], list[str], bool]:
        """(stations whose ledger changed, stations forgotten, whether a profile went out and
        was not journaled yet) since the last call: the shell stores these ledgers whole,
        in place of the journal (see the module doc)."""
        changed = [self.stations[i] for i in self._changed if i in self.stations]
        removed = [i for i in self._removed if i not in self.stations]
        sent = bool(self._sent) or self._unjournaled
        self._changed, self._removed, self._sent, self._unjournaled = set(), set(), [], False
        return changed, removed, sent

    def not_stored(self, changed: Iterable[str], removed: Iterable[str], sent: bool) -> None:
        """A store failed: what it was to keep waits for the next one (``sent``: profiles
        went out that neither the journal nor a whole ledger holds, so that one syncs). Its
        journal rows stay on disk, and the next store of whole ledgers, which empties the
        journal, must cover their stations."""
        self._changed.update(i for i in changed if i in self.stations)
        self._removed.update(i for i in removed if i not in self.stations)
        self._unjournaled |= sent

    @property
    def has_changes(self) -> bool:
        return bool(self._changed or self._removed)

    @property
    def sent_since_drain(self) -> bool:
        """A profile went out since the last drain: it must be on disk before it is sent."""
        return bool(self._sent)

    @property
    def delivering(self) -> bool:
        """A profile is out, unanswered, at an online station (a fan-out is under way)."""
        return bool(self._awaiting)

    @property
    def store_now(self) -> bool:
        """A station was forgotten (an operator's release): stored whole, at once, before the
        decisions go out (the journal would otherwise bring it back at a restart)."""
        return bool(self._removed)

    def leave(self, station_id: str, now_s: float) -> Station | None:
        station = self.stations.get(station_id)
        if station is None or not station.online:
            return None
        station.online = False
        station.power_dw, station.stale = None, False
        self._awaiting.discard(station_id)
        self._unbound.discard(station_id)
        self.raises_waiting.discard(station_id)
        if station.ledger.held is None and not station.ledger.pending:
            self._forget(station)
            del self.stations[station_id]  # never profiled: nothing binds it, nothing to keep
        else:
            self.offline_count += 1
            self._restate(station, now_s)
        return station

    def release(self, station_id: str) -> str | None:
        """Forget an offline station's commitment; the reason it cannot, or None."""
        station = self.stations.get(station_id)
        if station is None:
            return "unknown station"
        if station.online:
            return "the station is online: its commitment follows its answers"
        self._forget(station)
        del self.stations[station_id]
        self.offline_count -= 1
        self._unbound.discard(station_id)
        self._changed.discard(station_id)
        self._removed.add(station_id)  # stored at once, whole (``store_now``)
        return None

    def online(self) -> Iterable[Station]:
        return (s for s in self.stations.values() if s.online)

    # -- sums --------------------------------------------------------------------

    def reserve_sum(self, now_s: float) -> float:
        self._refresh(now_s)
        return self._reserve_sum

    def fallback_sum(self, now_s: float) -> float:
        self._refresh(now_s)
        return self._fallback_sum

    def offline_reserve(self, now_s: float) -> tuple[float, float]:
        """(live, fallback) reserved by offline stations."""
        self._refresh(now_s)
        return self._offline_reserve, self._offline_fallback

    def fits(self, now_s: float, limit_w: float, fallback_limit_w: float) -> bool:
        """The commitments fit both limits, and every online station is bound by us."""
        self._refresh(now_s)
        if self._reserve_sum > limit_w + _EPS_W or self._fallback_sum > fallback_limit_w + _EPS_W:
            return False
        return not self._unbound

    def next_deadline(self) -> float | None:
        best: float | None = None
        for t in (self._cache_until_s, self._next_refresh_s, self._raise_due_s):
            if t is not None and math.isfinite(t) and (best is None or t < best):
                best = t
        return best

    def _refresh(self, now_s: float) -> None:
        if now_s < self._cache_until_s:
            return
        margin = self._margin_s
        self._reserve_sum = self._fallback_sum = 0.0
        self._offline_reserve = self._offline_fallback = 0.0
        self._fixed_reserve = self._fixed_fallback = 0.0
        until = math.inf
        for station in self.stations.values():
            # Each station's part starts from zero (its ``fixed`` flag stays: _account compares it).
            station.reserve_w = station.fallback_commit_w = 0.0
            station.counted_offline = False
            self._account(station, now_s)
            change = station.ledger.next_change_s(now_s, margin)
            if change is not None and change < until:
                until = change
        self._cache_until_s = until

    def _account(self, station: Station, now_s: float, reserve_w: float | None = None) -> None:
        """Bring one station's part of every sum up to date (``reserve_w``: already known)."""
        ledger, online = station.ledger, station.online
        assured = ledger.live_assured(now_s, self._margin_s)
        reserve = ledger.bound_w(now_s, online and assured) if reserve_w is None else reserve_w
        fallback = ledger.fallback_commitment_w()
        fixed = not online or (ledger.held is not None and not assured)
        if fixed != station.fixed:
            self._fixed_epoch += 1  # who is fixed changed: the shares must be split again
        self._forget(station)
        self._reserve_sum += reserve
        self._fallback_sum += fallback
        if not station.online:
            self._offline_reserve += reserve
            self._offline_fallback += fallback
        if fixed:
            self._fixed_reserve += reserve
            self._fixed_fallback += fallback
        station.reserve_w, station.fallback_commit_w = reserve, fallback
        station.fixed, station.counted_offline = fixed, not station.online

    def _forget(self, station: Station) -> None:
        """Take one station's part out of every sum."""
        self._reserve_sum -= station.reserve_w
        self._fallback_sum -= station.fallback_commit_w
        if station.counted_offline:
            self._offline_reserve -= station.reserve_w
            self._offline_fallback -= station.fallback_commit_w
        if station.fixed:
            self._fixed_reserve -= station.reserve_w
            self._fixed_fallback -= station.fallback_commit_w
        station.reserve_w = station.fallback_commit_w = 0.0
        station.fixed = station.counted_offline = False

    def _restate(self, station: Station, now_s: float) -> None:
        """One station's ledger changed: move the sums by its difference."""
        if now_s >= self._cache_until_s:
            self._refresh(now_s)
            return
        self._account(station, now_s)
        change = station.ledger.next_change_s(now_s, self._margin_s)
        if change is not None and change < self._cache_until_s:
            self._cache_until_s = change

    # -- shares ------------------------------------------------------------------

    def set_targets(self, now_s: float, limit_w: float, fallback_limit_w: float) -> None:
        """Split what fixed stations leave of each limit across the online stations.

        Fixed: offline, or online with its live cap no longer assured (refreshes unanswered):
        what they may draw is theirs until they answer, so the others share the rest. A fixed
        online station is still sent its fair share (cuts reach it if it answers again).
        """
        self._refresh(now_s)
        fixed, fixed_fb = self._targets_fixed = self._fixed_reserve, self._fixed_fallback
        self._targets_epoch = self._fixed_epoch
        online = list(self.online())
        demand = self.settings.demand
        if any(s.fixed for s in online):
            fair = allocate(
                max(0.0, limit_w - self._offline_reserve), [s.range(demand, True) for s in online]
            )
            fair_fb = allocate(
                max(0.0, fallback_limit_w - self._offline_fallback), [s.range(demand, False) for s in online]
            )
            for station in online:
                if station.fixed:
                    station.target_w = fair[station.station_id]
                    station.target_fallback_w = fair_fb[station.station_id]
            online = [s for s in online if not s.fixed]
        live = allocate(max(0.0, limit_w - fixed), [s.range(demand, True) for s in online])
        fallback = allocate(max(0.0, fallback_limit_w - fixed_fb), [s.range(demand, False) for s in online])
        for station in online:
            station.target_w = live[station.station_id]
            station.target_fallback_w = fallback[station.station_id]

    def targets_stale(self, now_s: float) -> bool:
        """A fixed station's reserve moved (an offline live cap lapsed, a silent station's
        refresh went overdue or was answered), or a station stopped or started being fixed
        (one back after its live cap lapsed accepted its bound): shares must follow."""
        self._refresh(now_s)
        if self._fixed_epoch != self._targets_epoch:
            return True
        was, was_fb = self._targets_fixed
        return abs(self._fixed_reserve - was) > _EPS_W or abs(self._fixed_fallback - was_fb) > _EPS_W

    # -- moves -------------------------------------------------------------------

    def plan(
        self,
        now_s: float,
        limit_w: float,
        fallback_limit_w: float,
        source: LimitSource,
        force: set[str],
        out: list[Decision],
        only: Iterable[str] | None = None,
    ) -> None:
        """Send what brings stations toward their targets without breaking the invariant."""
        self._refresh(now_s)
        stations = self.stations
        candidates = (
            [s for s in self.online()] if only is None else [stations[i] for i in only if i in stations]
        )
        raises: list[Station] = []
        for station in candidates:
            if not station.online:
                continue
            last = station.ledger.last_sent
            if (
                last is not None
                and last.live_until_s > now_s  # still counted: a lower value adds nothing
                and station.target_w <= last.live_w
                and station.target_fallback_w <= last.fallback_w
            ):
                if (station.target_w, station.target_fallback_w) != (last.live_w, last.fallback_w) or (
                    station.station_id in force
                ):
                    self._send(
                        station, station.target_w, station.target_fallback_w, now_s, source, out, cut=True
                    )
                self.raises_waiting.discard(station.station_id)
            else:
                raises.append(station)
        if not raises:
            self._arm(now_s)
            return
        room = limit_w - self._reserve_sum
        room_fb = fallback_limit_w - self._fallback_sum
        whole_only = bool(self._awaiting)
        settings = self.settings
        raises.sort(key=lambda s: (-s.priority, s.order))
        for station in raises:
            last = station.ledger.last_sent
            reserve, fb_commit = station.reserve_w, station.fallback_commit_w
            assured = station.ledger.live_assured(now_s, settings.margin_s)
            # Values up to what the station may already draw cost nothing; above it, free room.
            live_cap = _floor_tenth(reserve + max(0.0, room))
            fb = station.target_fallback_w
            if fb > fb_commit:  # fallback caps first: they bind whenever the gateway is gone
                fb = min(fb, max(fb_commit, _floor_tenth(fb_commit + max(0.0, room_fb))))
                if not assured:  # then a fallback cap may bind now as well
                    fb = min(fb, max(fb_commit, live_cap))
            live = station.target_w
            rate_limited = last is not None and now_s < station.last_raise_s + settings.raise_interval_s
            if rate_limited:
                live = min(live, max(last.live_w if last is not None else 0.0, reserve))
            if live > reserve and live > live_cap:
                # The whole raise does not fit: give what is free, or hold while cuts are on their way.
                partial = not whole_only and live_cap >= station.min_w and live_cap > reserve
                live = live_cap if partial else _floor_tenth(reserve)
            live_delta = self._delta(station, live, fb, now_s)
            fb_delta = max(0.0, fb - fb_commit)
            changed = last is None or (live, fb) != (last.live_w, last.fallback_w)
            if changed or station.station_id in force:
                if last is not None and live > max(last.live_w, reserve):
                    station.last_raise_s = now_s
                self._send(station, live, fb, now_s, source, out)
                room -= live_delta
                room_fb -= fb_delta
            if (live, fb) != (station.target_w, station.target_fallback_w):
                self.raises_waiting.add(station.station_id)
            else:
                self.raises_waiting.discard(station.station_id)
        self._arm(now_s)

    def refresh_due(self, now_s: float) -> set[str]:
        """Online stations whose live profile must be re-sent now (with those due soon)."""
        settings = self.settings
        horizon = now_s + settings.refresh_batch_s
        return {s.station_id for s in self.online() if s.live_sent_s + settings.refresh_s <= horizon}

    def raise_turns_due(self, now_s: float) -> bool:
        return self._raise_due_s is not None and now_s >= self._raise_due_s

    def worth_replanning(self, now_s: float, limit_w: float) -> bool:
        """After an answer: can a waiting raise go now?"""
        if not self.raises_waiting:
            return False
        if not self._awaiting:
            return True
        self._refresh(now_s)
        room = limit_w - self._reserve_sum
        return any(
            self.stations[i].target_w - self.stations[i].reserve_w <= room + _EPS_W
            for i in self.raises_waiting
            if i in self.stations
        )

    # -- answers -----------------------------------------------------------------

    def accepted(self, station_id: str, seq: int, now_s: float) -> Station | None:
        station = self.stations.get(station_id)
        if station is None:
            return None
        if station.ledger.accepted(seq):
            self._changed.add(station_id)
            station.accepted_seq = max(station.accepted_seq, seq)
            self._unbound.discard(station_id)
            self._restate(station, now_s)
        if not station.ledger.awaiting:
            self._awaiting.discard(station_id)
        return station

    def refused(self, station_id: str, seq: int) -> None:
        station = self.stations.get(station_id)
        if station is None:
            return
        station.ledger.answered(seq)
        if not station.ledger.awaiting:
            self._awaiting.discard(station_id)

    # -- internals ---------------------------------------------------------------

    def _delta(self, station: Station, live_w: float, fallback_w: float, now_s: float) -> float:
        """How much sending (live_w, fallback_w) now adds to the station's reserve.

        A new entry's live cap is valid now, so it counts at once; its fallback cap counts
        now only if the station's live cap is not assured (``StationLedger.reserve_w``).
        """
        reserve = station.reserve_w
        grown = max(live_w, fallback_w if not station.ledger.live_assured(now_s, self._margin_s) else 0.0)
        return max(0.0, grown - reserve)

    def _send(
        self,
        station: Station,
        live_w: float,
        fallback_w: float,
        now_s: float,
        source: LimitSource,
        out: list[Decision],
        cut: bool = False,
    ) -> None:
        self._seq += 1
        until = float(math.floor(now_s + self.settings.live_validity_s))  # validTo has whole seconds
        station.seq = self._seq
        station.live_sent_s = now_s
        last = station.ledger.last_sent
        entry = Profiles(self._seq, live_w, until, fallback_w)
        station.ledger.sent(entry, now_s)
        if last is None or live_w != last.live_w:  # a refresh of the same cap leaves the EV's window running
            station.demand.restart_window(now_s)
        self._awaiting.add(station.station_id)
        self._changed.add(station.station_id)
        self._sent.append((station, entry))
        # The sums move by what the new entry adds (nothing for a cut): O(1), the hot path
        # of a fan-out; the ledger's own reckoning takes over at the next refresh.
        if now_s >= self._cache_until_s:
            self._refresh(now_s)
        elif not cut:
            self._account(station, now_s, station.reserve_w + self._delta(station, live_w, fallback_w, now_s))
        self._cache_until_s = min(self._cache_until_s, until)
        out.append(ApplyStationLimit(station.station_id, live_w, fallback_w, self._seq, source, until))

    def _arm(self, now_s: float) -> None:
        settings = self.settings
        sent = [s.live_sent_s for s in self.online() if s.ledger.last_sent is not None]
        self._next_refresh_s = min(sent) + settings.refresh_s if sent else None
        turns = [
            self.stations[i].last_raise_s + settings.raise_interval_s
            for i in self.raises_waiting
            if i in self.stations and self.stations[i].last_raise_s + settings.raise_interval_s > now_s
        ]
        self._raise_due_s = min(turns) if turns else None


def _floor_tenth(watts: float) -> float:
    return max(0.0, math.floor(watts * 10 + 1e-6) / 10)
