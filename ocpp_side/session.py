"""One station's OCPP session as a pure protocol object, like websockets' ``Protocol``.

No socket, no task, no timer, no clock: the shell (``connection.py``) owns those. What
goes in, each with the time ``now`` (epoch seconds, the core's clock):

- ``receive_frame(data, now)`` -- a frame from the station;
- ``set_limit(decision)`` -- the core's latest allocation for this station;
- ``call(action, payload)`` -- a gateway call whose answer is consumed here;
- for the relay: ``answer_locally``, ``after_relayed``, ``forward_reply``,
  ``send_relayed``, ``reapply_limit``;
- ``handle_timeout(now)`` once ``next_deadline()`` has passed; ``connection_lost(now)``.

What comes out: ``frames_to_send(now)`` (answers and forwarded replies in order, then at
most one CALL), ``events()`` (for the core: ``ProfileResult``, ``MeterSampled``,
``StationActivity``; for the relay: ``StationCalled``, ``RelayedAnswered``) and
``next_deadline()``.

The rules it keeps, each once:

- **One call in flight** (OCPP-J allows one outstanding CALL per direction). The
  central side's calls -- the limit slot, then the gateway's own and the CSMS's relayed
  ones in order -- go out one at a time; the next is chosen only when the shell asks for
  frames, so the limit slot always offers the latest allocation (``limit_slot.py``).
  A call unanswered ``call_timeout_s`` after it went out fails as a timeout.
- **Ids.** Gateway calls carry ``GATEWAY_ID_PREFIX`` + a per-session counter (no CSMS
  uses it) and their replies are consumed here; a relayed CSMS call keeps its own id and
  is sent as the exact text the CSMS wrote, and the station's reply goes back as it came.
- **Opening.** Nothing is sent before the station boots or speaks, or ``boot_wait_s``
  passes. Then discovery (unless remembered from an earlier connection without a boot
  since), both limit levels, metering setup -- and again on every BootNotification.
- **Station calls.** Answered as a standalone central system (validated both ways,
  malformed input answered with its CALLERROR, never a crash), or handed to the relay;
  either way, what they say about meters and activity becomes core events.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson

from gateway.core.decisions import ApplyStationLimit
from gateway.core.events import Event, MeterSampled, ProfileResult, StationActivity
from gateway.core.model import OcppVersion, ProfileOutcome
from ocpp_side import codec, schemas
from ocpp_side.activity import Activity
from ocpp_side.answers import StandaloneAnswers, served
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, FrameError, OcppViolation
from ocpp_side.limit_slot import LimitSlot, ProfileBook
from ocpp_side.meter import StationMeter, power_w
from ocpp_side.observations import ConnectorStatus, Observation, TransactionUpdate
from ocpp_side.peer_log import PeerLog, printable
from ocpp_side.profiles import ProfileLevel, StationCaps
from ocpp_side.station_setup import Discovered, MeteringPlan, Setting
from ocpp_side.versions import VersionRules

log = logging.getLogger(__name__)

GATEWAY_ID_PREFIX = "ocpp809-"  # + a per-session counter: at most 36 characters
Payload = dict[str, Any]


# -- what calls come to ------------------------------------------------------------------


class CallFailure(StrEnum):
    CALL_ERROR = "call_error"
    INVALID_RESPONSE = "invalid_response"
    TIMEOUT = "timeout"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A CALLRESULT payload (schema-valid), or why there is none."""

    payload: Payload | None
    failure: CallFailure | None = None
    detail: str = ""
    error: CallError | None = None
    raw: str = ""  # the station's reply frame as it came (relayed to the CSMS unchanged)


OnDone = Callable[[CallOutcome, float], None]  # (outcome, now)


@dataclass(slots=True)
class OutgoingCall:
    action: str
    payload: Payload
    on_done: OnDone
    unique_id: str | None = None  # None: a gateway id is assigned when it is sent
    encoded: bytes | None = None  # the payload already encoded and validated (shared by many stations)
    raw_frame: bytes | None = None  # a relayed CSMS CALL, validated, sent exactly as the CSMS wrote it


def _ignore(outcome: CallOutcome, now: float) -> None:
    """A gateway call whose answer changes nothing (a CSMS maximum capped again)."""


