"""A recording CSMS: accepts stations (or a relaying gateway) at ``/{station_id}``.

It negotiates ``ocpp2.0.1`` or ``ocpp1.6`` (or only the ones it is given: a CSMS that
speaks only ``ocpp2.0.1`` refuses any other offer with HTTP 400 and records the
refusal), answers the core station-initiated messages schema-valid (the ``ocpp``
library's strict validation on, as everywhere), records every frame in both directions
in arrival order with the subprotocol of its link, and lets a test or a scenario send
its own CALLs to a connected station. ``schema_failures`` checks every recorded frame
again against the library's official schemas, and counts every CALLERROR. It is the
upstream end for the relay issue and the central system the station simulator is
tested against.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import websockets
from ocpp.messages import get_validator
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201

log = logging.getLogger(__name__)

SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")


@dataclass(frozen=True, slots=True)
class Frame:
    """One websocket message as it crossed the wire."""

    at_s: float
    station_id: str
    direction: str  # "in" (from the station) or "out" (to the station)
    raw: str
    subprotocol: str = ""  # of the link it crossed: ocpp2.0.1 or ocpp1.6
    link: int = 0  # which connection it crossed (1, 2, ... in the order they opened)

    @property
    def message(self) -> list[Any] | None:
        try:
            value = json.loads(self.raw)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    @property
    def action(self) -> str | None:
        msg = self.message
        return str(msg[2]) if msg and msg[0] == 2 and len(msg) > 2 else None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Recording:
    """Wraps a server connection so the ocpp library's recv/send are recorded."""

    def __init__(self, ws: Any, station_id: str, csms: SimCsms) -> None:
        self._ws = ws
        self._station_id = station_id
        self._csms = csms
        self._subprotocol = str(ws.subprotocol)
        self._link = next(csms._links)

    async def recv(self) -> str:
        raw = await self._ws.recv()
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._csms._record(Frame(time.time(), self._station_id, "in", text, self._subprotocol, self._link))
        return text

    async def send(self, message: str) -> None:
        self._csms._record(
            Frame(time.time(), self._station_id, "out", message, self._subprotocol, self._link)
        )
        try:
            await self._ws.send(message)
        except websockets.exceptions.ConnectionClosed:
            self._csms._undelivered(self._station_id, message)
            raise


class _Central16(ChargePoint16):  # type: ignore[misc]
    _tx_ids = itertools.count(1)

    def __init__(self, station_id: str, connection: Any, heartbeat_s: int) -> None:
        super().__init__(station_id, connection, response_timeout=10)
        self.heartbeat_s = heartbeat_s

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return result16.BootNotification(
            current_time=_now_iso(), interval=self.heartbeat_s, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self) -> Any:
        return result16.Heartbeat(current_time=_now_iso())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on("StartTransaction")
    def on_start(self, **_: Any) -> Any:
        return result16.StartTransaction(
            transaction_id=next(self._tx_ids), id_tag_info={"status": "Accepted"}
        )

    @on("StopTransaction")
    def on_stop(self, **_: Any) -> Any:
        return result16.StopTransaction()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return result16.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return result16.DataTransfer(status="UnknownVendorId")

    @on("FirmwareStatusNotification")
    def on_firmware(self, **_: Any) -> Any:
        return result16.FirmwareStatusNotification()

    @on("DiagnosticsStatusNotification")
    def on_diagnostics(self, **_: Any) -> Any:
        return result16.DiagnosticsStatusNotification()


