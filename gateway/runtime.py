"""The imperative shell around the arbiter: owns the clock, the store and the deadline.

Adapters talk to the core only through ``CoreRuntime`` on the asyncio loop:
``submit(event)`` for facts, ``submit_setpoint(event)`` for DSO commands (stored before
confirmed), ``view()`` for interrogation, ``add_listener()`` for decisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.core.arbiter import Arbiter, SiteView
from gateway.core.decisions import (
    ConfirmSetpoint,
    Decision,
    LimitChanged,
    MeterRefused,
    RejectSetpoint,
    StationReleaseRefused,
    TimeToComply,
)
from gateway.core.durable import DurableLimit
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
from gateway.core.ledger import Profiles
from gateway.core.model import Mode, OcppVersion, ProfileOutcome, RejectReason
from gateway.errors import StoreError
from gateway.metrics import CoreMetrics
from gateway.proof import ProofRecorder
from gateway.store import AuditRow, Store

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Decision]], None]
Clock = Callable[[], float]

_MASTER_SEEN_JOB = "store-master-seen"
# While a master is connected its presence is stored this often (plus at every link up and
# down), so a restart counts the downtime toward the hold: after a crash the resumed hold
# ends at most this much early, never late. Two fsyncs per refresh (the checkpoint's).
MASTER_SEEN_INTERVAL_S = 5.0
# Ledgers changed only by answers (which can only lower a commitment) are stored this long
# after the first such change: a fan-out's thousands of answers cost one write, not one each.
COMMITMENTS_FLUSH_S = 1.0


def _fields(decision: str, **fields: object) -> dict[str, object]:
    """A decision log line's fields of its own in JSON logs (``--log-format json``): what
    kind of decision (``decision``) and whom it concerns, beside the message."""
    return {"decision": decision, **fields}


@dataclass(frozen=True, slots=True)
class SetpointOutcome:
    accepted: bool
    reason: RejectReason | None = None
    detail: str = ""


class CoreRuntime:
    def __init__(
        self,
        arbiter: Arbiter,
        store: Store,
        metrics: CoreMetrics,
        scheduler: AsyncIOScheduler,
        clock: Clock = time.time,
        start_reason: str | None = None,
    ) -> None:
        self.arbiter = arbiter
        self.store = store
        self.metrics = metrics
        self.scheduler = scheduler
        self.clock = clock
        self.start_reason = start_reason  # how the limit came about (resume, missing store, ...)
        self._listeners: list[Listener] = []
        self._stations_by_version: dict[str, str] = {}
        self._armed_s: float | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._raises_waiting = 0  # as last logged
        self._link_stored = arbiter.link_up  # the link state whose last-seen time the store has
        self._store_fault_logged: str | None = None
        self._stored: DurableLimit | None = None  # what the last successful save_limit wrote
        self._commit_flush: asyncio.TimerHandle | None = None
        self._gauges_due = False  # the fleet gauges wait for the end of the loop's turn
        self._profile_results = {o: metrics.profile_results.labels(o.value) for o in ProfileOutcome}
        self._held: list[list[Decision]] = []  # batches waiting for their ledgers to be on disk
        self._closed = False
        # Proof of execution (issue 12): compliance records and limit entries, fed from here.
        self._time_to_comply: tuple[float | None, bool] = (None, False)  # (seconds, any command closed)
        self.proof = ProofRecorder(
            store,
            arbiter.view(),
            metrics.registry,
            clock,
            metrics.store_errors.inc,
            on_command_closed=self._command_closed,
            busy=self._delivering,
        )

    def _delivering(self) -> bool:
        """A limit change is on its way to the stations: its reallocation is due, or profiles
        are out unanswered (the proof recorder keeps its big writes out of the way)."""
        if self.arbiter.fleet.delivering:
            return True
        deadline = self.arbiter.next_deadline()
        return deadline is not None and deadline <= self.clock()

    def add_listener(self, listener: Listener) -> None:
        """``listener`` gets every batch of decisions, on the loop thread; it must not block."""
        self._listeners.append(listener)

    def view(self) -> SiteView:
        seconds, known = self._time_to_comply
        view = self.arbiter.view()
        return replace(view, time_to_comply_s=seconds, time_to_comply_known=known) if known else view

    def start(self) -> None:
        """Announce the resumed limit to every adapter and arm the first deadline."""
        self._persist_if_changed(None)
        reason = self.start_reason or (
            "resumed from the store" if self.arbiter.mode is not Mode.INITIAL else "initial limit"
        )
        decision = self.arbiter.limit_changed(reason)
        level = logging.WARNING if decision.mode in (Mode.HOLD, Mode.FALLBACK) else logging.INFO
        log.log(
            level,
            "limit in force %.1f W (%s): %s",
            decision.limit_w,
            decision.source,
            decision.reason,
            extra={"source": decision.source.value, "reason": decision.reason, "mode": decision.mode.value},
        )
        self.proof.start([decision], self.clock())  # proof of execution: the limit it starts with
        self._fleet_gauges(self.clock())  # stations restored from the store are reserved already
        self._dispatch([decision])
        self._arm_deadline()
        self._commitments_changed()  # restored ledgers stored whole soon: the journal folds in
        self.scheduler.add_job(
            self._refresh_master_seen,
            "interval",
            seconds=MASTER_SEEN_INTERVAL_S,
            id=_MASTER_SEEN_JOB,
            replace_existing=True,
            coalesce=True,
            misfire_grace_time=None,
        )

    def submit(self, event: Event) -> list[Decision]:
        """Feed one fact into the core and fan its decisions out."""
        if isinstance(event, SetpointReceived):
            raise TypeError("setpoints go through submit_setpoint, which stores before confirming")
        return self._apply(event)

    async def submit_setpoint(self, event: SetpointReceived) -> SetpointOutcome:
        """Decide a DSO command: accepted only once the store holds it durably.

        An accepted command's limit and its audit row are one transaction, written before
        the core confirms it: a crash keeps both or neither.
        """
        now = self.clock()
        refusal = self.arbiter.check_setpoint(event, now)
        if refusal is not None:
            decisions = self._apply(event, now)  # the core refuses it, with the same rule
            reject = next((d for d in decisions if isinstance(d, RejectSetpoint)), None)
            detail = refusal.detail if reject is None else reject.detail
            outcome = SetpointOutcome(False, refusal.reason, detail)
            log.info(
                "setpoint %r W from %s refused: %s",
                event.value_w,
                event.peer,
                detail,
                extra=_fields(
                    "setpoint_refused", peer=event.peer, value_w=event.value_w, code=refusal.reason.value
                ),
            )
            self._audit(event, now, outcome)
            return outcome
        durable = self.arbiter.durable_after(event, now)
        try:
            audit_id: int | None = self.store.accept_setpoint(
                durable, self._audit_row(event, now, True, "ok", "")
            )
            self._stored = durable
        except StoreError as exc:
            log.error(
                "setpoint %g W from %s refused, the store cannot keep it: %s",
                event.value_w,
                event.peer,
                exc,
                extra=_fields(
                    "setpoint_refused", peer=event.peer, value_w=event.value_w, code="store_failed"
                ),
            )
            self.metrics.store_errors.inc()
            self._store_fault_logged = self.store.failure
            outcome = SetpointOutcome(False, RejectReason.STORE_FAILED, str(exc))
            self._audit(event, now, outcome)
            return outcome
        self.metrics.setpoints.labels("accepted", "ok").inc()
        decisions = self._apply(event, now)
        if not any(isinstance(d, ConfirmSetpoint) for d in decisions):  # pragma: no cover - same rule
            log.error(
                "setpoint %g W from %s: stored, yet the core did not confirm it", event.value_w, event.peer
            )
        self.proof.command_audited(audit_id)  # proof of execution: the record sits beside this row
        return SetpointOutcome(True)

    def refuse_command(
        self, peer: str, kind: str, value_w: float | None, reason: RejectReason, detail: str
    ) -> None:
        """Audit a command an adapter refused before it reached the core (unknown IOA, ...)."""
        self.metrics.setpoints.labels("rejected", reason.value).inc()
        # DEBUG: the adapter already logged it, bounded and rate-limited per peer (a flood of
        # bad commands must not flood the log); the audit row keeps every one.
        log.debug("command from %s refused: %s", peer, detail)
        self._write_audit(AuditRow(self.clock(), peer, kind, value_w, None, False, reason.value, detail))

    async def close(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._closed = True
        self._held = []  # the adapters have stopped: nothing is sent any more
        self._store_commitments(sync=True)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.arbiter.link_up:  # the master was there until now: the downtime starts here
            self._save_master_seen(self.clock(), sync=True)
        self.proof.close()  # proof of execution: the open record closes with the gateway
        self.store.close()

    # -- internals -------------------------------------------------------------

    def _apply(self, event: Event, now: float | None = None) -> list[Decision]:
        now = self.clock() if now is None else now
        before = self.arbiter.durable
        decisions = self.arbiter.handle(event, now)
        self._persist_if_changed(before)
        self.proof.observe(event, decisions, now)  # proof of execution (issue 12)
        if type(event) is ProfileResult:
            # A fan-out's thousands of answers: counted here, the fleet's gauges and log lines
            # once at the end of the loop's turn (they read the sums, not the answers).
            self._profile_results[event.outcome].inc()
            if not self._gauges_due:
                self._gauges_due = True
                asyncio.get_running_loop().call_soon(self._observe_answers)
        elif type(event) is MeterSampled:  # counts nothing; moves the fleet only with a reallocation
            if len(decisions) > 1:
                self._observe_fleet(event, decisions, now)
        else:
            self._count(event)
            self._observe_fleet(event, decisions, now)
        for decision in decisions:
            if isinstance(decision, MeterRefused):
                log.warning(
                    "%s: meter reading refused: %s",
                    decision.station_id,
                    decision.detail,
                    extra=_fields("meter_refused", station_id=decision.station_id),
                )
            if isinstance(decision, LimitChanged):
                level = logging.WARNING if decision.mode in (Mode.HOLD, Mode.FALLBACK) else logging.INFO
                log.log(
                    level,
                    "limit in force %.1f W (%s): %s",
                    decision.limit_w,
                    decision.source,
                    decision.reason,
                    extra={
                        "source": decision.source.value,
                        "reason": decision.reason,
                        "mode": decision.mode.value,
                    },
                )
        fleet = self.arbiter.fleet
        if self._held or fleet.sent_since_drain or fleet.store_now:
            # A profile goes out: it is journaled on disk before it does (a raise must survive
            # a crash). Group commit: every batch until the loop's next turn shares one fsync
            # (a burst of 5,000 joins is not 5,000 fsyncs); later batches wait behind it so
            # decisions keep their order.
            if not self._held:
                asyncio.get_running_loop().call_soon(self._commit_and_release)
            self._held.append(decisions)
        else:
            self._commitments_changed()  # only answers changed: stored a moment later
            self._dispatch(decisions)
        self._arm_deadline()
        return decisions

    def _observe_answers(self) -> None:
        if self._gauges_due:
            self._observe_fleet(None, [], self.clock())

    def _persist_if_changed(self, before: object) -> None:
        if self.arbiter.link_up is not self._link_stored:
            # Link up or down: a master was there until now. Stored before the mode it may
            # have changed, so a resumed hold starts here.
            self._link_stored = self.arbiter.link_up
            self._save_master_seen(self.clock(), sync=True)
        durable = self.arbiter.durable
        if durable is before or durable == before or durable == self._stored:
            return
        try:
            self.store.save_limit(durable)
            self._stored = durable
        except StoreError as exc:
            # A mode change driven by time or link loss cannot be refused; keep enforcing it.
            self.metrics.store_errors.inc()
            log.error("mode %s not stored: %s", self.arbiter.mode, exc)

    def _command_closed(self, seconds: float | None) -> None:
        """A DSO command's compliance record closed: adapters may show its time to comply."""
        self._time_to_comply = (seconds, True)
        self._dispatch([TimeToComply(seconds)])

    def _commit_and_release(self) -> None:
        """Journal the profiles about to go out (one fsync), then hand the held decisions on,
        in order; the changed ledgers are stored whole a moment later."""
        if self._closed:
            return
        held, self._held = self._held, []
        fleet = self.arbiter.fleet
        if fleet.store_now:
            self._store_commitments(sync=True)
        else:
            self._journal_commitments(fleet.drain_sent())
            self._commitments_changed()
        for decisions in held:
            self._dispatch(decisions)

    def _commitments_changed(self) -> None:
        """Ledgers changed: stored whole a moment later, together (answers can only lower a
        commitment; a profile sent is in the journal already)."""
        if self.arbiter.fleet.has_changes and self._commit_flush is None:
            loop = asyncio.get_running_loop()
            self._commit_flush = loop.call_later(COMMITMENTS_FLUSH_S, self._store_commitments)

    def _journal_commitments(self, sent: list[tuple[str, OcppVersion, Profiles]]) -> None:
        """Append the profiles about to go out to the store's journal, durably: one short
        write for a whole fan-out (gateway.core.fleet: "Commitments outlive the gateway")."""
        if not sent:
            return
        entries = [
            (station_id, version.value, e.seq, e.live_w, e.live_until_s, e.fallback_w)
            for station_id, version, e in sent
        ]
        try:
            self.store.journal_commitments(orjson.dumps(entries).decode(), self.clock())
        except StoreError as exc:
            self.arbiter.fleet.not_stored((), (), sent=True)  # whole ledgers, synced, next time
            self._commitments_not_stored(exc)

    def _store_commitments(self, sync: bool = False) -> None:
        """Store every station ledger that changed whole, in place of the journal."""
        if self._commit_flush is not None:
            self._commit_flush.cancel()
            self._commit_flush = None
        changed, removed, sent = self.arbiter.fleet.drain_changes()
        if not changed and not removed:
            return
        rows = [(s.station_id, s.version.value, orjson.dumps(s.ledger.entries()).decode()) for s in changed]
        try:
            self.store.save_commitments(rows, removed, self.clock(), sync=sync or sent)
        except StoreError as exc:
            # Nothing landed, the journal included: the next store must cover these stations too.
            self.arbiter.fleet.not_stored([s.station_id for s in changed], removed, sent)
            self._commitments_not_stored(exc)
            if not self._closed:
                self._commitments_changed()  # tried again a moment later

    def _commitments_not_stored(self, exc: StoreError) -> None:
        # Profiles still go out: holding back a cut would break the cap now, not after a restart.
        self.metrics.store_errors.inc()
        failure = self.store.failure
        if failure is None or failure != self._store_fault_logged:
            self._store_fault_logged = failure
            log.error("station commitments not stored (a restart may not know them): %s", exc)

    def _save_master_seen(self, at_s: float, sync: bool) -> None:
        try:
            self.store.save_master_seen(at_s, sync=sync)
        except StoreError as exc:
            self.metrics.store_errors.inc()
            failure = self.store.failure
            if failure is None or failure != self._store_fault_logged:  # a lasting fault is logged once
                self._store_fault_logged = failure
                log.error("time a DSO master was last seen not stored: %s", exc)

    async def _refresh_master_seen(self) -> None:
        """While a master is connected, keep its last-seen time current in the store."""
        if self.arbiter.link_up:
            self._save_master_seen(self.clock(), sync=False)

    def _observe_fleet(self, event: Event | None, decisions: list[Decision], now: float) -> None:
        """Commitments, offline reserves and waiting raises: metrics, and a log line when they matter."""
        fleet, m = self.arbiter.fleet, self.metrics
        self._gauges_due = False
        waiting_before, self._raises_waiting = self._raises_waiting, len(fleet.raises_waiting)
        self._fleet_gauges(now)
        if isinstance(event, StationDisconnected):
            station = fleet.stations.get(event.station_id)
            if station is not None and not station.online:
                held = station.ledger.held
                log.warning(
                    "%s offline: %.1f W stay reserved (it may charge under its live cap until %s,"
                    " then its %.1f W fallback cap); %d station(s) offline reserved",
                    event.station_id,
                    station.ledger.reserve_w(now, False, 0.0),
                    "unknown" if held is None else datetime.fromtimestamp(held.live_until_s, UTC).isoformat(),
                    station.ledger.fallback_commitment_w(),
                    fleet.offline_count,
                    extra=_fields(
                        "station_offline",
                        station_id=event.station_id,
                        reserved_w=station.ledger.reserve_w(now, False, 0.0),
                    ),
                )
        elif isinstance(event, StationReleased):
            refused = next((d for d in decisions if isinstance(d, StationReleaseRefused)), None)
            result = "refused" if refused is not None else "released"
            m.releases.labels(result).inc()
            detail = event.reason if refused is None else f"{event.reason} (refused: {refused.detail})"
            (log.info if refused is None else log.warning)(
                "station %s %s by %s: %s",
                event.station_id,
                result,
                event.by,
                detail,
                extra=_fields("station_release", station_id=event.station_id, by=event.by, code=result),
            )
            self._write_audit(
                AuditRow(
                    now,
                    event.by,
                    "station_release",
                    None,
                    None,
                    refused is None,
                    result,
                    f"{event.station_id}: {detail}",
                )
            )
        waiting = self._raises_waiting
        if waiting and not waiting_before:
            log.info(
                "%d raise(s) wait until cuts are Accepted or old caps lapse (cuts before raises)",
                waiting,
                extra=_fields("raises_waiting", count=waiting),
            )
        elif waiting_before and not waiting:
            log.info("no raise waits any more", extra=_fields("raises_waiting", count=0))

    def _fleet_gauges(self, now: float) -> None:
        fleet, m = self.arbiter.fleet, self.metrics
        m.committed_w.set(fleet.reserve_sum(now))
        m.fallback_committed_w.set(fleet.fallback_sum(now))
        offline_w, _ = fleet.offline_reserve(now)
        m.offline_reserved.set(fleet.offline_count)
        m.offline_reserved_w.set(offline_w)
        m.raises_waiting.set(len(fleet.raises_waiting))

    def _count(self, event: Event) -> None:
        m = self.metrics
        match event:
            case DsoLinkUp() | DsoLinkLost():
                m.dso_link_up.set(int(self.arbiter.link_up))
            case StationConnected():
                old = self._stations_by_version.get(event.station_id)
                if old is not None:
                    m.stations_connected.labels(old).dec()
                self._stations_by_version[event.station_id] = event.version.value
                m.stations_connected.labels(event.version.value).inc()
            case StationDisconnected():
                version = self._stations_by_version.pop(event.station_id, None)
                if version is not None:
                    m.stations_connected.labels(version).dec()
            case _:
                pass

    def _audit(self, event: SetpointReceived, now: float, outcome: SetpointOutcome) -> int | None:
        result = "accepted" if outcome.accepted else "rejected"
        reason = "ok" if outcome.reason is None else outcome.reason.value
        self.metrics.setpoints.labels(result, reason).inc()
        return self._write_audit(self._audit_row(event, now, outcome.accepted, reason, outcome.detail))

    @staticmethod
    def _audit_row(event: SetpointReceived, now: float, accepted: bool, reason: str, detail: str) -> AuditRow:
        return AuditRow(
            now, event.peer, event.kind.value, event.value_w, event.time_tag_s, accepted, reason, detail
        )

    def _write_audit(self, row: AuditRow) -> int | None:
        try:
            return self.store.append_audit(row)
        except StoreError as exc:
            self.metrics.store_errors.inc()
            log.error("audit row lost: %s (%s)", row, exc)
            return None

    def _dispatch(self, decisions: list[Decision]) -> None:
        if not decisions:
            return
        self.metrics.observe(decisions)
        for listener in self._listeners:
            try:
                listener(decisions)
            except Exception:  # one broken adapter must not starve the others
                log.exception("decision listener %r failed", listener)

    def _arm_deadline(self) -> None:
        """Come back with a Tick at the core's next deadline: one timer on the event loop."""
        deadline = self.arbiter.next_deadline()
        if deadline == self._armed_s:
            return  # the hot path (meter samples) rarely moves the deadline
        self._armed_s = deadline
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._deadline_timer = loop.call_later(max(0.0, deadline - self.clock()), self._on_deadline)

    def _on_deadline(self) -> None:
        self._armed_s, self._deadline_timer = None, None
        try:
            self._apply(Tick())
        except Exception:  # a bug of ours: keep the clock running, never lose the deadline
            log.exception("core tick failed")
            self._arm_deadline()
