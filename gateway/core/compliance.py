"""Proof of execution: what the gateway did about each limit change, and how fast. Pure.

Decisions and events in, with the time passed in; entries and records out. No I/O: the
shell (``gateway.proof``) feeds ``ComplianceTracker`` from the runtime and writes what it
hands back to the store.

**Records.** A *compliance record* opens when the limit in force changes for a reason the
grid operator cares about, and follows the site until it closes:

- an accepted DSO command (``RecordKind.COMMAND``, beside the command's audit row);
- the fallback limit taking over when the link stayed down (``RecordKind.FALLBACK``).

It keeps the limit and why; the measured site power when it opened; per station the share
(the allocation: every station's latest live and fallback share), when a profile carrying
it went out (the ``ApplyStationLimit`` decision time: the adapter sends at once), the answer
and when it came (``ProfileResult``); when the commitments first fitted the new limit
(``AllStationsEnforced``, or the core already enforced at the end of the batch that opened
the record: nothing had to move); and the *time to comply*.

**Time to comply.** The measured total (``PublishTotalPower``) *complies* while it is at
or below the record's limit and its quality is not ``invalid`` (a connected station that
never reported, or whose reading was refused: the total is then not a measurement of the
site). ``complied_at_s`` is the start of the current run of complying totals: the first
time the total was at or below the limit *and stayed there until the record closed*. A
total above the limit clears it; the next complying total starts a new run. While the
record is open the value is provisional. A total that already complied when the record
opened gives a time to comply of 0.

**Closing.** A record closes when the next one opens (a new command, fallback), after
``window_s`` (default 15 min), or when the gateway stops. Only a closed record is final.

**Entries.** Changes of the limit in force that open no record are noted as entries:
``start`` (the limit the gateway started with), ``hold`` (link lost, the last setpoint
held), ``hold_end`` (link back, or a command during the hold), ``fallback`` (which also
opens a fallback record), ``fallback_end`` (a DSO command lifts the fallback), and
``limit_change`` for anything else. A hold leaves the open record open: the limit did not
change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from gateway.core.decisions import (
    AllStationsEnforced,
    ApplyStationLimit,
    ConfirmSetpoint,
    Decision,
    EnforcementChanged,
    LimitChanged,
    PublishTotalPower,
    StationReleaseRefused,
)
from gateway.core.events import Event, ProfileResult, StationReleased
from gateway.core.model import LimitSource, Mode, ProfileOutcome, Quality

RECORD_WINDOW_S = 900.0  # a record closes at the latest this long after it opened


class RecordKind(StrEnum):
    COMMAND = "command"  # an accepted DSO setpoint
    FALLBACK = "fallback"  # the fallback limit took over


class EntryKind(StrEnum):
    START = "start"
    HOLD = "hold"
    HOLD_END = "hold_end"
    FALLBACK = "fallback"
    FALLBACK_END = "fallback_end"
    LIMIT_CHANGE = "limit_change"


@dataclass(frozen=True, slots=True)
class LimitEntry:
    """A change of the limit in force, noted in the audit log (not a DSO command)."""

    kind: EntryKind
    at_s: float
    limit_w: float
    mode: Mode
    source: LimitSource
    reason: str
    previous_mode: Mode | None = None
    previous_limit_w: float | None = None
    opens_record: bool = False  # the record opened with it is anchored to this entry


@dataclass(frozen=True, slots=True)
class StationDelivery:
    """One station in a record: its share, and the profile that carried it during the record.

    ``seq`` is None when no profile went out to it while the record was open (its share did
    not change). A profile that repeats an Accepted share (a refresh) only counts in
    ``profiles``; a new share, or a repeat of one not yet Accepted, replaces the one shown.
    """

    station_id: str
    share_w: float
    fallback_w: float
    seq: int | None = None
    sent_at_s: float | None = None
    answer: ProfileOutcome | None = None
    answered_at_s: float | None = None
    profiles: int = 0


@dataclass(frozen=True, slots=True)
class ComplianceRecord:
    kind: RecordKind
    anchor_id: int | None  # audit id of the command row (command) or of the fallback entry
    opened_at_s: float
    limit_w: float
    mode: Mode
    source: LimitSource
    reason: str
    power_before_w: float | None  # the measured total when the record opened
    power_before_quality: Quality | None
    enforced_at_s: float | None = None  # the commitments first fitted the limit
    complied_at_s: float | None = None  # start of the run of complying totals (see the module doc)
    power_w: float | None = None  # the last measured total while the record was open
    power_quality: Quality | None = None
    power_at_s: float | None = None  # when the record last took a total in
    peak_power_w: float | None = None  # the highest total while it was open (the one it opened with included)
    stations: tuple[StationDelivery, ...] = ()
    updated_at_s: float = 0.0  # the last change the record saw
    closed_at_s: float | None = None
    close_reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.closed_at_s is not None

    @property
    def time_to_enforce_s(self) -> float | None:
        return None if self.enforced_at_s is None else self.enforced_at_s - self.opened_at_s

    @property
    def time_to_comply_s(self) -> float | None:
        return None if self.complied_at_s is None else self.complied_at_s - self.opened_at_s

    @property
    def outcome(self) -> str:
        """``complied``, ``not_complied`` (closed above the limit or unmeasured), or ``open``."""
        if not self.closed:
            return "open"
        return "complied" if self.complied_at_s is not None else "not_complied"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call produced: entries and closed records to append, in this order, and
    whether the open record changed (``milestone``: opened, enforced, complying or not any
    more: worth storing at once)."""

    writes: tuple[LimitEntry | ComplianceRecord, ...] = ()
    changed: bool = False
    milestone: bool = False