class Central201(ChargePoint201):  # type: ignore[misc]
    """A 2.0.1 central system for one station: every station message answered, Accepted
    (the ocpp library validates every payload both ways); the test suites reuse it."""

    def __init__(self, station_id: str, connection: Any, heartbeat_s: int) -> None:
        super().__init__(station_id, connection, response_timeout=10)
        self.heartbeat_s = heartbeat_s

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return result201.BootNotification(
            current_time=_now_iso(), interval=self.heartbeat_s, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result201.Heartbeat(current_time=_now_iso())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return result201.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def on_transaction_event(self, id_token: dict[str, Any] | None = None, **_: Any) -> Any:
        return result201.TransactionEvent(id_token_info={"status": "Accepted"} if id_token else None)

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return result201.MeterValues()

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return result201.NotifyReport()

    @on("NotifyEvent")
    def on_notify_event(self, **_: Any) -> Any:
        return result201.NotifyEvent()

    @on("NotifyChargingLimit")
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return result201.NotifyChargingLimit()

    @on("ClearedChargingLimit")
    def on_cleared_charging_limit(self, **_: Any) -> Any:
        return result201.ClearedChargingLimit()

    @on("ReservationStatusUpdate")
    def on_reservation_status_update(self, **_: Any) -> Any:
        return result201.ReservationStatusUpdate()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> Any:
        return result201.SecurityEventNotification()

    @on("FirmwareStatusNotification")
    def on_firmware(self, **_: Any) -> Any:
        return result201.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **_: Any) -> Any:
        return result201.LogStatusNotification()

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return result201.DataTransfer(status="UnknownVendorId")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handshake the CSMS refused: no subprotocol it speaks was offered."""

    at_s: float
    station_id: str
    offered: str  # the Sec-WebSocket-Protocol header as sent ("" when none)


_VERSION = {"ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}  # subprotocol -> the ocpp library's name


class SimCsms:
    """Serve ``ws://host:port/{station_id}``; ``port=0`` lets the OS choose (see ``.port``).

    ``subprotocols``: what it speaks, in order of preference (``("ocpp2.0.1",)``: a CSMS
    that manages only 2.0.1 stations; any other offer is refused, see ``refused``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_s: int = 300,
        subprotocols: Sequence[str] = SUBPROTOCOLS,
    ) -> None:
        unknown = [p for p in subprotocols if p not in SUBPROTOCOLS]
        if unknown or not subprotocols:
            raise ValueError(f"subprotocols must be among {', '.join(SUBPROTOCOLS)}, got {subprotocols}")
        self.host = host
        self.port = port
        self.heartbeat_s = heartbeat_s
        self.speaks = tuple(subprotocols)
        self.refused: list[Refusal] = []
        self.frames: list[Frame] = []
        # (station id, message id) of what it sent on a link already closing: never delivered
        # (an answer lost so: the gateway is right to send that call again)
        self.undelivered: set[tuple[str, str]] = set()
        self._links = itertools.count(1)
        self.stations: dict[str, _Central16 | Central201] = {}
        self.subprotocols: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._server: Any = None
        self._listeners: list[Callable[[Frame], None]] = []

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def add_listener(self, listener: Callable[[Frame], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        self._server = await websockets.serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[websockets.Subprotocol(p) for p in self.speaks],
            compression=None,
            process_request=self._check_offer,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("CSMS simulator listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None

    async def call(self, station_id: str, payload: Any, suppress: bool = False) -> Any:
        """Send one CALL to a connected station and return its CALLRESULT (a CallError raises)."""
        return await self.stations[station_id].call(payload, suppress=suppress)

    def frames_of(self, station_id: str, direction: str | None = None) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f.station_id == station_id and (direction is None or f.direction == direction)
        ]

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout_s: float, start: int = 0) -> Frame:
        """The first recorded frame (from index ``start``) matching ``predicate``, waiting if needed."""

        async def scan() -> Frame:
            index = start
            while True:
                while index < len(self.frames):
                    frame = self.frames[index]
                    index += 1
                    if predicate(frame):
                        return frame
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout=timeout_s)

    def limits_told(self) -> dict[str, float | None]:
        """Per station, the limit in W its latest ``NotifyChargingLimit`` told (the first
        period of its first schedule; NaN when not in W), or None after a
        ``ClearedChargingLimit``."""
        told: dict[str, float | None] = {}
        for frame in self.frames:
            msg = frame.message
            if frame.direction != "in" or msg is None or len(msg) < 4 or not isinstance(msg[3], dict):
                continue
            if frame.action == "ClearedChargingLimit":
                told[frame.station_id] = None
            elif frame.action == "NotifyChargingLimit":
                told[frame.station_id] = _first_limit_w(msg[3])
        return told

    def schema_failures(self, station_id: str | None = None) -> list[str]:
        """Every recorded CALL and CALLRESULT (of ``station_id``, else of all) checked again
        against the ``ocpp`` library's official schemas of its link's version, every
        CALLERROR either way, and an answer to no call: what failed, as text (empty: all
        valid). Message ids: ``reused_ids``."""
        failures: list[str] = []
        pending: dict[tuple[str, str, str], str] = {}  # (station, caller, message id) -> action
        for frame in self.frames:
            if station_id is not None and frame.station_id != station_id:
                continue
            msg = frame.message
            who = f"{frame.station_id} {'->' if frame.direction == 'in' else '<-'} CSMS"
            version = _VERSION.get(frame.subprotocol)
            if msg is None or len(msg) < 3 or msg[0] not in (2, 3, 4) or version is None:
                failures.append(f"{who}: not an OCPP-J message: {frame.raw[:80]}")
                continue
            call_key = (frame.station_id, _peer(frame.direction), str(msg[1]))  # for an answer
            if msg[0] == 4:
                action = pending.pop(call_key, "?")
                failures.append(f"{who}: CALLERROR {msg[2]} to {action}: {msg[3] if len(msg) > 3 else ''}")
                continue
            if msg[0] == 2:
                if len(msg) < 4:
                    failures.append(f"{who}: CALL without a payload: {frame.raw[:80]}")
                    continue
                action, payload = str(msg[2]), msg[3]
                pending[(frame.station_id, frame.direction, str(msg[1]))] = action
                kind = 2
            else:
                called = pending.pop(call_key, None)
                if called is None:
                    failures.append(f"{who}: CALLRESULT to no call: {frame.raw[:80]}")
                    continue
                action, payload, kind = called, msg[2], 3
            try:
                errors = list(_validator(kind, action, version).iter_errors(_exact(payload, action, version)))
            except OSError:
                errors = [f"no {version} schema for {action}"]
            for error in errors[:1]:
                what = "CALL" if kind == 2 else "CALLRESULT"
                failures.append(f"{who}: {what} {action} invalid: {getattr(error, 'message', error)}")
        return failures

    def reused_ids(self, station_id: str | None = None) -> list[str]:
        """CALLs to the CSMS under a message id their identity used before for a CALL.

        OCPP 2.0.1 (Part 4, Edition 3, 4.1.4): an id MUST differ from every id the sender
        used before on any connection of the same identity, retries included; OCPP 1.6J
        asks it on the same connection only. Each reuse says where the earlier call was and
        whether its answer reached the sender (lost on a closing link: the reuse is a retry).
        """
        found: list[str] = []
        first: dict[tuple[str, str], Frame] = {}  # (station, message id) -> the call that used it
        for frame in self.frames:
            msg = frame.message
            if station_id not in (None, frame.station_id) or frame.direction != "in" or frame.action is None:
                continue
            assert msg is not None
            key = (frame.station_id, str(msg[1]))
            earlier = first.get(key)
            if earlier is None or (frame.subprotocol == "ocpp1.6" and earlier.link != frame.link):
                first[key] = frame
                continue
            where = "this connection" if earlier.link == frame.link else "an earlier connection"
            answer = "lost: a retry" if key in self.undelivered else "delivered"
            found.append(
                f"{frame.station_id} -> CSMS: {frame.action} under id {msg[1]}, used for {earlier.action}"
                f" on {where} (its answer {answer})"
            )
        return found

    def _check_offer(self, connection: Any, request: Any) -> Any:
        """Refuse (HTTP 400) a handshake offering none of ``speaks``, and record it."""
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        names = {p.strip() for p in offered.split(",") if p.strip()}
        if names & set(self.speaks):
            return None
        station_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        self.refused.append(Refusal(time.time(), station_id, offered))
        log.warning("CSMS simulator: %s refused: offered %r, speaks %s", station_id, offered, self.speaks)
        return connection.respond(HTTPStatus.BAD_REQUEST, f"this CSMS speaks only {', '.join(self.speaks)}\n")

    def _undelivered(self, station_id: str, raw: str) -> None:
        msg = Frame(0.0, station_id, "out", raw).message
        if msg is not None and len(msg) > 1:
            self.undelivered.add((station_id, str(msg[1])))

    def _record(self, frame: Frame) -> None:
        self.frames.append(frame)
        self._changed.set()
        for listener in self._listeners:
            try:
                listener(frame)
            except Exception:
                log.exception("frame listener failed")

    async def _handle(self, ws: Any) -> None:
        path = ws.request.path
        station_id = path.rstrip("/").rsplit("/", 1)[-1]
        if not station_id or ws.subprotocol is None:
            await ws.close(1002, "no station id or no OCPP subprotocol")
            return
        connection = _Recording(ws, station_id, self)
        central: _Central16 | Central201
        if ws.subprotocol == "ocpp1.6":
            central = _Central16(station_id, connection, self.heartbeat_s)
        else:
            central = Central201(station_id, connection, self.heartbeat_s)
        self.stations[station_id] = central
        self.subprotocols[station_id] = str(ws.subprotocol)
        log.info("CSMS simulator: %s connected (%s)", station_id, ws.subprotocol)
        try:
            await central.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if self.stations.get(station_id) is central:
                del self.stations[station_id]
            log.info("CSMS simulator: %s disconnected", station_id)


# The 1.6 schemas with a multipleOf on a float: the library checks these with Decimals.
_DECIMAL_16 = frozenset({"SetChargingProfile", "RemoteStartTransaction", "GetCompositeSchedule"})


def _validator(kind: int, action: str, version: str) -> Any:
    if version == "1.6" and action in _DECIMAL_16:
        return get_validator(kind, action, version, parse_float=decimal.Decimal)
    return get_validator(kind, action, version)


def _exact(payload: Any, action: str, version: str) -> Any:
    """The payload as the library validates it (1.6 floats of ``_DECIMAL_16`` as Decimals)."""
    if version == "1.6" and action in _DECIMAL_16:
        return json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    return payload


def _first_limit_w(payload: dict[str, Any]) -> float:
    try:
        schedule = payload["chargingSchedule"][0]
        limit = float(schedule["chargingSchedulePeriod"][0]["limit"])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.nan
    return limit if schedule.get("chargingRateUnit") == "W" else math.nan


def _peer(direction: str) -> str:
    """The direction of the frames the other side sends."""
    return "out" if direction == "in" else "in"
