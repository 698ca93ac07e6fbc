"""One station's websocket: its reader, its ordered outgoing calls, its limit slot.

OCPP-J allows one outstanding CALL per direction per connection. The station's calls
are answered in order by the reader. The central side's calls (the gateway's own now,
relayed CSMS calls later) wait in one ordered queue and go out one at a time through
the server's single send loop; the reader resolves each reply. Gateway call ids carry a
prefix no CSMS uses and replies to them are consumed here, never forwarded.

The limit slot is not a queue: it holds only the station's latest allocation, so a
station never receives a backlog of stale ones (coalescing), and it goes before the
queued calls. It is held until the session is open (BootNotification, or any first
message, or ``boot_wait_s``) and discovery has told the station's rate unit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.decisions import ApplyStationLimit
from gateway.events import Event, MeterSampled, ProfileResult, StationActivity
from gateway.model import OcppVersion, ProfileOutcome
from ocpp_side import codec, schemas
from ocpp_side.activity import Activity
from ocpp_side.answers import served
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, FrameError, OcppViolation
from ocpp_side.meter import StationMeter, power_w
from ocpp_side.observations import ConnectorStatus, Observation, TransactionUpdate
from ocpp_side.peer_log import printable
from ocpp_side.profiles import ProfileLevel, StationCaps, retry_delay_s
from ocpp_side.station_setup import Discovered, MeteringPlan, Setting
from ocpp_side.versions import rules_for
from ocpp_side.wire import send_now

if TYPE_CHECKING:
    from ocpp_side.relay import StationRelay
    from ocpp_side.server import StationServer

log = logging.getLogger(__name__)

GATEWAY_ID_PREFIX = "ocpp809-"  # + a per-connection counter: at most 36 characters


class CallFailure(StrEnum):
    CALL_ERROR = "call_error"
    INVALID_RESPONSE = "invalid_response"
    TIMEOUT = "timeout"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A CALLRESULT payload (schema-valid), or why there is none."""

    payload: dict[str, Any] | None
    failure: CallFailure | None = None
    detail: str = ""
    error: CallError | None = None
    raw: str = ""  # the station's reply frame as it came (relayed to the CSMS unchanged)


OnDone = Callable[[CallOutcome], Event | None]  # may return one event for the core


@dataclass(slots=True)
class OutgoingCall:
    action: str
    payload: dict[str, Any]
    on_done: OnDone
    unique_id: str | None = None  # None: a gateway id is assigned when it is sent
    encoded: bytes | None = None  # the payload already encoded and validated (shared by many stations)
    raw_frame: bytes | None = None  # a relayed CSMS CALL, validated, sent exactly as the CSMS wrote it


_PROFILE_OUTCOME = {
    CallFailure.CALL_ERROR: ProfileOutcome.CALL_ERROR,
    CallFailure.INVALID_RESPONSE: ProfileOutcome.CALL_ERROR,
    CallFailure.TIMEOUT: ProfileOutcome.TIMEOUT,
}