NOTHING = Outcome()
_CHANGED = Outcome(changed=True)


@dataclass(slots=True)
class _Delivery:
    share: tuple[float, float]
    seq: int | None = None
    sent_at_s: float | None = None
    answer: ProfileOutcome | None = None
    answered_at_s: float | None = None
    profiles: int = 0
    view: StationDelivery | None = None  # as last shown in a record; None once it changes


@dataclass(slots=True)
class _Open:
    kind: RecordKind
    opened_at_s: float
    limit_w: float
    mode: Mode
    source: LimitSource
    reason: str
    power_before: tuple[float, Quality] | None
    anchor_id: int | None = None
    enforced_at_s: float | None = None
    complied_at_s: float | None = None
    power_at_s: float | None = None
    peak_power_w: float | None = None
    updated_at_s: float = 0.0
    saw_all_enforced: bool = False
    deliveries: dict[str, _Delivery] = field(default_factory=dict)


def _complies(power: tuple[float, Quality] | None, limit_w: float) -> bool:
    return power is not None and power[1] is not Quality.INVALID and power[0] <= limit_w


class ComplianceTracker:
    """Follows the limit in force and keeps at most one open record (see the module doc).

    Seed it with the site as the core sees it (total, its quality, whether the commitments
    fit); then feed every batch of decisions with the event that caused it and its time.
    """

    def __init__(
        self,
        power_w: float | None = None,
        quality: Quality | None = None,
        enforced: bool = True,
        window_s: float = RECORD_WINDOW_S,
    ) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._power: tuple[float, Quality] | None = (
            None if power_w is None or quality is None else (power_w, quality)
        )
        self._enforced = enforced
        self._limit: tuple[float, Mode] | None = None  # the last LimitChanged seen
        self._shares: dict[str, tuple[float, float]] = {}
        # Records of 5,000 stations are built at every milestone of a fan-out: each station's
        # part is kept as last shown until it changes, and the order until the stations do.
        self._share_views: dict[str, StationDelivery] = {}
        self._order: list[str] | None = None
        self._open: _Open | None = None

    # -- reading ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def next_deadline(self) -> float | None:
        """When the open record's window ends (the shell comes back with ``tick``)."""
        return None if self._open is None else self._open.opened_at_s + self.window_s

    def snapshot(self) -> ComplianceRecord | None:
        """The open record as it stands (provisional), or None."""
        rec = self._open
        return None if rec is None else self._record(rec)

    # -- feeding ---------------------------------------------------------------

    def observe(self, decisions: Sequence[Decision], now_s: float, event: Event | None = None) -> Outcome:
        """One batch of the core's decisions, and the event that caused it (if any)."""
        rec = self._open
        if (
            not decisions
            and type(event) is ProfileResult
            and (rec is None or now_s < rec.opened_at_s + self.window_s)
        ):
            # The hot path of a fan-out: an answer that decided nothing (no enforcement change).
            if rec is None or not self._answered(rec, event, now_s):
                return NOTHING
            rec.updated_at_s = now_s
            return _CHANGED
        if (
            not decisions
            and not isinstance(event, ProfileResult | StationReleased)
            and (rec is None or now_s < rec.opened_at_s + self.window_s)
        ):
            return NOTHING  # the hot path: a meter sample that changed nothing
        writes: list[LimitEntry | ComplianceRecord] = []
        changed = milestone = False
        closed = self._close_if_due(now_s)
        if closed is not None:
            writes.append(closed)
        rec = self._open
        if isinstance(event, ProfileResult) and rec is not None:
            changed = self._answered(rec, event, now_s)
        elif isinstance(event, StationReleased) and not any(
            isinstance(x, StationReleaseRefused) for x in decisions
        ):
            self._shares.pop(event.station_id, None)
            self._share_views.pop(event.station_id, None)
            self._order = None
            if rec is not None:
                rec.deliveries.pop(event.station_id, None)
            changed = rec is not None
        confirmed = False
        for decision in decisions:
            if type(decision) is ApplyStationLimit:  # a fan-out: thousands in one batch
                changed |= self._on_apply(decision, now_s)
                continue
            match decision:
                case ConfirmSetpoint():
                    confirmed = True
                case LimitChanged():
                    opened = self._on_limit(decision, confirmed, now_s, writes)
                    changed |= opened
                    milestone |= opened
                case EnforcementChanged():
                    self._enforced = decision.enforced
                case AllStationsEnforced():
                    if self._open is not None:
                        self._open.saw_all_enforced = True
                case PublishTotalPower():
                    self._power = (decision.power_w, decision.quality)
                    if self._open is not None:
                        changed = True
                        milestone |= self._measure(self._open, now_s)
                case _:
                    pass
        rec = self._open
        if rec is not None and rec.enforced_at_s is None and (rec.saw_all_enforced or self._enforced):
            rec.enforced_at_s = now_s
            changed = milestone = True
        if rec is not None and changed:
            rec.updated_at_s = now_s
        return Outcome(tuple(writes), changed, milestone) if writes or changed else NOTHING

    def tick(self, now_s: float) -> Outcome:
        """Close the open record if its window has ended."""
        closed = self._close_if_due(now_s)
        return NOTHING if closed is None else Outcome((closed,))

    def close(self, now_s: float, reason: str) -> Outcome:
        """Close the open record now (the gateway stops)."""
        rec = self._open
        if rec is None:
            return NOTHING
        self._open = None
        return Outcome((self._record(rec, now_s, reason),))

    def anchor(self, entry_id: int | None, kind: RecordKind) -> bool:
        """The open record's anchor row (its command's audit row, its fallback entry) got ``entry_id``."""
        rec = self._open
        if rec is None or rec.kind is not kind or rec.anchor_id is not None or entry_id is None:
            return False
        rec.anchor_id = entry_id
        return True

    # -- rules -----------------------------------------------------------------

    def _close_if_due(self, now_s: float) -> ComplianceRecord | None:
        rec = self._open
        if rec is None:
            return None
        end = rec.opened_at_s + self.window_s
        if now_s < end:
            return None
        self._open = None
        return self._record(rec, end, f"its window of {self.window_s:g} s ended")

    def _on_limit(
        self, d: LimitChanged, confirmed: bool, now_s: float, writes: list[LimitEntry | ComplianceRecord]
    ) -> bool:
        """Note the change; True when it opened a record."""
        previous, self._limit = self._limit, (d.limit_w, d.mode)
        prev_w, prev_mode = previous if previous is not None else (None, None)

        def entry(kind: EntryKind, opens_record: bool = False) -> None:
            writes.append(
                LimitEntry(
                    kind, now_s, d.limit_w, d.mode, d.source, d.reason, prev_mode, prev_w, opens_record
                )
            )

        if confirmed:
            if prev_mode is Mode.FALLBACK:
                entry(EntryKind.FALLBACK_END)
            elif prev_mode is Mode.HOLD:
                entry(EntryKind.HOLD_END)
            self._start(RecordKind.COMMAND, d, now_s, writes)
            return True
        if previous is None:
            entry(EntryKind.START)
        elif d.mode is Mode.HOLD:
            entry(EntryKind.HOLD)
        elif d.mode is Mode.FALLBACK and prev_mode is not Mode.FALLBACK:
            entry(EntryKind.FALLBACK, opens_record=True)
            self._start(RecordKind.FALLBACK, d, now_s, writes)
            return True
        elif prev_mode is Mode.HOLD and d.mode is Mode.NORMAL:
            entry(EntryKind.HOLD_END)
        else:
            entry(EntryKind.LIMIT_CHANGE)
        return False

    def _start(
        self, kind: RecordKind, d: LimitChanged, now_s: float, writes: list[LimitEntry | ComplianceRecord]
    ) -> None:
        if self._open is not None:
            writes.insert(
                0, self._record(self._open, now_s, f"the next limit change ({kind.value}) opened a record")
            )
        rec = _Open(kind, now_s, d.limit_w, d.mode, d.source, d.reason, self._power, updated_at_s=now_s)
        self._open = rec
        self._measure(rec, now_s)

    @staticmethod
    def _answered(rec: _Open, event: ProfileResult, now_s: float) -> bool:
        """The first answer to the profile that carried a station's share in ``rec``."""
        d = rec.deliveries.get(event.station_id)
        if d is None or d.seq != event.seq or d.answer is not None:
            return False
        d.answer, d.answered_at_s, d.view = event.outcome, now_s, None
        return True

    def _on_apply(self, d: ApplyStationLimit, now_s: float) -> bool:
        share = (d.limit_w, d.fallback_w)
        if self._shares.get(d.station_id) != share:
            if d.station_id not in self._shares:
                self._order = None
            self._shares[d.station_id] = share
            self._share_views.pop(d.station_id, None)
        rec = self._open
        if rec is None:
            return False
        old = rec.deliveries.get(d.station_id)
        profiles = 1 if old is None else old.profiles + 1
        if old is None or old.share != share or old.answer is not ProfileOutcome.ACCEPTED:
            rec.deliveries[d.station_id] = _Delivery(share, d.seq, now_s, None, None, profiles)
        else:
            old.profiles, old.view = profiles, None
        return True

    def _measure(self, rec: _Open, now_s: float) -> bool:
        """Judge the current total against the record; True when it started or broke a run."""
        power = self._power
        if power is not None:
            rec.power_at_s = now_s
            if rec.peak_power_w is None or power[0] > rec.peak_power_w:
                rec.peak_power_w = power[0]
        complies = _complies(power, rec.limit_w)
        if complies and rec.complied_at_s is None:
            rec.complied_at_s = now_s
            return True
        if not complies and rec.complied_at_s is not None:
            rec.complied_at_s = None
            return True
        return False

    def _record(
        self, rec: _Open, closed_at_s: float | None = None, reason: str | None = None
    ) -> ComplianceRecord:
        power, before = self._power, rec.power_before
        if self._order is None:  # every delivery has a share (``_on_apply`` sets both)
            self._order = sorted(self._shares)
        stations = []
        views, deliveries = self._share_views, rec.deliveries
        for station_id in self._order:
            d = deliveries.get(station_id)
            if d is None:
                view = views.get(station_id)
                if view is None:
                    view = views[station_id] = StationDelivery(station_id, *self._shares[station_id])
            else:
                view = d.view
                if view is None:
                    view = d.view = StationDelivery(
                        station_id, *d.share, d.seq, d.sent_at_s, d.answer, d.answered_at_s, d.profiles
                    )
            stations.append(view)
        return ComplianceRecord(
            kind=rec.kind,
            anchor_id=rec.anchor_id,
            opened_at_s=rec.opened_at_s,
            limit_w=rec.limit_w,
            mode=rec.mode,
            source=rec.source,
            reason=rec.reason,
            power_before_w=None if before is None else before[0],
            power_before_quality=None if before is None else before[1],
            enforced_at_s=rec.enforced_at_s,
            complied_at_s=rec.complied_at_s,
            power_w=None if power is None or rec.power_at_s is None else power[0],
            power_quality=None if power is None or rec.power_at_s is None else power[1],
            power_at_s=rec.power_at_s,
            peak_power_w=rec.peak_power_w,
            stations=tuple(stations),
            updated_at_s=rec.updated_at_s if closed_at_s is None else max(rec.updated_at_s, closed_at_s),
            closed_at_s=closed_at_s,
            close_reason=reason,
        )


