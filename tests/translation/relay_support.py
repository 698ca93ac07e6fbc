"""The translated relay on loopback: a real core and station server, 1.6 library stations, and a
strict 2.0.1 library CSMS (``ocpp.v201.ChargePoint`` on a websockets server), every frame of
both wires recorded so a test can check each against the official schemas."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import call_result as result16
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect

from gateway.config import Config, parse_config
from gateway.core.model import OcppVersion
from gateway.runtime import CoreRuntime
from ocpp_side import schemas
from ocpp_side.codec import OcppViolation
from ocpp_side.server import StationServer
from scenarios.sim_csms import Central201 as SimCentral201
from tests.ocpp.stations import Behaviour, running
from tests.relay.conftest import RecordingWs, RelayStation16
from tests.support.loopback import StationSite, start_core

WAIT_S = 5.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Wire:
    """One websocket message as it crossed the CSMS's wire."""

    station_id: str
    direction: str  # "in": to the CSMS, "out": from the CSMS
    raw: str

    @property
    def message(self) -> list[Any]:
        value: list[Any] = json.loads(self.raw)
        return value

    @property
    def action(self) -> str | None:
        msg = self.message
        return str(msg[2]) if msg[0] == 2 else None

    @property
    def payload(self) -> dict[str, Any]:
        msg = self.message
        payload: dict[str, Any] = msg[3] if msg[0] == 2 else msg[2]
        return payload


@dataclass
class CsmsBehaviour:
    boot_status: list[str] = field(default_factory=list)  # answers to boots, in turn; then Accepted
    boot_interval_s: int = 300


class Central201(SimCentral201):
    """The sim CSMS's 2.0.1 central system, its boot answers as the test says."""

    def __init__(self, station_id: str, connection: Any, behaviour: CsmsBehaviour) -> None:
        super().__init__(station_id, connection, behaviour.boot_interval_s)
        self._response_timeout = WAIT_S
        self.behaviour = behaviour

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        status = self.behaviour.boot_status.pop(0) if self.behaviour.boot_status else "Accepted"
        interval = self.behaviour.boot_interval_s
        return result201.BootNotification(current_time=now_iso(), interval=interval, status=status)


class _Recording:
    def __init__(self, ws: Any, station_id: str, csms: Csms201) -> None:
        self._ws, self._station_id, self._csms = ws, station_id, csms

    async def recv(self) -> str:
        raw = await self._ws.recv()
        text = raw if isinstance(raw, str) else raw.decode()
        self._csms.record(Wire(self._station_id, "in", text))
        return text

    async def send(self, message: str) -> None:
        self._csms.record(Wire(self._station_id, "out", message))
        await self._ws.send(message)


class Csms201:
    """Serves ``ws://127.0.0.1:{port}/{station_id}`` in ``ocpp2.0.1`` only; stop and start keep the port."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, password: str | None = None) -> None:
        self.ssl_context = ssl_context  # wss (security profiles 2 and 3)
        self.password = password  # Basic Auth required, user = the station id (profiles 1 and 2)
        self.peers: list[tuple[str | None, list[str]]] = []  # (Basic Auth user, client cert CNs) accepted
        self.refused: list[int] = []  # HTTP statuses of refused handshakes
        self.port = 0
        self.frames: list[Wire] = []
        self.behaviour = CsmsBehaviour()
        self.stations: dict[str, Central201] = {}
        self.subprotocols: list[str] = []
        self._changed = asyncio.Condition()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await websockets.serve(
            self._handle,
            "127.0.0.1",
            self.port,
            subprotocols=[websockets.Subprotocol("ocpp2.0.1")],
            compression=None,
            ssl=self.ssl_context,
            process_request=self._check,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), WAIT_S)
            self._server = None

    def record(self, wire: Wire) -> None:
        self.frames.append(wire)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def of(self, station_id: str, direction: str | None = None) -> list[Wire]:
        return [f for f in self.frames if f.station_id == station_id and direction in (None, f.direction)]

    def calls_in(self, station_id: str, action: str | None = None) -> list[Wire]:
        """The CALLs the gateway sent for ``station_id`` (of ``action``), in order."""
        return [f for f in self.of(station_id, "in") if f.action is not None and action in (None, f.action)]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def call(self, station_id: str, payload: Any, suppress: bool = True) -> Any:
        """The station's answer; a CALLERROR raises unless ``suppress`` (then None)."""
        return await self.stations[station_id].call(payload, suppress=suppress)

    def _check(self, connection: Any, request: Any) -> Any:
        station_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        user: str | None = None
        if self.password is not None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            user, _, password = base64.b64decode(token or "").decode().partition(":")
            if scheme != "Basic" or user != station_id or password != self.password:
                self.refused.append(401)
                return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong credentials\n")
        peer = connection.transport.get_extra_info("peercert") if self.ssl_context else None
        names = [v for rdn in (peer or {}).get("subject", ()) for k, v in rdn if k == "commonName"]
        self.peers.append((user, names))
        return None

    async def _handle(self, ws: Any) -> None:
        station_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        self.subprotocols.append(str(ws.subprotocol))
        central = Central201(station_id, _Recording(ws, station_id, self), self.behaviour)
        self.stations[station_id] = central
        try:
            await central.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if self.stations.get(station_id) is central:
                del self.stations[station_id]
            await self._notify()


