"""Compliance records (gateway.core.compliance): the real core's decisions in, explicit time, no I/O."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.arbiter import Arbiter
from gateway.core.compliance import (
    NOTHING,
    ComplianceRecord,
    ComplianceTracker,
    EntryKind,
    LimitEntry,
    Outcome,
    RecordKind,
    closed_at_restart,
    entry_json,
    record_from_dict,
    record_json,
    stations_by_answer,
    summary,
)
from gateway.core.decisions import (
    ApplyStationLimit,
    ConfirmSetpoint,
    Decision,
    EnforcementChanged,
    LimitChanged,
    PublishTotalPower,
)
from gateway.core.events import (
    DsoLinkLost,
    DsoLinkUp,
    Event,
    MeterSampled,
    ProfileResult,
    SetpointReceived,
    StationConnected,
    StationDisconnected,
    StationReleased,
    Tick,
)
from gateway.core.model import LimitSource, Mode, OcppVersion, ProfileOutcome, Quality
from tests.core.helpers import SETTINGS, T0, new_arbiter, step


class Site:
    """The real arbiter with the tracker beside it, as the shell feeds them; time is explicit."""

    def __init__(self, window_s: float = 900.0) -> None:
        self.arbiter: Arbiter = new_arbiter()
        view = self.arbiter.view()
        self.tracker = ComplianceTracker(view.total_power_w, view.quality, view.enforced, window_s)
        self.written: list[LimitEntry | ComplianceRecord] = []
        self.outcomes: list[Outcome] = []
        self._take(self.tracker.observe([self.arbiter.limit_changed("started")], T0))

    def _take(self, outcome: Outcome) -> Outcome:
        self.written.extend(outcome.writes)
        self.outcomes.append(outcome)
        return outcome

    def feed(self, event: Event, now: float) -> list[Decision]:
        decisions = step(self.arbiter, event, now)
        self._take(self.tracker.observe(decisions, now, event))
        return decisions

    def answer(
        self, decisions: list[Decision], now: float, outcome: ProfileOutcome = ProfileOutcome.ACCEPTED
    ) -> None:
        for d in decisions:
            if isinstance(d, ApplyStationLimit):
                self.feed(ProfileResult(d.station_id, d.seq, outcome), now)

    def connect(self, station_id: str, now: float, draw_w: float | None = None) -> None:
        self.answer(self.feed(StationConnected(station_id, OcppVersion.V16, 22000, 4140), now), now)
        if draw_w is not None:
            self.feed(MeterSampled(station_id, draw_w), now)

    def setpoint(self, value_w: float, now: float) -> list[Decision]:
        return self.feed(SetpointReceived(value_w, peer="scada"), now)

    @property
    def record(self) -> ComplianceRecord:
        record = self.tracker.snapshot()
        assert record is not None
        return record

    def entries(self) -> list[EntryKind]:
        return [w.kind for w in self.written if isinstance(w, LimitEntry)]

    def closed(self) -> list[ComplianceRecord]:
        return [w for w in self.written if isinstance(w, ComplianceRecord)]


def two_stations_drawing(total_w: float = 22000.0) -> Site:
    site = Site()
    site.feed(DsoLinkUp(), T0)
    site.connect("cp1", T0 + 1, total_w / 2)
    site.connect("cp2", T0 + 1, total_w / 2)
    return site


# -- one command, from the first decision to the meters ---------------------------------


def test_a_cut_is_recorded_from_the_command_to_the_meters() -> None:
    site = two_stations_drawing(22000)
    cuts = site.setpoint(10000, T0 + 10)
    opened = site.record
    assert (opened.kind, opened.limit_w, opened.opened_at_s) == (RecordKind.COMMAND, 10000, T0 + 10)
    assert (opened.power_before_w, opened.power_before_quality) == (22000, Quality.GOOD)
    assert opened.enforced_at_s is None and opened.complied_at_s is None  # the old caps are above it
    assert site.outcomes[-1].milestone
    # Per station: the cut's profile went out with the command's batch, unanswered so far.
    assert {s.station_id: (s.share_w, s.seq is not None, s.sent_at_s, s.answer) for s in opened.stations} == {
        "cp1": (5000, True, T0 + 10, None),
        "cp2": (5000, True, T0 + 10, None),
    }

    site.answer(cuts, T0 + 10.5)
    assert site.record.enforced_at_s == T0 + 10.5 and site.record.time_to_enforce_s == 0.5
    assert {s.answer for s in site.record.stations} == {ProfileOutcome.ACCEPTED}
    assert {s.answered_at_s for s in site.record.stations} == {T0 + 10.5}

    site.feed(MeterSampled("cp1", 5000), T0 + 13)  # 16 kW: still above
    assert site.record.complied_at_s is None
    site.feed(MeterSampled("cp2", 5000), T0 + 14)  # 10 kW: at the limit
    assert site.record.complied_at_s == T0 + 14 and site.record.time_to_comply_s == 4.0
    assert site.record.peak_power_w == 22000  # the highest total while open: the one it opened with

    site.setpoint(12000, T0 + 100)  # the next command closes it, final
    [done] = site.closed()
    assert (done.closed_at_s, done.outcome, done.time_to_comply_s) == (T0 + 100, "complied", 4.0)
    assert "next limit change (command)" in (done.close_reason or "")
    assert site.record.opened_at_s == T0 + 100  # and opens its own


def test_a_raise_that_already_fits_is_enforced_and_met_at_once() -> None:
    site = two_stations_drawing(8000)
    site.setpoint(60000, T0 + 10)  # above the initial 50 kW
    record = site.record
    assert record.time_to_enforce_s == 0.0 and record.time_to_comply_s == 0.0
    assert record.power_before_w == 8000


def test_a_total_that_goes_back_above_the_limit_restarts_the_time_to_comply() -> None:
    site = two_stations_drawing(22000)
    site.answer(site.setpoint(10000, T0 + 10), T0 + 10.2)
    site.feed(MeterSampled("cp1", 4000), T0 + 11)
    site.feed(MeterSampled("cp2", 4000), T0 + 12)
    assert site.record.time_to_comply_s == 2.0
    site.feed(MeterSampled("cp2", 7000), T0 + 20)  # 11 kW: above again
    assert site.record.complied_at_s is None
    site.feed(MeterSampled("cp2", 6000), T0 + 30)  # 10 kW: at the limit, for good this time
    assert site.record.time_to_comply_s == 20.0


def test_a_total_with_a_station_that_never_reported_is_no_proof() -> None:
    site = two_stations_drawing(6000)
    site.connect("cp3", T0 + 2)  # connected, never metered: the total's quality is invalid
    site.setpoint(30000, T0 + 10)
    assert site.record.power_before_quality is Quality.INVALID
    assert site.record.complied_at_s is None
    site.feed(MeterSampled("cp3", 1000), T0 + 15)
    assert site.record.complied_at_s == T0 + 15


def test_a_record_closes_when_its_window_ends_not_before() -> None:
    site = Site(window_s=60)
    site.feed(DsoLinkUp(), T0)
    site.setpoint(20000, T0 + 10)
    assert site.tracker.next_deadline() == T0 + 70
    assert site.tracker.tick(T0 + 69.9) is NOTHING
    [closed] = site.tracker.tick(T0 + 70).writes
    assert isinstance(closed, ComplianceRecord)
    assert closed.closed_at_s == T0 + 70 and "window of 60 s ended" in (closed.close_reason or "")
    assert site.tracker.snapshot() is None and site.tracker.next_deadline() is None


def test_an_event_after_the_window_closes_the_record_at_the_window_end() -> None:
    site = Site(window_s=60)
    site.feed(DsoLinkUp(), T0)
    site.setpoint(20000, T0 + 10)
    site.connect("cp1", T0 + 200, 1000)
    [closed] = site.closed()
    assert closed.closed_at_s == T0 + 70  # the meters after it do not count
    assert site.tracker.snapshot() is None


def test_closing_when_the_gateway_stops() -> None:
    site = two_stations_drawing(4000)
    site.setpoint(20000, T0 + 10)
    [closed] = site.tracker.close(T0 + 20, "the gateway stopped").writes
    assert isinstance(closed, ComplianceRecord) and closed.close_reason == "the gateway stopped"
    assert closed.outcome == "complied"
    assert site.tracker.close(T0 + 21, "again") is NOTHING


# -- hold, fallback and their ends ------------------------------------------------------


def test_start_hold_fallback_and_their_ends_are_entries() -> None:
    site = Site()
    assert site.entries() == [EntryKind.START]
    site.feed(DsoLinkUp(), T0)
    site.setpoint(20000, T0 + 1)
    site.feed(DsoLinkLost(), T0 + 10)
    site.feed(DsoLinkUp(), T0 + 20)
    assert site.entries() == [EntryKind.START, EntryKind.HOLD, EntryKind.HOLD_END]
    assert site.closed() == []  # a hold keeps the limit: the command's record stays open
    assert site.record.kind is RecordKind.COMMAND

    site.feed(DsoLinkLost(), T0 + 30)
    site.feed(Tick(), T0 + 30 + SETTINGS.hold_timeout_s)  # the hold ends: fallback
    fallback = [w for w in site.written if isinstance(w, LimitEntry)][-1]
    assert (fallback.kind, fallback.limit_w, fallback.mode) == (EntryKind.FALLBACK, 10000, Mode.FALLBACK)
    assert (fallback.previous_mode, fallback.previous_limit_w, fallback.opens_record) == (
        Mode.HOLD,
        20000,
        True,
    )
    [command] = site.closed()  # the fallback closed the command's record, before its entry
    assert site.written.index(command) < site.written.index(fallback)
    assert (site.record.kind, site.record.limit_w, site.record.source) == (
        RecordKind.FALLBACK,
        10000,
        LimitSource.FALLBACK,
    )

    site.setpoint(15000, T0 + 1000)  # a DSO command lifts the fallback
    assert site.entries()[-1] is EntryKind.FALLBACK_END
    assert [r.kind for r in site.closed()] == [RecordKind.COMMAND, RecordKind.FALLBACK]
    assert site.record.kind is RecordKind.COMMAND


def test_anchors_go_to_the_open_record_of_their_kind_only() -> None:
    site = Site()
    site.setpoint(20000, T0 + 1)
    assert not site.tracker.anchor(7, RecordKind.FALLBACK)
    assert not site.tracker.anchor(None, RecordKind.COMMAND)
    assert site.tracker.anchor(7, RecordKind.COMMAND)
    assert not site.tracker.anchor(8, RecordKind.COMMAND)  # the first anchor stays
    assert site.record.anchor_id == 7


def test_a_refused_setpoint_opens_no_record() -> None:
    site = Site()
    site.setpoint(1.0, T0 + 1)
    assert site.tracker.snapshot() is None and site.entries() == [EntryKind.START]


# -- what went out to each station ------------------------------------------------------


def _apply(station: str, limit_w: float, seq: int) -> ApplyStationLimit:
    return ApplyStationLimit(station, limit_w, limit_w, seq, LimitSource.DSO_SETPOINT)


def _opened(limit_w: float = 10000) -> ComplianceTracker:
    tracker = ComplianceTracker(0.0, Quality.GOOD)
    tracker.observe(
        [ConfirmSetpoint(limit_w), LimitChanged(limit_w, LimitSource.DSO_SETPOINT, Mode.NORMAL, "DSO")], T0
    )
    return tracker


def test_a_refresh_of_an_accepted_share_only_counts() -> None:
    tracker = _opened()
    tracker.observe([_apply("cp1", 5000, 1)], T0 + 1)
    tracker.observe([], T0 + 2, ProfileResult("cp1", 1, ProfileOutcome.ACCEPTED))
    tracker.observe([_apply("cp1", 5000, 2)], T0 + 300)  # the refresh
    tracker.observe([], T0 + 301, ProfileResult("cp1", 2, ProfileOutcome.REJECTED))
    [s] = tracker.snapshot().stations  # type: ignore[union-attr]
    assert (s.seq, s.sent_at_s, s.answer, s.answered_at_s, s.profiles) == (
        1,
        T0 + 1,
        ProfileOutcome.ACCEPTED,
        T0 + 2,
        2,
    )


def test_a_new_share_or_a_retry_of_a_refused_one_replaces_the_profile_shown() -> None:
    tracker = _opened()
    tracker.observe([_apply("cp1", 5000, 1)], T0 + 1)
    tracker.observe([], T0 + 2, ProfileResult("cp1", 1, ProfileOutcome.REJECTED))
    [s] = tracker.snapshot().stations  # type: ignore[union-attr]
    assert (s.answer, s.answered_at_s) == (ProfileOutcome.REJECTED, T0 + 2)
    tracker.observe([_apply("cp1", 5000, 2)], T0 + 3)  # the retry
    tracker.observe([], T0 + 4, ProfileResult("cp1", 1, ProfileOutcome.ACCEPTED))  # a stale answer: ignored
    [s] = tracker.snapshot().stations  # type: ignore[union-attr]
    assert (s.seq, s.answer, s.profiles) == (2, None, 2)
    tracker.observe([], T0 + 5, ProfileResult("cp1", 2, ProfileOutcome.ACCEPTED))
    tracker.observe([_apply("cp1", 7000, 3)], T0 + 6)  # a raise: a new share
    [s] = tracker.snapshot().stations  # type: ignore[union-attr]
    assert (s.share_w, s.seq, s.sent_at_s, s.answer, s.profiles) == (7000, 3, T0 + 6, None, 3)
    assert stations_by_answer(tracker.snapshot().stations) == {"no answer yet": 1}  # type: ignore[union-attr]


def test_the_allocation_keeps_stations_whose_share_did_not_change() -> None:
    site = two_stations_drawing(4000)
    site.setpoint(60000, T0 + 10)  # both already at their max: no profile goes out
    by_id = {s.station_id: s for s in site.record.stations}
    assert {k: (v.share_w, v.seq) for k, v in by_id.items()} == {"cp1": (22000, None), "cp2": (22000, None)}
    assert stations_by_answer(site.record.stations) == {"no profile": 2}


def test_a_released_station_leaves_the_allocation() -> None:
    site = two_stations_drawing(4000)
    site.feed(StationDisconnected("cp2"), T0 + 5)
    site.setpoint(20000, T0 + 10)
    assert "cp2" in {s.station_id for s in site.record.stations}  # offline, still reserved
    site.feed(StationReleased("cp2", "decommissioned"), T0 + 20)
    assert "cp2" not in {s.station_id for s in site.record.stations}


def test_nothing_happens_on_the_hot_path() -> None:
    tracker = _opened()
    assert tracker.observe([], T0 + 1, MeterSampled("cp1", 1.0)) is NOTHING


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        ComplianceTracker(window_s=0)


# -- the time to comply, as a property ---------------------------------------------------

readings = st.lists(
    st.tuples(
        st.floats(0.01, 50.0),  # seconds after the previous reading
        st.floats(0, 30000, allow_nan=False),
        st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.NOT_TOPICAL, Quality.INVALID]),
    ),
    max_size=30,
)


@given(
    before=st.tuples(st.floats(0, 30000), st.sampled_from(list(Quality))),
    limit=st.floats(6000, 20000),
    series=readings,
)
@settings(max_examples=300, deadline=None)
def test_complied_at_is_the_start_of_the_last_run_of_complying_totals(
    before: tuple[float, Quality], limit: float, series: list[tuple[float, float, Quality]]
) -> None:
    tracker = ComplianceTracker(before[0], before[1], window_s=10_000)
    tracker.observe(
        [ConfirmSetpoint(limit), LimitChanged(limit, LimitSource.DSO_SETPOINT, Mode.NORMAL, "DSO")], T0
    )
    judged = [(T0, before[0], before[1])]
    now = T0
    for gap, power, quality in series:
        now += gap
        tracker.observe([PublishTotalPower(power, quality)], now)
        judged.append((now, power, quality))
    [record] = tracker.close(now, "end").writes
    assert isinstance(record, ComplianceRecord)

    def complies(power: float, quality: Quality) -> bool:
        return quality is not Quality.INVALID and power <= limit

    run_start = None
    for at, power, quality in judged:
        if complies(power, quality):
            run_start = at if run_start is None else run_start
        else:
            run_start = None
    assert record.complied_at_s == run_start
    assert (record.outcome == "complied") == (run_start is not None)
    if record.time_to_comply_s is not None:
        assert 0 <= record.time_to_comply_s <= now - T0
    assert record.peak_power_w == max(p for _, p, _ in judged)


# -- the stored form ---------------------------------------------------------------------


def test_a_record_survives_its_json_form_and_a_restart() -> None:
    site = two_stations_drawing(22000)
    site.answer(site.setpoint(10000, T0 + 10), T0 + 10.5)
    site.tracker.anchor(3, RecordKind.COMMAND)
    record = site.record
    text = record_json(record)
    data = json.loads(text)
    assert data["time_to_enforce_s"] == 0.5 and data["outcome"] == "open"
    assert record_from_dict(data) == record
    interrupted = closed_at_restart(record)
    assert interrupted.closed_at_s == record.updated_at_s and "interrupted" in (
        interrupted.close_reason or ""
    )
    assert "complied" not in summary(record) or "not complied" in summary(record)


def test_an_entry_has_a_json_form() -> None:
    entry = LimitEntry(
        EntryKind.HOLD, T0, 20000, Mode.HOLD, LimitSource.HOLD, "DSO link lost", Mode.NORMAL, 20000
    )
    assert json.loads(entry_json(entry)) == {
        "kind": "hold",
        "at_s": T0,
        "limit_w": 20000,
        "mode": "hold",
        "source": "hold",
        "reason": "DSO link lost",
        "previous_mode": "normal",
        "previous_limit_w": 20000,
    }


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    st.text(),
)
def test_any_finite_record_round_trips(limit_w: float, power_w: float | None, reason: str) -> None:
    tracker = ComplianceTracker(power_w, None if power_w is None else Quality.GOOD)
    tracker.observe(
        [ConfirmSetpoint(limit_w), LimitChanged(limit_w, LimitSource.DSO_SETPOINT, Mode.NORMAL, reason)], T0
    )
    tracker.observe([_apply("cp1", 5000.5, 1), EnforcementChanged(False)], T0 + 1)
    record = tracker.snapshot()
    assert record is not None
    assert record_from_dict(json.loads(record_json(record))) == record


@given(
    st.floats(width=64),
    st.floats(width=64),
    st.one_of(st.none(), st.floats(width=64)),
)
def test_the_stored_form_is_strict_json_whatever_the_numbers(
    limit_w: float, share_w: float, power_w: float | None
) -> None:
    """NaN and infinities are written as null (strict JSON for any reader), never as NaN."""
    tracker = ComplianceTracker(power_w, None if power_w is None else Quality.GOOD)
    tracker.observe(
        [ConfirmSetpoint(limit_w), LimitChanged(limit_w, LimitSource.DSO_SETPOINT, Mode.NORMAL, "r")], T0
    )
    tracker.observe([_apply("cp1", share_w, 1)], T0 + 1)
    record = tracker.snapshot()
    assert record is not None

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the stored form")

    data = json.loads(record_json(record), parse_constant=refuse)
    assert data["limit_w"] == (limit_w if math.isfinite(limit_w) else None)
    [station] = data["stations"]
    assert station["share_w"] == (share_w if math.isfinite(share_w) else None)
    assert station["station_id"] == "cp1" and station["seq"] == 1