# -- the stored form -------------------------------------------------------------------
#
# Records and entries are kept as compact JSON objects (a record's and an entry's keys
# sorted, each station's in ``StationDelivery``'s field order; a non-finite number is
# written as null), so ``ocpp809 audit`` and other tools can read them without this code.
# orjson writes the stations straight from their dataclasses: a 5,000-station record is
# written at each milestone of a fan-out, on the event loop (json with per-station dicts
# took ~40 ms of it, orjson ~7-10 ms).

_JSON_OPTIONS = orjson.OPT_SORT_KEYS


def record_json(record: ComplianceRecord) -> str:
    """The stored JSON text of a record (read back with ``record_from_dict``)."""
    return orjson.dumps(
        {
            "kind": record.kind,
            "anchor_id": record.anchor_id,
            "opened_at_s": record.opened_at_s,
            "limit_w": record.limit_w,
            "mode": record.mode,
            "source": record.source,
            "reason": record.reason,
            "power_before_w": record.power_before_w,
            "power_before_quality": record.power_before_quality,
            "enforced_at_s": record.enforced_at_s,
            "time_to_enforce_s": record.time_to_enforce_s,
            "complied_at_s": record.complied_at_s,
            "time_to_comply_s": record.time_to_comply_s,
            "power_w": record.power_w,
            "power_quality": record.power_quality,
            "power_at_s": record.power_at_s,
            "peak_power_w": record.peak_power_w,
            "stations": record.stations,
            "updated_at_s": record.updated_at_s,
            "closed_at_s": record.closed_at_s,
            "close_reason": record.close_reason,
            "outcome": record.outcome,
        },
        option=_JSON_OPTIONS,
    ).decode()