class StationConnection:
    __slots__ = (
        "_boot_timer",
        "_ids",
        "_retry_attempt",
        "_retry_timer",
        "_setup_task",
        "activity",
        "caps",
        "closed",
        "deadline",
        "fallback_installed_w",
        "in_ready",
        "inflight",
        "inflight_id",
        "last_report",
        "limit",
        "limit_dirty",
        "live_done_seq",
        "meter",
        "opened",
        "outlet_of_tx",
        "queue",
        "relay",
        "rules",
        "served",
        "server",
        "station_id",
        "version",
        "ws",
    )  # thousands of these live at once

    def __init__(
        self, server: StationServer, ws: ServerConnection, station_id: str, version: OcppVersion
    ) -> None:
        self.server = server
        self.ws = ws
        self.station_id = station_id
        self.version = version
        self.rules = rules_for(version)  # every version rule, picked once
        self.served = served(self.rules)
        self.queue: deque[OutgoingCall] = deque()
        self.inflight: OutgoingCall | None = None
        self.inflight_id: str | None = None
        self.in_ready = False  # queued in the server's send loop
        self.opened = False  # the station may be called (boot seen, or it spoke, or boot_wait_s)
        self.closed = False
        self.caps: StationCaps | None = None  # None until discovery: profiles wait for it
        self.limit: ApplyStationLimit | None = None  # the latest allocation from the core
        self.limit_dirty = False
        self.live_done_seq = -1  # seq whose live profile the station accepted
        self.fallback_installed_w: float | None = None
        self.last_report: tuple[int, ProfileOutcome] | None = None
        self.meter = StationMeter()
        self.activity = Activity()  # is an EV charging here? (idle stations get an idle share)
        self.outlet_of_tx: dict[str | int, int] = {}  # transaction id -> connector/EVSE
        self._ids = 0
        self.deadline = 0.0  # loop time by which the call in flight must be answered
        self._boot_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._retry_attempt = 0
        self._setup_task: asyncio.Task[None] | None = None
        self.relay: StationRelay | None = None  # set when a CSMS is configured

    # -- lifecycle ---------------------------------------------------------------

    def arm_boot_wait(self, delay_s: float) -> None:
        self._boot_timer = asyncio.get_running_loop().call_later(delay_s, self._boot_wait_over)

    def _boot_wait_over(self) -> None:
        self._boot_timer = None
        if not self.opened and not self.closed:
            log.info("%s: no BootNotification within boot_wait_s, setting it up anyway", self.station_id)
            self.open_session(boot=False)

    def open_session(self, boot: bool) -> None:
        """Start (or restart, on a new boot) discovery, profile installation and metering setup."""
        self.opened = True
        if self._boot_timer is not None:
            self._boot_timer.cancel()
            self._boot_timer = None
        if self._setup_task is not None and not self._setup_task.done():
            self._setup_task.cancel()
        self._setup_task = asyncio.get_running_loop().create_task(self._set_up(boot))
        self.server.wake(self)

    def close(self) -> None:
        """The socket is gone: fail what is pending, stop every timer."""
        self.closed = True
        for timer in (self._boot_timer, self._retry_timer):
            if timer is not None:
                timer.cancel()
        if self._setup_task is not None:
            self._setup_task.cancel()
        pending = ([self.inflight] if self.inflight is not None else []) + list(self.queue)
        self.inflight = self.inflight_id = None
        self.queue.clear()
        for call in pending:
            call.on_done(CallOutcome(None, CallFailure.CLOSED, "connection closed"))

    # -- the central side's calls ------------------------------------------------

    def call(self, action: str, payload: dict[str, Any]) -> asyncio.Future[CallOutcome]:
        """Queue a gateway call; the future resolves with its outcome (never raises)."""
        future: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()

        def done(outcome: CallOutcome) -> None:
            if not future.done():
                future.set_result(outcome)

        if self.closed:
            future.set_result(CallOutcome(None, CallFailure.CLOSED, "connection closed"))
            return future
        self.queue.append(OutgoingCall(action, payload, done))
        self.server.wake(self)
        return future

    def set_limit(self, decision: ApplyStationLimit) -> None:
        """The core's latest allocation replaces whatever was waiting (coalescing)."""
        self.limit = decision
        self.limit_dirty = True
        self._retry_attempt = 0
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        self.server.wake(self)

    def next_frame(self) -> bytes | None:
        """The next CALL to put on the wire, or None; called by the server's send loop."""
        if self.inflight is not None or self.closed or not self.opened:
            return None
        while True:
            call = self._next_limit_call() if self.limit_dirty and self.caps is not None else None
            if call is None:
                if not self.queue:
                    return None
                call = self.queue.popleft()
            encoded = call.encoded
            if encoded is None and call.raw_frame is None:
                try:
                    schemas.validate(self.version, call.action, call.payload, request=True)
                except OcppViolation as exc:  # our own payload: a bug, never sent invalid
                    log.error("%s: not sending invalid %s: %s", self.station_id, call.action, exc)
                    call.on_done(CallOutcome(None, CallFailure.INVALID_RESPONSE, str(exc)))
                    continue
                encoded = orjson.dumps(call.payload)
            self._ids += 1
            unique_id = call.unique_id or f"{GATEWAY_ID_PREFIX}{self._ids}"
            self.inflight, self.inflight_id = call, unique_id
            # No timer per call (thousands in a fan-out): the server's sweep checks deadlines.
            self.deadline = self.server.loop_time() + self.server.call_timeout_s
            self.server.metrics.sent(call.action)
            if call.raw_frame is not None:
                return call.raw_frame
            assert encoded is not None
            return codec.encode_call_raw(unique_id, call.action, encoded)

    def _finish_inflight(self, outcome: CallOutcome) -> Event | None:
        call = self.inflight
        assert call is not None
        self.inflight = self.inflight_id = None
        event = call.on_done(outcome)
        self.server.wake(self)
        return event

    def check_deadline(self, now: float) -> None:
        """Called by the server's sweep: give up on a call the station left unanswered."""
        if self.inflight is None or now < self.deadline:
            return
        action = self.inflight.action if self.inflight else "?"
        log.warning("%s: no answer to %s within %gs", self.station_id, action, self.server.call_timeout_s)
        event = self._finish_inflight(CallOutcome(None, CallFailure.TIMEOUT, "no answer in time"))
        if event is not None:
            self.server.submit_soon(event)

    # -- the limit slot ----------------------------------------------------------

    def _next_limit_call(self) -> OutgoingCall | None:
        limit, caps = self.limit, self.caps
        assert limit is not None and caps is not None
        if limit.seq != self.live_done_seq:
            level, value_w = ProfileLevel.LIVE, limit.limit_w
        elif limit.fallback_w != self.fallback_installed_w:
            level, value_w = ProfileLevel.FALLBACK, limit.fallback_w
        else:
            self.limit_dirty = False
            return None
        payload, encoded = self.server.profile_payload(
            self.version, level, value_w, caps, limit.valid_until_s
        )
        return OutgoingCall(
            "SetChargingProfile",
            payload,
            lambda outcome: self._profile_done(limit, level, outcome),
            None,
            encoded,
        )

    def _profile_done(
        self, limit: ApplyStationLimit, level: ProfileLevel, outcome: CallOutcome
    ) -> Event | None:
        if outcome.failure is CallFailure.CLOSED:
            return None  # the core hears StationDisconnected instead
        status = outcome.payload.get("status") if outcome.payload is not None else None
        if status == "Accepted":
            if level is ProfileLevel.LIVE:
                self.live_done_seq = limit.seq
            else:
                self.fallback_installed_w = limit.fallback_w
            if self.live_done_seq == limit.seq and self.fallback_installed_w == limit.fallback_w:
                # The station holds this allocation whole: the core's ledger wants to know,
                # even if a newer one has replaced it meanwhile (it supersedes older ones).
                if self.limit is limit:
                    self.limit_dirty = False
                    self._retry_attempt = 0
                return self._report(limit.seq, ProfileOutcome.ACCEPTED)
            return None  # the other level goes next
        result = ProfileOutcome.REJECTED if outcome.failure is None else _PROFILE_OUTCOME[outcome.failure]
        log.warning(
            "%s: %s profile %.1f W refused (%s %s)",
            self.station_id,
            level,
            limit.limit_w if level is ProfileLevel.LIVE else limit.fallback_w,
            result,
            printable(status or outcome.detail),  # the station's CALLERROR text, escaped and bounded
        )
        if self.limit is limit:
            self.limit_dirty = False
            delay_s = retry_delay_s(self._retry_attempt, self.server.retry_base_s)
            self._retry_attempt += 1
            self._retry_timer = asyncio.get_running_loop().call_later(delay_s, self._retry, limit.seq)
        return self._report(limit.seq, result)

    def _retry(self, seq: int) -> None:
        self._retry_timer = None
        if not self.closed and self.limit is not None and self.limit.seq == seq:
            self.limit_dirty = True
            self.server.wake(self)

    def _report(self, seq: int, outcome: ProfileOutcome) -> Event | None:
        # A refresh accepted again changes nothing in the core: do not make it look.
        if self.last_report == (seq, outcome):
            return None
        self.last_report = (seq, outcome)
        return ProfileResult(self.station_id, seq, outcome)

    # -- reading -----------------------------------------------------------------

    async def serve(self) -> None:
        """Read frames until the socket closes."""
        ws = self.ws
        try:
            while True:
                data = await ws.recv()
                if isinstance(data, bytes):  # OCPP-J runs on text frames only
                    await self._send_error(
                        codec.UNKNOWN_ID, ErrorKind.RPC_FRAMEWORK, "OCPP-J uses text frames"
                    )
                    continue
                try:
                    await self.on_frame(data)
                except ConnectionClosed:
                    raise
                except Exception:  # noqa: BLE001 - a bug of ours must not cost the station its connection
                    self.server.peer_log.log(
                        log, logging.ERROR, self.station_id, "frame not handled", "%s", data, exc_info=True
                    )
        except ConnectionClosed:
            pass

    async def on_frame(self, data: str) -> None:
        frame = codec.parse_frame(data)
        if type(frame) is Call:
            if self.relay is not None:
                self.relay.station_call(frame, data)  # in order, without holding up this reader
            else:
                await self._on_call(frame)
        elif type(frame) is CallResult or type(frame) is CallError:
            await self._on_reply(frame, data)
        else:
            assert isinstance(frame, FrameError)
            self.server.peer_log.log(
                log, logging.INFO, self.station_id, "malformed frame", "%s: %s", frame.description, data
            )
            await self._send_error(frame.unique_id, frame.kind, frame.description)

    async def _send_error(self, unique_id: str, kind: ErrorKind, description: str) -> None:
        code = self.rules.ERROR_CODES[kind]
        self.server.metrics.call_errors_sent.labels(code).inc()
        try:
            await self.ws.send(codec.encode_error(unique_id, code, description), text=True)
        except ConnectionClosed:
            pass

    async def _on_reply(self, frame: CallResult | CallError, data: str = "") -> None:
        if frame.unique_id != self.inflight_id or self.inflight is None:
            self.server.peer_log.log(
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
                schemas.validate(self.version, self.inflight.action, frame.payload, request=False)
                outcome = CallOutcome(frame.payload, raw=data)
            except OcppViolation as exc:
                self.server.peer_log.log(log, logging.WARNING, self.station_id, "invalid answer", "%s", exc)
                outcome = CallOutcome(None, CallFailure.INVALID_RESPONSE, exc.description, raw=data)
        event = self._finish_inflight(outcome)
        if event is not None:
            await self.server.runtime.submit(event)

    async def answer_locally(self, call: Call) -> dict[str, Any] | None:
        """Answer as a standalone central system (no CSMS, or the CSMS is away); the answer sent."""
        return await self._on_call(call)

    async def after_relayed(self, call: Call, response: dict[str, Any]) -> None:
        """The CSMS answered a relayed call: feed the core (meters) and the session as if local."""
        self.server.metrics.received(call.action)
        await self._after_call(call, response)

    async def _on_call(self, call: Call) -> dict[str, Any] | None:
        server = self.server
        try:
            if call.action not in self.served and call.action in schemas.known_actions(self.version):
                # A central system's action (Reset, SetChargingProfile ...) sent by a station.
                raise OcppViolation(
                    ErrorKind.NOT_SUPPORTED, f"{call.action} is not served by this central system"
                )
            schemas.validate(self.version, call.action, call.payload, request=True)
            response = server.answers.answer(self.rules, call.action, call.payload, server.clock())
        except OcppViolation as exc:
            # Once, bounded: the description names the action already (2 MB of it, maybe).
            text = exc.description if exc.description.startswith(call.action) else f"{call.action}: {exc}"
            self.server.peer_log.log(log, logging.INFO, self.station_id, "call refused", "%s", text)
            await self._send_error(call.unique_id, exc.kind, exc.description)
            return None
        except Exception:  # a bug of ours must not cost the station its connection
            log.exception("%s: answering %s failed", self.station_id, call.action)
            await self._send_error(call.unique_id, ErrorKind.INTERNAL, "internal error")
            return None
        try:
            schemas.validate(self.version, call.action, response, request=False)
        except OcppViolation as exc:
            log.error("%s: our %s answer is invalid: %s", self.station_id, call.action, exc)
            await self._send_error(call.unique_id, ErrorKind.INTERNAL, "internal error")
            return None
        server.metrics.received(call.action)
        frame = codec.encode_result(call.unique_id, response)
        if not send_now(self.ws, frame):
            try:
                await self.ws.send(frame, text=True)
            except ConnectionClosed:
                return None
        await self._after_call(call, response)
        return response

    async def _after_call(self, call: Call, response: dict[str, Any]) -> None:
        """What a station's call means for the core and for the session (after answering it)."""
        if call.action == "BootNotification":
            log.info("%s: booted (%s)", self.station_id, self.version.value)
            self.open_session(boot=True)
            return
        if not self.opened:
            self.open_session(boot=False)  # it talks, so it has booted before: set it up
        observation = self.rules.observe(call.action, call.payload, response)
        if observation is not None:
            await self._observed(observation)

    async def _observed(self, observation: Observation) -> None:
        """What the station's call means for the core: is an EV charging, what it draws."""
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
            await self.server.runtime.submit(StationActivity(self.station_id, charging))
        if watts is not None:
            await self.server.runtime.submit(MeterSampled(self.station_id, self.meter.update(outlet, watts)))

    # -- setup -------------------------------------------------------------------

    async def _set_up(self, boot: bool) -> None:
        server = self.server
        try:
            caps = None if boot else server.known_caps.get(self.station_id)
            if caps is None:
                action, payload = self.rules.discovery_request()
                outcome = await self.call(action, payload)
                if outcome.failure is CallFailure.CLOSED:
                    return
                discovered = self.rules.parse_discovery(outcome.payload) if outcome.payload else Discovered()
                caps = server.station_caps(self.station_id, discovered)
                server.known_caps[self.station_id] = caps
                log.info(
                    "%s: profiles in %s, %d phases, stack levels up to %s",
                    self.station_id,
                    caps.rate_unit,
                    caps.phases,
                    caps.max_stack_level,
                )
            # (Re)apply both levels: after a reconnect or boot nothing on the station is assumed.
            self.caps = caps
            self.live_done_seq = -1
            self.fallback_installed_w = None
            self.last_report = None
            if self.limit is not None:
                self.limit_dirty = True
                server.wake(self)
            if server.configure_metering:
                await self._configure_metering(server.metering_plan)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: setup failed", self.station_id)

    async def _apply(self, settings: list[Setting]) -> list[bool]:
        outcomes = [await self.call(a, p) for a, p in self.rules.setting_requests(settings)]
        return self.rules.accepted_settings(settings, [o.payload or {} for o in outcomes])

    async def _configure_metering(self, plan: MeteringPlan) -> None:
        settings = self.rules.metering_settings(plan, plan.measurands)
        for setting, accepted in zip(settings, await self._apply(settings), strict=True):
            if accepted or self.closed:
                continue
            if not setting.measurands or len(plan.measurands) < 2:
                log.warning("%s: station refused %s=%s", self.station_id, setting.name, setting.value)
                continue
            # Keep what the station does measure: try each measurand alone, then set those together.
            kept: list[str] = []
            for measurand in plan.measurands:
                single = Setting(setting.component, setting.name, measurand, measurands=True)
                if (await self._apply([single]))[0]:
                    kept.append(measurand)
            if len(kept) > 1:
                together = Setting(setting.component, setting.name, ",".join(kept), measurands=True)
                if not (await self._apply([together]))[0]:
                    kept = kept[-1:]  # the last single one set is still in place
            log.warning(
                "%s: %s keeps %s of %s", self.station_id, setting.name, kept or "nothing", plan.measurands
            )
