"""The shell around ``gateway.core.compliance``: feeds it from the runtime, keeps what it says.

``CoreRuntime`` hands every batch of decisions (with its event and time) to
``ProofRecorder.observe`` and tells it the audit id of each accepted command. The recorder
asks the pure ``ComplianceTracker`` what that means and writes it to the store:

- limit entries (start, hold, fallback and their ends) and closed compliance records are
  chained onto the audit log;
- the open record is kept in ``compliance_open``: soon after a milestone (opened,
  enforced, complying or not any more), other changes within ``flush_s``; never more
  often than every ``MIN_GAP_S`` (a total hovering around the limit makes every meter
  sample a milestone; the record is written at the pace of the store, not of the meters);
- while a fan-out is under way (the runtime's ``busy``: a reallocation due, profiles out
  unanswered), every write waits for its last answer, ``FANOUT_WAIT_S`` at most: the record
  of the previous change and the new one's first form go out together, after the
  fan-out they would otherwise delay.

Writes never happen inside the batch that caused them (only at start and stop): they run
right after it on the event loop, so a DSO's activation confirmation never waits for them. They
are not fsynced one by one (``sync=False``): a power cut may lose the last of them, never
the chain's consistency. A store that fails loses them, counted in
``ocpp809_store_errors_total`` and logged once per failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.core.arbiter import SiteView
from gateway.core.compliance import (
    RECORD_WINDOW_S,
    ComplianceRecord,
    ComplianceTracker,
    LimitEntry,
    Outcome,
    RecordKind,
    closed_at_restart,
    entry_json,
    record_json,
    summary,
)
from gateway.core.decisions import Decision
from gateway.core.events import Event
from gateway.errors import StoreError
from gateway.store import COMPLIANCE_KIND, ENTRY_PEER, AuditRow, Store

log = logging.getLogger(__name__)

FLUSH_S = 5.0  # a change of the open record reaches the store at most this late
MIN_GAP_S = 0.5  # ... and no sooner than this after the last write (entries and closed records: at once)
# While a fan-out is under way writes wait for its last answer, this long at most: a 5,000-
# station fan-out is answered in ~0.5 s (bench/README.md), and what waits is lost if the
# process dies meanwhile (a record written at once survives a crash, only not a power cut).
FANOUT_WAIT_S = 1.0


class ProofRecorder:
    def __init__(
        self,
        store: Store,
        view: SiteView,
        registry: CollectorRegistry,
        clock: Callable[[], float],
        on_store_error: Callable[[], None],
        window_s: float = RECORD_WINDOW_S,
        flush_s: float = FLUSH_S,
        on_command_closed: Callable[[float | None], None] | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.flush_s = flush_s
        self._on_store_error = on_store_error
        # A DSO command's record closed: its time to comply (None: it did not comply).
        self._on_command_closed = on_command_closed
        self.tracker = ComplianceTracker(view.total_power_w, view.quality, view.enforced, window_s)
        self._queue: list[LimitEntry | ComplianceRecord] = []
        self._dirty = False  # the open record changed since it was last kept
        self._flush_handle: asyncio.Handle | None = None
        self._flush_due_s: float | None = None
        self._last_flush_s = float("-inf")  # loop time of the last write of the open record
        self._pending_since_s: float | None = None  # loop time of the oldest change not written
        # A fan-out is under way (the runtime knows): big writes wait for it, FANOUT_WAIT_S at most.
        self._busy = busy
        self._deferred = False  # the flush due was put off for a fan-out
        self._window_timer: asyncio.TimerHandle | None = None
        self._window_s: float | None = None
        self._fault_logged: str | None = None
        self.time_to_comply = Histogram(
            "ocpp809_time_to_comply_seconds",
            "From a DSO command (or the fallback) to the measured site total at or below the limit for good",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 900),
            registry=registry,
        )
        self.records = Counter(
            "ocpp809_compliance_records",
            "Compliance records closed, by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("complied", "not_complied"):
            self.records.labels(outcome)

    # -- fed by the runtime ------------------------------------------------------

    def start(self, announced: Sequence[Decision], now_s: float) -> None:
        """Close a record that a gateway left open when it stopped without closing it, and
        note the limit the gateway starts with (``announced``); both written at once."""
        try:
            left = self.store.load_open_record()
        except StoreError as exc:
            self._store_failed("open compliance record not read", exc)
            left = None
        if left is not None:
            record = closed_at_restart(left)
            log.warning("compliance record left open by the last run closed: %s", summary(record))
            self._queue.append(record)
        self._take(self.tracker.observe(announced, now_s), schedule=False)
        self.flush()

    def observe(self, event: Event | None, decisions: Sequence[Decision], now_s: float) -> None:
        self._take(self.tracker.observe(decisions, now_s, event))
        if self._deferred and self._flush_handle is not None and not self._busy():
            self._schedule(bool(self._queue), True)  # the fan-out is over (or never started)

    def command_audited(self, audit_id: int | None) -> None:
        """The accepted command whose batch was just observed was audited as ``audit_id``."""
        if self.tracker.anchor(audit_id, RecordKind.COMMAND):
            self._dirty = True

    def close(self) -> None:
        """The gateway stops: close the open record and write everything now."""
        self._cancel_timers()
        self._take(self.tracker.close(self.clock(), "the gateway stopped"), schedule=False)
        self.flush()

    # -- internals ---------------------------------------------------------------

    def _take(self, outcome: Outcome, schedule: bool = True) -> None:
        if outcome.writes:
            self._queue.extend(outcome.writes)
        self._dirty |= outcome.changed
        if self._pending_since_s is None and (outcome.writes or outcome.changed):
            self._pending_since_s = _loop_time()
        if not (outcome.writes or outcome.milestone) and self._flush_handle is not None:
            return  # a plain change (an answer): the flush already due is at least as soon
        if schedule and (outcome.writes or outcome.changed):
            self._schedule(bool(outcome.writes), outcome.milestone)
            self._arm_window()

    def _schedule(self, writes: bool, milestone: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): write at once
            self.flush()
            return
        now = loop.time()
        # A fallback entry is written at once all the same: the record it opens is anchored
        # to it when the entry is written (rare: the link stayed down for hold_timeout_s).
        deferred = self._busy() and not any(isinstance(i, LimitEntry) and i.opens_record for i in self._queue)
        if deferred:
            # A fan-out is under way: writing a record of every station now would hold its
            # profiles back (~50 ms at 5,000 stations, bench/README.md). The writes wait for
            # its last answer, and a write already due waits with them: no change waits
            # longer than FANOUT_WAIT_S.
            since = now if self._pending_since_s is None else self._pending_since_s
            due = max(now, since + min(self.flush_s, FANOUT_WAIT_S))
        elif writes:
            due = now
        elif milestone:
            due = max(now, self._last_flush_s + MIN_GAP_S)
        else:
            due = max(now + self.flush_s, self._last_flush_s + MIN_GAP_S)
        if self._flush_handle is not None:
            # The sooner write stands, unless a fan-out puts it off (it waits with the rest).
            if not deferred and self._flush_due_s is not None and self._flush_due_s <= due:
                return
            self._flush_handle.cancel()
        self._flush_due_s, self._deferred = due, deferred
        if due <= now:
            self._flush_handle = loop.call_soon(self.flush)
        else:
            self._flush_handle = loop.call_at(due, self.flush)

    def _arm_window(self) -> None:
        deadline = self.tracker.next_deadline()
        if deadline == self._window_s:
            return
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        self._window_s = deadline
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._window_timer = loop.call_later(max(0.0, deadline - self.clock()), self._on_window_end)

    def _on_window_end(self) -> None:
        self._window_timer, self._window_s = None, None
        self._take(self.tracker.tick(self.clock()))
        self._arm_window()

    def _cancel_timers(self) -> None:
        for handle in (self._flush_handle, self._window_timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._flush_due_s = self._window_timer = self._window_s = None

    def flush(self) -> None:
        """Write everything pending now (the timers do it otherwise)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_handle = self._flush_due_s = None
        queue, self._queue = self._queue, []
        self._pending_since_s = None
        pending_anchor: tuple[float, int] | None = None  # (at_s, id) of a fallback entry just written
        try:
            for item in queue:
                if isinstance(item, LimitEntry):
                    entry_id = self.store.append_entry(_entry_row(item), entry_json(item), sync=False)
                    if item.opens_record:
                        pending_anchor = (item.at_s, entry_id)
                        if self.tracker.anchor(entry_id, RecordKind.FALLBACK):
                            self._dirty = True
                    continue
                record = item
                if (
                    pending_anchor is not None
                    and record.anchor_id is None
                    and record.kind is RecordKind.FALLBACK
                    and record.opened_at_s == pending_anchor[0]
                ):
                    # The fallback record closed before its entry was written: anchor it here.
                    record = _anchored(record, pending_anchor[1])
                self.store.close_record(_record_row(record), record_json(record))
                self._count(record)
            current = self.tracker.snapshot()
            if self._dirty and current is not None:
                self.store.save_open_record(record_json(current), current.updated_at_s)
                self._last_flush_s = _loop_time()
            self._dirty = False
        except StoreError as exc:
            self._dirty = False
            self._store_failed("compliance record or limit entry not stored", exc)

    def _count(self, record: ComplianceRecord) -> None:
        self.records.labels(record.outcome).inc()
        if record.time_to_comply_s is not None:
            self.time_to_comply.observe(record.time_to_comply_s)
        log.info("compliance record closed (%s): %s", record.close_reason, summary(record))
        if record.kind is RecordKind.COMMAND and self._on_command_closed is not None:
            self._on_command_closed(record.time_to_comply_s)

    def _store_failed(self, what: str, exc: StoreError) -> None:
        self._on_store_error()
        failure = self.store.failure
        if failure is None or failure != self._fault_logged:  # a lasting fault is logged once
            self._fault_logged = failure
            log.error("%s: %s", what, exc)


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return float("-inf")


def _anchored(record: ComplianceRecord, anchor_id: int) -> ComplianceRecord:
    return replace(record, anchor_id=anchor_id)


def _entry_row(entry: LimitEntry) -> AuditRow:
    return AuditRow(
        entry.at_s, ENTRY_PEER, entry.kind.value, entry.limit_w, None, True, entry.mode.value, entry.reason
    )


def _record_row(record: ComplianceRecord) -> AuditRow:
    return AuditRow(
        record.opened_at_s,
        ENTRY_PEER,
        COMPLIANCE_KIND,
        record.limit_w,
        None,
        record.outcome == "complied",
        record.outcome,
        summary(record),
    )