def record_to_dict(record: ComplianceRecord) -> dict[str, Any]:
    """The record as its stored form reads (plain JSON values)."""
    data: dict[str, Any] = orjson.loads(record_json(record))
    return data


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _inf(value: Any) -> float:
    return math.inf if value is None else float(value)


def record_from_dict(data: dict[str, Any]) -> ComplianceRecord:
    """The record ``record_json`` wrote (parsed); ValueError/KeyError/TypeError if it is not one."""

    def quality(value: Any) -> Quality | None:
        return None if value is None else Quality(value)

    stations = tuple(
        StationDelivery(
            str(s["station_id"]),
            _inf(s["share_w"]),
            _inf(s["fallback_w"]),
            None if s.get("seq") is None else int(s["seq"]),
            _opt_float(s.get("sent_at_s")),
            None if s.get("answer") is None else ProfileOutcome(s["answer"]),
            _opt_float(s.get("answered_at_s")),
            int(s.get("profiles", 0)),
        )
        for s in data.get("stations", [])
    )
    return ComplianceRecord(
        kind=RecordKind(data["kind"]),
        anchor_id=None if data.get("anchor_id") is None else int(data["anchor_id"]),
        opened_at_s=float(data["opened_at_s"]),
        limit_w=_inf(data["limit_w"]),
        mode=Mode(data["mode"]),
        source=LimitSource(data["source"]),
        reason=str(data["reason"]),
        power_before_w=_opt_float(data.get("power_before_w")),
        power_before_quality=quality(data.get("power_before_quality")),
        enforced_at_s=_opt_float(data.get("enforced_at_s")),
        complied_at_s=_opt_float(data.get("complied_at_s")),
        power_w=_opt_float(data.get("power_w")),
        power_quality=quality(data.get("power_quality")),
        power_at_s=_opt_float(data.get("power_at_s")),
        peak_power_w=_opt_float(data.get("peak_power_w")),
        stations=stations,
        updated_at_s=float(data.get("updated_at_s", data["opened_at_s"])),
        closed_at_s=_opt_float(data.get("closed_at_s")),
        close_reason=data.get("close_reason"),
    )