_PROFILE_OUTCOME = {
    CallFailure.CALL_ERROR: ProfileOutcome.CALL_ERROR,
    CallFailure.INVALID_RESPONSE: ProfileOutcome.CALL_ERROR,
    CallFailure.TIMEOUT: ProfileOutcome.TIMEOUT,
}


# -- events for the relay ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StationCalled:
    """A station CALL for the relay to carry to the CSMS (the session is ``relayed``)."""

    call: Call
    raw: str  # as the station wrote it


@dataclass(frozen=True, slots=True)
class RelayedAnswered:
    """What became of a CSMS call sent with ``send_relayed``."""

    call: Call
    outcome: CallOutcome


SessionEvent = Event | StationCalled | RelayedAnswered


# -- what a session is built from ------------------------------------------------------


class SessionMetrics(Protocol):
    def sent(self, action: str) -> None: ...
    def received(self, action: str) -> None: ...
    def error_sent(self, code: str) -> None: ...


class NoMetrics:
    def sent(self, action: str) -> None:
        pass

    def received(self, action: str) -> None:
        pass

    def error_sent(self, code: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every session of one server shares: configuration values and a few lookups."""

    call_timeout_s: float
    retry_base_s: float
    boot_wait_s: float
    configure_metering: bool
    metering_plan: MeteringPlan
    caps_for: Callable[[str, Discovered], StationCaps]  # discovery + the station's config entry
    known_caps: MutableMapping[str, StationCaps]  # discovery survives reconnects, not boots
    profiles: ProfileBook
    answers: StandaloneAnswers
    peer_log: PeerLog
    metrics: SessionMetrics = field(default_factory=NoMetrics)


Request = tuple[str, Payload]
Setup = Generator[Request, CallOutcome, None]  # yields a call, receives its outcome


class StationSession:
    """See the module docstring."""

    __slots__ = (
        "_boot_deadline",
        "_deadline",
        "_events",
        "_ids",
        "_inflight",
        "_inflight_id",
        "_out",
        "_queue",
        "_served",
        "_setup",
        "activity",
        "caps",
        "closed",
        "ctx",
        "meter",
        "metering",
        "opened",
        "outlet_of_tx",
        "relayed",
        "rules",
        "slot",
        "station_id",
        "version",
    )  # thousands of these live at once

    def __init__(self, ctx: SessionContext, rules: VersionRules, station_id: str, now: float) -> None:
        self.ctx = ctx
        self.rules = rules
        self.version: OcppVersion = rules.VERSION
        self.station_id = station_id
        self.relayed = False  # station CALLs go to the relay (StationCalled) instead of being answered
        self.opened = False  # the station may be called (boot seen, or it spoke, or boot_wait_s)
        self.closed = False
        self.caps: StationCaps | None = None  # None until discovery: profiles wait for it
        self.metering: str | None = None  # what the station took of the MID metering setup (None: not yet)
        self.slot = LimitSlot()
        self.meter = StationMeter()
        self.activity = Activity()  # is an EV charging here? (idle stations get an idle share)
        self.outlet_of_tx: dict[str | int, int] = {}  # transaction id -> connector/EVSE
        self._served = served(rules)
        self._out: list[bytes] = []  # frames to send before the next CALL: answers, replies
        self._events: list[SessionEvent] = []
        self._queue: deque[OutgoingCall] = deque()
        self._inflight: OutgoingCall | None = None
        self._inflight_id: str | None = None
        self._deadline = 0.0  # by when the call in flight must be answered
        self._boot_deadline: float | None = now + ctx.boot_wait_s
        self._ids = 0
        self._setup: Setup | None = None

    # -- outputs -------------------------------------------------------------------------

    def frames_to_send(self, now: float) -> Sequence[bytes]:
        """Frames to write now, in order: answers and replies, then the next CALL if the
        station may take one (its answer is due ``call_timeout_s`` after ``now``)."""
        # The session's own lists are kept and emptied, not replaced: thousands of sessions
        # must not turn out a long-lived list per call for the garbage collector to promote.
        out: list[bytes] | None = None
        if self._out:
            out = self._out.copy()
            self._out.clear()
        if self._inflight is None and self.opened and not self.closed:
            frame = self._next_call(now)
            if frame is not None:
                if out is None:
                    return (frame,)
                out.append(frame)
        return () if out is None else out

    def events(self) -> Sequence[SessionEvent]:
        """Events since the last call, in order."""
        if not self._events:
            return ()
        events = tuple(self._events)
        self._events.clear()
        return events

    def has_events(self) -> bool:
        return bool(self._events)

    def wants_to_send(self) -> bool:
        """Whether ``frames_to_send`` would return anything now."""
        if self._out:
            return True
        if self._inflight is not None or not self.opened or self.closed:
            return False
        return bool(self._queue) or (self.slot.dirty and self.caps is not None)

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` is due: an answer, the boot wait, a profile retry."""
        deadline = self._deadline if self._inflight is not None else None
        for other in (self._boot_deadline, self.slot.retry_at):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    @property
    def allocation_w(self) -> float | None:
        """The station's latest DSO allocation, if the core gave one."""
        limit = self.slot.limit
        return None if limit is None else limit.limit_w

    # -- inputs ----------------------------------------------------------------------------

    def receive_frame(self, data: str | bytes, now: float) -> None:
        """A frame from the station."""
        if isinstance(data, bytes):  # OCPP-J runs on text frames only
            self._error(codec.UNKNOWN_ID, ErrorKind.RPC_FRAMEWORK, "OCPP-J uses text frames")
            return
        frame = codec.parse_frame(data)
        if type(frame) is Call:
            if self.relayed:
                self._events.append(StationCalled(frame, data))  # in order, without holding up the reader
            else:
                self._on_call(frame, now)
        elif type(frame) is CallResult or type(frame) is CallError:
            self._on_reply(frame, data, now)
        else:
            assert isinstance(frame, FrameError)
            self.ctx.peer_log.log(
                log, logging.INFO, self.station_id, "malformed frame", "%s: %s", frame.description, data
            )
            self._error(frame.unique_id, frame.kind, frame.description)

    def set_limit(self, decision: ApplyStationLimit) -> None:
        """The core's latest allocation replaces whatever was waiting (coalescing)."""
        self.slot.set(decision)

    def reapply_limit(self) -> None:
        """Install both DSO profiles again (the limit slot goes before queued calls)."""
        self.slot.reapply()

    def call(self, action: str, payload: Payload) -> None:
        """Queue a gateway call; its answer is consumed here."""
        if not self.closed:
            self._queue.append(OutgoingCall(action, payload, _ignore))

    def send_relayed(self, call: Call, payload: Payload, raw_frame: bytes | None, reapply: bool) -> None:
        """Queue a CSMS call with the CSMS's own id: ``raw_frame`` as the CSMS wrote it, or
        ``payload`` re-encoded when the guard changed it. ``RelayedAnswered`` tells what became
        of it; with ``reapply`` both DSO profiles go again once the station has answered."""

        def done(outcome: CallOutcome, now: float) -> None:
            self._events.append(RelayedAnswered(call, outcome))
            if reapply and outcome.failure is not CallFailure.CLOSED:
                self.reapply_limit()

        self._queue.append(OutgoingCall(call.action, payload, done, call.unique_id, None, raw_frame))

    def answer_locally(self, call: Call, now: float) -> Payload | None:
        """Answer as a standalone central system (no CSMS, or the CSMS is away); the answer given."""
        return self._on_call(call, now)

    def after_relayed(self, call: Call, response: Payload, now: float) -> None:
        """The CSMS answered a relayed call: feed the core (meters) and the session as if local."""
        self.ctx.metrics.received(call.action)
        self._after_call(call, response, now)

    def forward_reply(self, text: str) -> None:
        """The CSMS's reply to a station call, to the station exactly as the CSMS wrote it."""
        self._out.append(text.encode())

    def handle_timeout(self, now: float) -> None:
        """Whatever ``next_deadline`` announced and is due at ``now``."""
        if self.closed:
            return
        if self._inflight is not None and now >= self._deadline:
            log.warning(
                "%s: no answer to %s within %gs",
                self.station_id,
                self._inflight.action,
                self.ctx.call_timeout_s,
            )
            self._finish(CallOutcome(None, CallFailure.TIMEOUT, "no answer in time"), now)
        if not self.opened and self._boot_deadline is not None and now >= self._boot_deadline:
            log.info("%s: no BootNotification within boot_wait_s, setting it up anyway", self.station_id)
            self._open(False, now)
        self.slot.retry_due(now)

    def connection_lost(self, now: float) -> None:
        """The socket is gone: fail what is pending (relayed calls tell the relay)."""
        self.closed = True
        self._setup = None
        self._boot_deadline = self.slot.retry_at = None
        pending = ([self._inflight] if self._inflight is not None else []) + list(self._queue)
        self._inflight = self._inflight_id = None
        self._queue.clear()
        for call in pending:
            call.on_done(CallOutcome(None, CallFailure.CLOSED, "connection closed"), now)

    # -- the central side's calls --------------------------------------------------------

    def _next_call(self, now: float) -> bytes | None:
        while True:
            call = self._limit_call(now) if self.slot.dirty and self.caps is not None else None
            if call is None:
                if not self._queue:
                    return None
                call = self._queue.popleft()
            encoded = call.encoded
            if encoded is None and call.raw_frame is None:
                try:
                    schemas.validate(self.version, call.action, call.payload, request=True)
                except OcppViolation as exc:  # our own payload: a bug, never sent invalid
                    log.error("%s: not sending invalid %s: %s", self.station_id, call.action, exc)
                    call.on_done(CallOutcome(None, CallFailure.INVALID_RESPONSE, str(exc)), now)
                    continue
                encoded = orjson.dumps(call.payload)
            self._ids += 1
            unique_id = call.unique_id or f"{GATEWAY_ID_PREFIX}{self._ids}"
            self._inflight, self._inflight_id = call, unique_id
            self._deadline = now + self.ctx.call_timeout_s
            self.ctx.metrics.sent(call.action)
            if call.raw_frame is not None:
                return call.raw_frame
            assert encoded is not None
            return codec.encode_call_raw(unique_id, call.action, encoded)

    def _finish(self, outcome: CallOutcome, now: float) -> None:
        call = self._inflight
        assert call is not None
        self._inflight = self._inflight_id = None
        call.on_done(outcome, now)

    def _on_reply(self, frame: CallResult | CallError, data: str, now: float) -> None:
        call = self._inflight
        if call is None or frame.unique_id != self._inflight_id:
            self.ctx.peer_log.log(
                log, logging.INFO, self.station_id, "reply to no pending call", "id %s", frame.unique_id
            )
            return
        if type(frame) is CallError:
            outcome = CallOutcome(
                None, CallFailure.CALL_ERROR, f"{frame.error_code}: {frame.description}", frame, data
            )
        else:
            assert isinstance(frame, CallResult)
            try:
                schemas.validate(self.version, call.action, frame.payload, request=False)
                outcome = CallOutcome(frame.payload, raw=data)
            except OcppViolation as exc:
                self.ctx.peer_log.log(log, logging.WARNING, self.station_id, "invalid answer", "%s", exc)
                outcome = CallOutcome(None, CallFailure.INVALID_RESPONSE, exc.description, raw=data)
        self._finish(outcome, now)

    # -- the limit slot ----------------------------------------------------------------

    def _limit_call(self, now: float) -> OutgoingCall | None:
        caps = self.caps
        assert caps is not None
        step = self.slot.next()
        if step is None:
            return None
        limit, level, value_w = step
        payload, encoded = self.ctx.profiles.payload(
            self.rules, level, value_w, caps, limit.valid_until_s, now
        )

        def done(outcome: CallOutcome, now: float) -> None:
            self._profile_done(limit, level, outcome, now)

        return OutgoingCall("SetChargingProfile", payload, done, None, encoded)

    def _profile_done(
        self, limit: ApplyStationLimit, level: ProfileLevel, outcome: CallOutcome, now: float
    ) -> None:
        if outcome.failure is CallFailure.CLOSED:
            return  # the core hears StationDisconnected instead
        status = outcome.payload.get("status") if outcome.payload is not None else None
        if status == "Accepted":
            if self.slot.accepted(limit, level):
                self._report(limit.seq, ProfileOutcome.ACCEPTED)
            return
        result = ProfileOutcome.REJECTED if outcome.failure is None else _PROFILE_OUTCOME[outcome.failure]
        log.warning(
            "%s: %s profile %.1f W refused (%s %s)",
            self.station_id,
            level,
            limit.limit_w if level is ProfileLevel.LIVE else limit.fallback_w,
            result,
            printable(status or outcome.detail),  # the station's CALLERROR text, escaped and bounded
        )
        self.slot.refused(limit, now, self.ctx.retry_base_s)
        self._report(limit.seq, result)

    def _report(self, seq: int, outcome: ProfileOutcome) -> None:
        if self.slot.report(seq, outcome):
            self._events.append(ProfileResult(self.station_id, seq, outcome))

    # -- the station's calls -----------------------------------------------------------

    def _error(self, unique_id: str, kind: ErrorKind, description: str) -> None:
        code = self.rules.ERROR_CODES[kind]
        self.ctx.metrics.error_sent(code)
        self._out.append(codec.encode_error(unique_id, code, description))

    def _on_call(self, call: Call, now: float) -> Payload | None:
        ctx, version = self.ctx, self.version
        try:
            if call.action not in self._served and call.action in schemas.known_actions(version):
                # A central system's action (Reset, SetChargingProfile ...) sent by a station.
                raise OcppViolation(
                    ErrorKind.NOT_SUPPORTED, f"{call.action} is not served by this central system"
                )
            schemas.validate(version, call.action, call.payload, request=True)
            response = ctx.answers.answer(self.rules, call.action, call.payload, now)
        except OcppViolation as exc:
            # Once, bounded: the description names the action already (2 MB of it, maybe).
            text = exc.description if exc.description.startswith(call.action) else f"{call.action}: {exc}"
            ctx.peer_log.log(log, logging.INFO, self.station_id, "call refused", "%s", text)
            self._error(call.unique_id, exc.kind, exc.description)
            return None
        except Exception:  # a bug of ours must not cost the station its connection
            log.exception("%s: answering %s failed", self.station_id, call.action)
            self._error(call.unique_id, ErrorKind.INTERNAL, "internal error")
            return None
        try:
            schemas.validate(version, call.action, response, request=False)
        except OcppViolation as exc:
            log.error("%s: our %s answer is invalid: %s", self.station_id, call.action, exc)
            self._error(call.unique_id, ErrorKind.INTERNAL, "internal error")
            return None
        ctx.metrics.received(call.action)
        self._out.append(codec.encode_result(call.unique_id, response))
        self._after_call(call, response, now)
        return response

    def _after_call(self, call: Call, response: Payload, now: float) -> None:
        """What a station's call means for the core and for the session (once answered)."""
        if call.action == "BootNotification":
            log.info("%s: booted (%s)", self.station_id, self.version.value)
            self._open(True, now)
            return
        if not self.opened:
            self._open(False, now)  # it talks, so it has booted before: set it up
        observation = self.rules.observe(call.action, call.payload, response)
        if observation is not None:
            self._observed(observation)

    def _observed(self, observation: Observation) -> None:
        charging: bool | None = None
        watts: float | None = None
        outlet: int | str = 0
        if isinstance(observation, ConnectorStatus):
            charging = self.activity.status(observation.connector, observation.status)
        elif isinstance(observation, TransactionUpdate):
            tx_id = observation.transaction_id
            charging = self.activity.transaction(str(tx_id), observation.running)
            if observation.outlet is not None:
                self.outlet_of_tx[tx_id] = observation.outlet
            if observation.meter_values is None:  # no power in it: 0 W where it ran, once it stops
                if not observation.running:
                    stopped = self.outlet_of_tx.pop(tx_id, None)
                    if stopped is not None:
                        outlet, watts = stopped, 0.0
            else:
                # An outlet not named yet still must not pass for the main meter (outlet 0).
                outlet = self.outlet_of_tx.get(tx_id, f"tx:{tx_id}")
                watts = power_w(observation.meter_values)
                if not observation.running:
                    self.outlet_of_tx.pop(tx_id, None)
                    watts = 0.0  # no transaction, no charging on that outlet
        else:
            outlet, watts = observation.outlet, power_w(observation.meter_values)
        if charging is not None:
            log.info("%s: %s", self.station_id, "EV charging" if charging else "no EV charging (idle)")
            self._events.append(StationActivity(self.station_id, charging))
        if watts is not None:
            self._events.append(MeterSampled(self.station_id, self.meter.update(outlet, watts)))

    # -- setup -------------------------------------------------------------------------

    def _open(self, boot: bool, now: float) -> None:
        """Start (or restart, on a new boot) discovery, profile installation and metering setup."""
        self.opened = True
        self._boot_deadline = None
        self._setup = setup = self._set_up(boot)
        self._step(setup, None, now)

    def _step(self, setup: Setup, outcome: CallOutcome | None, now: float) -> None:
        """Run ``setup`` to its next call; the answers of a setup a new boot replaced are moot."""
        if setup is not self._setup:
            return
        try:
            action, payload = next(setup) if outcome is None else setup.send(outcome)
        except StopIteration:
            self._setup = None
            return
        except Exception:
            log.exception("%s: setup failed", self.station_id)
            self._setup = None
            return

        def done(outcome: CallOutcome, now: float) -> None:
            self._step(setup, outcome, now)

        self._queue.append(OutgoingCall(action, payload, done))

    def _set_up(self, boot: bool) -> Setup:
        ctx, rules = self.ctx, self.rules
        caps = None if boot else ctx.known_caps.get(self.station_id)
        if caps is None:
            outcome = yield rules.discovery_request()
            discovered = rules.parse_discovery(outcome.payload) if outcome.payload else Discovered()
            caps = ctx.caps_for(self.station_id, discovered)
            ctx.known_caps[self.station_id] = caps
            log.info(
                "%s: profiles in %s, %d phases, stack levels up to %s",
                self.station_id,
                caps.rate_unit,
                caps.phases,
                caps.max_stack_level,
            )
        self.caps = caps
        self.slot.reapply(new_session=True)  # after a reconnect or boot nothing on the station is assumed
        if ctx.configure_metering:
            yield from self._configure_metering(ctx.metering_plan)

    def _apply(self, settings: list[Setting]) -> Generator[Request, CallOutcome, list[bool]]:
        outcomes = []
        for request in self.rules.setting_requests(settings):
            outcomes.append((yield request))
        return self.rules.accepted_settings(settings, [o.payload or {} for o in outcomes])

    def _configure_metering(self, plan: MeteringPlan) -> Setup:
        settings = self.rules.metering_settings(plan, plan.measurands)
        taken = yield from self._apply(settings)
        set_up: list[str] = []  # what the station took, as "name=value"
        refused: list[str] = []
        for setting, accepted in zip(settings, taken, strict=True):
            if accepted:
                set_up.append(f"{setting.name}={setting.value}")
                continue
            if not setting.measurands or len(plan.measurands) < 2:
                log.warning("%s: station refused %s=%s", self.station_id, setting.name, setting.value)
                refused.append(f"{setting.name}={setting.value}")
                continue
            # Keep what the station does measure: try each measurand alone, then set those together.
            kept: list[str] = []
            for measurand in plan.measurands:
                single = Setting(setting.component, setting.name, measurand, measurands=True)
                if (yield from self._apply([single]))[0]:
                    kept.append(measurand)
            if len(kept) > 1:
                together = Setting(setting.component, setting.name, ",".join(kept), measurands=True)
                if not (yield from self._apply([together]))[0]:
                    kept = kept[-1:]  # the last single one set is still in place
            log.warning(
                "%s: %s keeps %s of %s", self.station_id, setting.name, kept or "nothing", plan.measurands
            )
            if kept:
                set_up.append(f"{setting.name}={','.join(kept)}")
            missing = [m for m in plan.measurands if m not in kept]
            refused.append(f"{setting.name}: {','.join(missing)}")
        self.metering = "; ".join(set_up) + (f" (refused: {'; '.join(refused)})" if refused else "")
        log.info("%s: metering set up: %s", self.station_id, self.metering or "nothing")