class Station16(RelayStation16):
    """A 1.6 library station answering what a translated CSMS asks of it."""

    config_keys: dict[str, str]

    @on("RemoteStartTransaction")
    async def on_remote_start(self, id_tag: str, **kwargs: Any) -> Any:
        await self.log.add("RemoteStartTransaction", {"id_tag": id_tag, **kwargs})
        return result16.RemoteStartTransaction(status="Accepted")

    @on("Reset")
    async def on_reset(self, type: str) -> Any:
        await self.log.add("Reset", {"type": type})
        return result16.Reset(status="Accepted")

    @on("GetConfiguration")
    async def on_get_configuration(self, key: list[str] | None = None) -> Any:
        await self.log.add("GetConfiguration", {"key": key})
        known = {
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargeProfileMaxStackLevel": "8",
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": "60",
        }
        keys = key or list(known)
        return result16.GetConfiguration(
            configuration_key=[{"key": k, "readonly": False, "value": known[k]} for k in keys if k in known],
            unknown_key=[k for k in keys if k not in known] or None,
        )


@contextlib.asynccontextmanager
async def station16(port: int, station_id: str) -> AsyncIterator[Station16]:
    """A 1.6 library station whose frames are recorded (``cp.wire``); closed on exit."""
    ws = await connect(f"ws://127.0.0.1:{port}/{station_id}", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
    rec = RecordingWs(ws)
    cp = Station16(station_id, rec, Behaviour())  # type: ignore[arg-type]
    cp.wire = rec
    async with running(cp, ws):
        yield cp


class Site(StationSite):
    def __init__(self, config: Config, runtime: CoreRuntime, server: StationServer, csms: Csms201) -> None:
        super().__init__(config, runtime, server)
        self.csms = csms
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.wait_for(self.server.stop(), 20)
        await asyncio.wait_for(self.runtime.close(), 10)

    def metric(self, name: str, **labels: str) -> float:
        value = self.runtime.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def site_config(tmp_path: Path, csms: Csms201, name: str, upstream: dict[str, Any] | None = None) -> Config:
    return parse_config(
        {
            "limits": {"initial_limit_w": 100000.0, "fallback_limit_w": 10000.0},
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0},
            "upstream": {
                "csms_url": csms.url,
                "csms_protocol": "ocpp2.0.1",
                "outbox_path": str(tmp_path / f"{name}-outbox.sqlite3"),
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
                "connect_wait_s": 2.0,
                "call_timeout_s": 2.0,
                **(upstream or {}),
            },
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / f"{name}-store.sqlite3")},
        }
    )


async def start_site(config: Config, csms: Csms201) -> Site:
    runtime = start_core(config)
    server = StationServer(config.ocpp, config.upstream, runtime)
    assert server.relay_hub is not None
    server.relay_hub.capacity_w = config.limits.max_limit_w  # as the composition root does
    await server.start()
    return Site(config, runtime, server, csms)


def schema_failures(frames: list[tuple[str, str]], version: OcppVersion) -> list[str]:
    """Every CALL and CALLRESULT among ``frames`` ((sender, raw)) checked against the official
    schemas of ``version``; what failed, and every CALLERROR seen, as text."""
    failures: list[str] = []
    actions: dict[tuple[str, str], str] = {}  # (caller, id) -> action
    for sender, raw in frames:
        msg = json.loads(raw)
        if msg[0] == 2:
            actions[(sender, msg[1])] = msg[2]
            try:
                schemas.validate(version, msg[2], msg[3], request=True)
            except OcppViolation as exc:
                failures.append(f"{sender} CALL {exc.description}")
    for sender, raw in frames:
        msg = json.loads(raw)
        if msg[0] == 2:
            continue
        action = next((a for (s, i), a in actions.items() if i == msg[1] and s != sender), None)
        if msg[0] == 4:
            failures.append(f"{sender} CALLERROR {msg[2]} to {action}: {msg[3]}")
        elif action is None:
            failures.append(f"{sender} CALLRESULT to no call: {raw[:100]}")
        else:
            try:
                schemas.validate(version, action, msg[2], request=False)
            except OcppViolation as exc:
                failures.append(f"{sender} CALLRESULT {exc.description}")
    return failures


def csms_wire(csms: Csms201, station_id: str) -> list[tuple[str, str]]:
    return [("gateway" if f.direction == "in" else "csms", f.raw) for f in csms.of(station_id)]


def station_wire(cp: Station16) -> list[tuple[str, str]]:
    """The station's wire in order: what it sent and received, interleaved as recorded."""
    wire = cp.wire
    return [("station", m) for m in wire.sent] + [("gateway", m) for m in wire.received]