def entry_json(entry: LimitEntry) -> str:
    """The stored JSON text of an entry."""
    return orjson.dumps(
        {
            "kind": entry.kind,
            "at_s": entry.at_s,
            "limit_w": entry.limit_w,
            "mode": entry.mode,
            "source": entry.source,
            "reason": entry.reason,
            "previous_mode": entry.previous_mode,
            "previous_limit_w": entry.previous_limit_w,
        },
        option=_JSON_OPTIONS,
    ).decode()


def closed_at_restart(record: ComplianceRecord) -> ComplianceRecord:
    """A record left open by a gateway that stopped without closing it (a crash, a power
    cut): closed at its last stored change, judged on what was stored."""
    return replace(
        record,
        closed_at_s=record.updated_at_s,
        close_reason="interrupted: the gateway stopped without closing it (closed at its last stored change)",
    )


def summary(record: ComplianceRecord) -> str:
    """One line in words: the limit, how fast it was enforced and met, from what."""

    def secs(value: float | None, what: str) -> str:
        return f"not {what}" if value is None else f"{what} after {value:.2f} s"

    before = "unmeasured" if record.power_before_w is None else f"{record.power_before_w:g} W"
    state = "open, provisional" if not record.closed else record.outcome.replace("_", " ")
    return (
        f"{record.kind.value} limit {record.limit_w:g} W: {secs(record.time_to_enforce_s, 'enforced')},"
        f" {secs(record.time_to_comply_s, 'complied')} (site drew {before} before; {state})"
    )


def stations_by_answer(stations: Iterable[StationDelivery]) -> dict[str, int]:
    """How many stations got each answer to the profile that carried their share."""
    counts: dict[str, int] = {}
    for s in stations:
        key = "no profile" if s.seq is None else ("no answer yet" if s.answer is None else s.answer.value)
        counts[key] = counts.get(key, 0) + 1
    return counts
