"""The imperative shell around the arbiter: owns the clock, the store and the deadline.

Adapters talk to the core only through ``CoreRuntime`` on the asyncio loop:
``submit(event)`` for facts, ``submit_setpoint(event)`` for DSO commands (stored before
confirmed), ``view()`` for interrogation, ``add_listener()`` for decisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.arbiter import Arbiter, SiteView
from gateway.decisions import ConfirmSetpoint, Decision, LimitChanged, RejectSetpoint
from gateway.errors import StoreError
from gateway.events import (
    DsoLinkLost,
    DsoLinkUp,
    Event,
    ProfileResult,
    SetpointReceived,
    StationConnected,
    StationDisconnected,
    Tick,
)
from gateway.metrics import CoreMetrics
from gateway.model import Mode, RejectReason
from gateway.store import AuditRow, Store

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Decision]], None]
Clock = Callable[[], float]

_DEADLINE_JOB = "core-deadline"


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
    ) -> None:
        self.arbiter = arbiter
        self.store = store
        self.metrics = metrics
        self.scheduler = scheduler
        self.clock = clock
        self._listeners: list[Listener] = []
        self._stations_by_version: dict[str, str] = {}
        self._armed_s: float | None = None

    def add_listener(self, listener: Listener) -> None:
        """``listener`` gets every batch of decisions, on the loop thread; it must not block."""
        self._listeners.append(listener)

    def view(self) -> SiteView:
        return self.arbiter.view()

    def start(self) -> None:
        """Announce the resumed limit to every adapter and arm the first deadline."""
        self._persist_if_changed(None)
        decision = self.arbiter.limit_changed(
            "resumed from the store" if self.arbiter.mode is not Mode.INITIAL else "initial limit"
        )
        log.info("limit in force %.1f W (%s): %s", decision.limit_w, decision.source, decision.reason)
        self._dispatch([decision])
        self._arm_deadline()

    async def submit(self, event: Event) -> list[Decision]:
        """Feed one fact into the core and fan its decisions out."""
        if isinstance(event, SetpointReceived):
            raise TypeError("setpoints go through submit_setpoint, which stores before confirming")
        return self._apply(event)

    async def submit_setpoint(self, event: SetpointReceived) -> SetpointOutcome:
        """Decide a DSO command: accepted only once the store holds it durably."""
        now = self.clock()
        refusal = self.arbiter.check_setpoint(event, now)
        if refusal is None:
            try:
                self.store.save_limit(self.arbiter.durable_after(event, now))
            except StoreError as exc:
                log.error("setpoint %g W refused: %s", event.value_w, exc)
                self.metrics.store_errors.inc()
                outcome = SetpointOutcome(False, RejectReason.STORE_FAILED, str(exc))
                self._audit(event, now, outcome)
                return outcome
        decisions = self._apply(event, now)
        confirm = next((d for d in decisions if isinstance(d, ConfirmSetpoint)), None)
        reject = next((d for d in decisions if isinstance(d, RejectSetpoint)), None)
        if confirm is not None:
            outcome = SetpointOutcome(True)
        elif reject is not None:
            outcome = SetpointOutcome(False, reject.reason, reject.detail)
            log.info("setpoint %r W from %s refused: %s", event.value_w, event.peer, reject.detail)
        else:  # pragma: no cover - the arbiter answers every setpoint
            outcome = SetpointOutcome(False, RejectReason.INTERNAL_ERROR, "the core gave no answer")
        self._audit(event, now, outcome)
        return outcome

    def refuse_command(
        self, peer: str, kind: str, value_w: float | None, reason: RejectReason, detail: str
    ) -> None:
        """Audit a command an adapter refused before it reached the core (unknown IOA, ...)."""
        self.metrics.setpoints.labels("rejected", reason.value).inc()
        log.info("command from %s refused: %s", peer, detail)
        self._write_audit(AuditRow(self.clock(), peer, kind, value_w, None, False, reason.value, detail))

    async def close(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.store.close()

    # -- internals -------------------------------------------------------------

    def _apply(self, event: Event, now: float | None = None) -> list[Decision]:
        now = self.clock() if now is None else now
        before = self.arbiter.durable
        decisions = self.arbiter.handle(event, now)
        self._persist_if_changed(before)
        self._count(event)
        for decision in decisions:
            if isinstance(decision, LimitChanged):
                level = logging.WARNING if decision.mode in (Mode.HOLD, Mode.FALLBACK) else logging.INFO
                log.log(
                    level,
                    "limit in force %.1f W (%s): %s",
                    decision.limit_w,
                    decision.source,
                    decision.reason,
                )
        self._dispatch(decisions)
        self._arm_deadline()
        return decisions

    def _persist_if_changed(self, before: object) -> None:
        if self.arbiter.durable == before:
            return
        try:
            self.store.save_limit(self.arbiter.durable)
        except StoreError as exc:
            # A mode change driven by time or link loss cannot be refused; keep enforcing it.
            self.metrics.store_errors.inc()
            log.error("mode %s not stored: %s", self.arbiter.mode, exc)

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
            case ProfileResult():
                m.profile_results.labels(event.outcome.value).inc()
            case _:
                pass

    def _audit(self, event: SetpointReceived, now: float, outcome: SetpointOutcome) -> None:
        result = "accepted" if outcome.accepted else "rejected"
        reason = "ok" if outcome.reason is None else outcome.reason.value
        self.metrics.setpoints.labels(result, reason).inc()
        self._write_audit(
            AuditRow(
                now,
                event.peer,
                event.kind.value,
                event.value_w,
                event.time_tag_s,
                outcome.accepted,
                reason,
                outcome.detail,
            )
        )

    def _write_audit(self, row: AuditRow) -> None:
        try:
            self.store.append_audit(row)
        except StoreError as exc:
            self.metrics.store_errors.inc()
            log.error("audit row lost: %s (%s)", row, exc)

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
        deadline = self.arbiter.next_deadline()
        if deadline == self._armed_s:
            return  # the hot path (meter samples) rarely moves the deadline
        self._armed_s = deadline
        if deadline is None:
            if self.scheduler.get_job(_DEADLINE_JOB) is not None:
                self.scheduler.remove_job(_DEADLINE_JOB)
            return
        self.scheduler.add_job(
            self._on_deadline,
            "date",
            run_date=datetime.fromtimestamp(deadline, UTC),
            id=_DEADLINE_JOB,
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def _on_deadline(self) -> None:
        self._armed_s = None
        self._apply(Tick())
