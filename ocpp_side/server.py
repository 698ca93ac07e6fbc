"""The station-facing websocket server: handshake checks, the connection registry, one send loop.

``StationServer(config, upstream, runtime)`` with ``start()``, ``stop()`` and ``port``.
It listens on ``ws://{listen_host}:{port}/{station_id}`` (wss with TLS), negotiates an
OCPP version by subprotocol (``versions.SUBPROTOCOLS``) and refuses anything else at
the handshake. Each accepted socket gets a pure ``StationSession`` (built from one shared
``SessionContext``) inside a ``StationConnection`` shell. Decisions from the core arrive
through ``runtime.add_listener``; every allocation goes into its station's limit slot and
the single send loop asks the stations that have work for their frames.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import math
import ssl
from collections import deque
from collections.abc import Coroutine, Sequence
from http import HTTPStatus
from typing import Any

from prometheus_client import Counter
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.core.decisions import ApplyStationLimit, Decision
from gateway.core.events import StationConnected, StationDisconnected
from gateway.core.model import OcppVersion
from gateway.errors import StartupError
from gateway.runtime import CoreRuntime
from ocpp_side import schemas
from ocpp_side.answers import StandaloneAnswers
from ocpp_side.connection import ShellContext, StationConnection
from ocpp_side.gc_tuning import LongLivedObjects
from ocpp_side.legacy.listener import LegacyListener, LegacyMetrics
from ocpp_side.limit_slot import ProfileBook
from ocpp_side.peer_log import PeerLog, printable
from ocpp_side.profiles import ProfileSettings, RateUnit, StationCaps
from ocpp_side.relay import RelayHub
from ocpp_side.session import SessionContext, StationSession
from ocpp_side.settings import LegacyConfig, OcppConfig, UpstreamConfig
from ocpp_side.station_id import BadStationId, parse_station_id, station_id_from_path
from ocpp_side.station_setup import Discovered, MeteringPlan
from ocpp_side.versions import SUBPROTOCOLS, rules_for
from ocpp_side.wire import send_now

log = logging.getLogger(__name__)

_HOT_ACTIONS = (
    "BootNotification",
    "Heartbeat",
    "StatusNotification",
    "MeterValues",
    "TransactionEvent",
    "SetChargingProfile",
    "ChangeConfiguration",
    "GetConfiguration",
    "SetVariables",
    "GetVariables",
)
# Every reason ``_refuse`` is given (bad_path and bad_station_id come from station_id.py).
HANDSHAKE_REFUSALS = ("bad_path", "bad_station_id", "unknown_station", "bad_credentials", "bad_certificate")
_FRAMES_PER_TURN = 256  # stations the send loop serves before it yields to the event loop
_BLOCKED_SEND_BYTES = 64 * 1024  # a station this far behind on reading gets its own send task


class OcppMetrics:
    def __init__(self, runtime: CoreRuntime) -> None:
        r = runtime.metrics.registry
        self.calls_received = Counter(
            "ocpp809_ocpp_calls_received", "Station calls answered, by action", ["action"], registry=r
        )
        self.calls_sent = Counter(
            "ocpp809_ocpp_calls_sent", "Gateway calls sent to stations, by action", ["action"], registry=r
        )
        self.call_errors_sent = Counter(
            "ocpp809_ocpp_call_errors_sent", "CALLERRORs sent to stations, by code", ["code"], registry=r
        )
        self.handshakes_refused = Counter(
            "ocpp809_ocpp_handshakes_refused", "Refused station handshakes", ["reason"], registry=r
        )
        self._received: dict[str, Any] = {}
        self._sent: dict[str, Any] = {}
        # Known labels start at zero: a rate over a series that does not exist yet is no rate.
        for reason in HANDSHAKE_REFUSALS:
            self.handshakes_refused.labels(reason)
        for code in sorted({c for v in OcppVersion for c in rules_for(v).ERROR_CODES.values()}):
            self.call_errors_sent.labels(code)

    # Bound children cached per action: labels() costs a lock and a tuple per call.
    def received(self, action: str) -> None:
        child = self._received.get(action)
        if child is None:
            child = self._received[action] = self.calls_received.labels(action)
        child.inc()

    def sent(self, action: str) -> None:
        child = self._sent.get(action)
        if child is None:
            child = self._sent[action] = self.calls_sent.labels(action)
        child.inc()

    def error_sent(self, code: str) -> None:
        self.call_errors_sent.labels(code).inc()


def _basic_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class StationServer:
    """The OCPP server toward the stations; see the module docstring."""

    def __init__(
        self,
        config: OcppConfig,
        upstream: UpstreamConfig | None,
        runtime: CoreRuntime,
        legacy: LegacyConfig | None = None,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.runtime = runtime
        self.clock = runtime.clock
        self.metrics = OcppMetrics(runtime)
        self.peer_log = PeerLog()  # what peers make us log: bounded, escaped, rate-limited
        tags = config.local_id_tags if config.authorize == "local_list" else None
        self.known_caps: dict[str, StationCaps] = {}  # discovery survives reconnects, not boots
        self.session_context = SessionContext(
            call_timeout_s=config.call_timeout_s,
            retry_base_s=config.profile_retry_base_s,
            boot_wait_s=config.boot_wait_s,
            configure_metering=config.configure_metering,
            metering_plan=MeteringPlan(
                config.meter_sample_interval_s, config.clock_aligned_interval_s, config.measurands
            ),
            caps_for=self.station_caps,
            known_caps=self.known_caps,
            profiles=ProfileBook(
                ProfileSettings(
                    config.live_profile_id,
                    config.fallback_profile_id,
                    config.live_stack_level,
                    config.fallback_stack_level,
                )
            ),
            answers=StandaloneAnswers(
                config.heartbeat_interval_s, tags, first_transaction_id=int(self.clock()) & 0x3FFFFFFF
            ),
            peer_log=self.peer_log,
            metrics=self.metrics,
        )
        self._shell = ShellContext(runtime, self.wake, self._spawn, self.peer_log, self._horizon)
        # Every connection's deadline is looked at once per sweep; those due before the next
        # sweep get a timer each. Answers are due call_timeout_s after a call: in a fan-out
        # that is thousands of deadlines, and none of them costs a timer.
        self._sweep_s = config.call_timeout_s / 4
        self._next_sweep_s = -math.inf
        self._sweeper: asyncio.TimerHandle | None = None
        self.connections: dict[str, StationConnection] = {}
        self._ready: deque[StationConnection] = deque()
        self._wakeup = asyncio.Event()
        self._server: Server | None = None
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._jobs_added = False
        self.heap = LongLivedObjects()
        runtime.add_listener(self._on_decisions)  # before the relay's: the slot moves, then the CSMS caps
        self.relay_hub: RelayHub | None = None  # with a CSMS: the Local Controller relay
        if upstream is not None and upstream.csms_url:
            self.relay_hub = RelayHub(config, upstream, runtime)
        self.legacy: LegacyListener | None = None  # Series 4 units: a hello line, then 1.6
        legacy_metrics = LegacyMetrics(runtime.metrics.registry)
        if legacy is not None and legacy.enabled:
            self.legacy = LegacyListener(
                legacy, config, self.session_context, legacy_metrics, self.peer_log, self.clock
            )

    # -- public ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when configured with port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def legacy_port(self) -> int:
        """The legacy listener's bound port."""
        assert self.legacy is not None, "no legacy listener"
        return self.legacy.port

    async def start(self) -> None:
        """Listen; a listener that cannot start stops what did and raises (``StartupError`` for
        the legacy one, which names itself: the caller names the main one)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        for version in OcppVersion:
            schemas.warm_up(version, tuple(a for a in _HOT_ACTIONS if a in schemas.known_actions(version)))
        if self.relay_hub is not None:
            await self.relay_hub.start()
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name="ocpp-send-loop")
        self._server = await serve(
            self._handle,
            self.config.listen_host,
            self.config.port,
            subprotocols=SUBPROTOCOLS,  # type: ignore[arg-type]
            process_request=self._process_request,
            compression=None,  # per-message deflate triples the memory per connection
            ssl=self._ssl_context(),
            max_size=self.config.max_message_bytes,
            open_timeout=self.config.handshake_timeout_s,
        )
        self._sweep()
        if self.config.gc_freeze:
            self.runtime.scheduler.add_job(
                self._settle_heap, "interval", seconds=1.0, id="ocpp-gc-freeze", replace_existing=True
            )
        self._jobs_added = True
        scheme = "wss" if self.config.tls.enabled else "ws"
        log.info("OCPP server on %s://%s:%d/{station_id}", scheme, self.config.listen_host, self.port)
        if self.legacy is not None:
            try:
                await self.legacy.start(self._admit, self._serve_station, self._ssl_context())
            except OSError as exc:
                raise StartupError(f"{self.legacy.where}: {exc.strerror or exc}") from None

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._jobs_added:
            if self.runtime.scheduler.get_job("ocpp-gc-freeze") is not None:
                self.runtime.scheduler.remove_job("ocpp-gc-freeze")
            self._jobs_added = False
        if self.legacy is not None:
            await self.legacy.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.relay_hub is not None:
            await self.relay_hub.stop()
        for task in [self._sender, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *[t for t in [self._sender, *self._tasks] if t is not None], return_exceptions=True
        )
        self._sender = None
        self.heap.release()

    # -- used by the connections -------------------------------------------------

    def wake(self, conn: StationConnection) -> None:
        """``conn`` may have frames to send: put it in the send loop once."""
        if not conn.in_ready and conn.session.wants_to_send():
            conn.in_ready = True
            self._ready.append(conn)
            self._wakeup.set()

    def station_caps(self, station_id: str, discovered: Discovered) -> StationCaps:
        """The station's caps: its config entry over the site's, the unit discovered when "auto"."""
        cfg = self.config
        entry = cfg.stations.get(station_id)
        unit = entry.rate_unit if entry is not None and entry.rate_unit is not None else cfg.station_rate_unit
        if unit == "auto":
            rate_unit = discovered.preferred_unit() or RateUnit.A  # current is what every station takes
        else:
            rate_unit = RateUnit(unit)
        phases = entry.phases if entry is not None and entry.phases is not None else cfg.station_phases
        voltage = (
            entry.voltage_v if entry is not None and entry.voltage_v is not None else cfg.station_voltage_v
        )
        return StationCaps(rate_unit, phases, voltage, discovered.max_stack_level)

    # -- internals ---------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def metering(self) -> dict[str, str]:
        """What each connected station took of the MID metering setup (for the status page)."""
        return {
            sid: c.session.metering for sid, c in self.connections.items() if c.session.metering is not None
        }

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        connections = self.connections
        for decision in decisions:
            if type(decision) is ApplyStationLimit:
                conn = connections.get(decision.station_id)
                if conn is not None:
                    conn.session.set_limit(decision)
                    self.wake(conn)

    def _horizon(self) -> float:
        return self._next_sweep_s

    def _sweep(self) -> None:
        """Give a timer to every deadline due before the next sweep (see ``arm_timer``)."""
        self._next_sweep_s = self.clock() + self._sweep_s
        for conn in list(self.connections.values()):
            conn.arm_timer()
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    # Scheduler jobs are coroutines so that apscheduler runs them on the loop, not in a thread.
    async def _settle_heap(self) -> None:
        self.heap.observe(len(self.connections), asyncio.get_running_loop().time())

    async def _send_loop(self) -> None:
        ready, wakeup, clock = self._ready, self._wakeup, self.clock
        while True:
            await wakeup.wait()
            wakeup.clear()
            now = clock()  # one time for a batch (a fan-out): its calls share payloads and deadlines
            turn = 0
            while ready:
                turn += 1
                if turn % _FRAMES_PER_TURN == 0:
                    # A 5,000-station fan-out is one pass: give the loop back now and then, so a
                    # DSO command (its ACT_CON) or a station's answer never waits for all of it.
                    await asyncio.sleep(0)
                    now = clock()
                conn = ready.popleft()
                conn.in_ready = False
                session = conn.session
                frames = session.frames_to_send(now)
                if session.has_events():  # only when our own payload was invalid (a bug)
                    self._spawn(conn.flush())
                if not frames:
                    continue
                conn.arm_timer()
                if len(frames) == 1 and send_now(conn.ws, frames[0]):
                    continue
                transport = conn.ws.transport
                if transport is not None and transport.get_write_buffer_size() > _BLOCKED_SEND_BYTES:
                    self._spawn(conn.write(frames))  # never let one slow reader stall the fan-out
                    continue
                await conn.write(frames)
                now = clock()

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str, text: str) -> Response:
        self.metrics.handshakes_refused.labels(reason).inc()
        address = connection.remote_address
        host = str(address[0]) if address else "?"
        self.peer_log.log(log, logging.INFO, host, "handshake refused", "%s: %s", reason, text)
        return connection.respond(status, text + "\n")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        station_id = parse_station_id(request.path)
        if isinstance(station_id, BadStationId):
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, station_id.reason, station_id.text)
        return self._admit(connection, station_id)

    def _admit(self, connection: ServerConnection, station_id: str) -> Response | None:
        """Whether ``station_id`` may connect (whichever listener it came through): None if so."""
        cfg = self.config
        request = connection.request
        assert request is not None
        if cfg.accepted_stations and station_id not in cfg.accepted_stations:
            return self._refuse(
                connection, HTTPStatus.NOT_FOUND, "unknown_station", f"unknown station {station_id}"
            )
        if cfg.security_profile in (1, 2):
            entry = cfg.stations.get(station_id)
            credentials = _basic_credentials(request.headers)
            if (
                entry is None
                or credentials is None
                or credentials[0] != station_id
                or not hmac.compare_digest(credentials[1].encode(), entry.password.encode())
            ):
                response = self._refuse(
                    connection,
                    HTTPStatus.UNAUTHORIZED,
                    "bad_credentials",
                    f"station {station_id}: wrong or missing credentials",
                )
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp809", charset="UTF-8"'
                return response
        if cfg.security_profile == 3:
            peer = connection.transport.get_extra_info("peercert") if connection.transport else None
            names = {
                value for rdn in (peer or {}).get("subject", ()) for key, value in rdn if key == "commonName"
            }
            if station_id not in names:
                return self._refuse(
                    connection,
                    HTTPStatus.FORBIDDEN,
                    "bad_certificate",
                    f"station {station_id}: client certificate CN {printable(sorted(names))} does not match",
                )
        return None

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if not tls.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.ca_file:
            context.load_verify_locations(tls.ca_file)
        if self.config.security_profile == 3 or tls.require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def _handle(self, ws: ServerConnection) -> None:
        station_id = station_id_from_path(ws.request.path if ws.request else "")
        if station_id is None or ws.subprotocol is None:  # process_request / negotiation refused these
            await ws.close(1002, "no station id or subprotocol")
            return
        version = OcppVersion(ws.subprotocol)
        session = StationSession(self.session_context, rules_for(version), station_id, self.clock())
        await self._serve_station(ws, station_id, session)

    async def _serve_station(self, ws: ServerConnection, station_id: str, session: StationSession) -> None:
        """Serve an accepted station until its socket closes (the main and the legacy listener)."""
        version = session.version
        conn = StationConnection(session, ws, self._shell)
        if self.relay_hub is not None:
            conn.relay = self.relay_hub.attach(conn)
        old = self.connections.get(station_id)
        self.connections[station_id] = conn
        if old is not None:
            log.info("%s: new connection replaces the old one", station_id)
            old.lost()
            self._spawn(old.ws.close(1000, "replaced by a new connection"))
        log.info("%s: connected (%s) from %s", station_id, version.value, ws.remote_address)
        entry = self.config.stations.get(station_id)
        max_w = entry.max_power_w if entry is not None and entry.max_power_w is not None else None
        min_w = entry.min_power_w if entry is not None and entry.min_power_w is not None else None
        try:
            self.runtime.submit(
                StationConnected(
                    station_id,
                    version,
                    self.config.station_max_power_w if max_w is None else max_w,
                    self.config.station_min_power_w if min_w is None else min_w,
                    0 if entry is None else entry.priority,
                    1.0 if entry is None else entry.weight,
                )
            )
            conn.arm_timer()  # boot_wait_s
            await conn.serve()
        finally:
            conn.lost()
            if self.relay_hub is not None and conn.relay is not None:
                await self.relay_hub.detach(conn.relay)
            self.peer_log.flush(station_id)
            if self.connections.get(station_id) is conn:
                del self.connections[station_id]
                log.info("%s: disconnected", station_id)
                self.runtime.submit(StationDisconnected(station_id))
