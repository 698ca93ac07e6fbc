"""The legacy listener: a Series 4 unit's hello line, then the same websockets server as the main one.

It is websockets' own ``serve()`` on ``[legacy] listen_port`` (of ``ocpp.listen_host``),
with one change: each connection is a ``HelloConnection``, websockets' ``ServerConnection``
(an asyncio protocol over the socket) that keeps the first bytes for its ``HelloReader``
and hands websockets' Sans-I/O protocol only what follows the hello line. No second
socket, no proxy hop: after the line the connection is websockets' from its first byte of
HTTP on (handshake, ping, limits, close), exactly as on the main listener.

- **Opening deadline.** The hello and the upgrade request must both arrive within
  ``ocpp.handshake_timeout_s`` of the connection; websockets' own open timeout is a
  backstop behind it (twice as long), so the refusal is always ours and always logged.
  When the listener stops, connections still before their upgrade are closed at once.
- **Refusals** (no hello, garbage, too long, a bad identity, no upgrade after the hello):
  one WARNING line naming the address and why (rate-limited per address by ``PeerLog``),
  ``ocpp809_legacy_refused_total{reason}``, and the connection is closed.
- **Admission.** The identity from the hello goes through the server's own checks
  (``admit``: accepted stations, Basic Auth, client certificate); the path is not read.
  Subprotocol ``ocpp1.5``, ``ocpp1.6`` or none is accepted; the unit is a 1.6 station
  from then on (``LegacySession``) and the server serves it like any other (``serve_station``).
- **Leniencies** are logged once per station (WARNING) and counted on every frame
  (``ocpp809_legacy_leniencies_total{kind}``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ocpp_side import v16
from ocpp_side.legacy.dialect import DialectSettings, Leniency, UnitDialect
from ocpp_side.legacy.hello import Hello, HelloReader, HelloRules, RefusalReason, Refused
from ocpp_side.legacy.session import LegacySession
from ocpp_side.peer_log import PeerLog, printable
from ocpp_side.session import SessionContext, StationSession
from ocpp_side.settings import LegacyConfig, OcppConfig

log = logging.getLogger(__name__)

# What a Series 4 unit may offer, in the order taken; none offered is taken too, others are not.
LEGACY_SUBPROTOCOLS = (Subprotocol("ocpp1.5"), Subprotocol(v16.VERSION.value))
MAX_STATIONS_REMEMBERED = 10_000  # for "once per station"; past this the memory starts again

Admit = Callable[[ServerConnection, str], Response | None]  # (connection, station id) -> refusal
ServeStation = Callable[[ServerConnection, str, StationSession], Awaitable[None]]


class LegacyMetrics:
    """Registered with every station server, enabled or not: the families are always there."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "ocpp809_legacy_refused",
            "Legacy units refused before their upgrade, by reason",
            ["reason"],
            registry=registry,
        )
        self.leniencies = Counter(
            "ocpp809_legacy_leniencies",
            "Frames from legacy units mended into valid OCPP 1.6, by leniency",
            ["kind"],
            registry=registry,
        )
        for reason in RefusalReason:
            self.refused.labels(reason.value)
        for kind in Leniency:
            self.leniencies.labels(kind.value)


class HelloGate:
    """What every ``HelloConnection`` of one listener shares: the rules, the deadline, the log."""

    def __init__(
        self, rules: HelloRules, timeout_s: float, metrics: LegacyMetrics, peer_log: PeerLog
    ) -> None:
        self.rules = rules
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.peer_log = peer_log
        self.connections: set[HelloConnection] = set()  # until their socket closes

    def closing(self) -> None:
        """The listener stops: connections still before their upgrade request are closed now
        (websockets closes the open ones), without a refusal line."""
        for connection in list(self.connections):
            if connection.request is None:
                connection.drop()

    def read(self, connection: ServerConnection, hello: Hello) -> None:
        log.info(
            "legacy unit %s from %s: hello read (serial %s)",
            hello.station_id,
            _host(connection),
            printable(hello.serial),
        )

    def refuse(self, connection: ServerConnection, refused: Refused) -> None:
        self.metrics.refused.labels(refused.reason.value).inc()
        self.peer_log.log(
            log,
            logging.WARNING,
            _host(connection),
            "legacy unit refused",
            "%s: %s; connection closed",
            refused.reason.value,
            refused.text,
        )


def _host(connection: ServerConnection) -> str:
    transport = connection.transport
    address = transport.get_extra_info("peername") if transport is not None else None
    return str(address[0]) if address else "?"


class HelloConnection(ServerConnection):
    """websockets' server connection, after the unit's hello line; see the module docstring.

    ``gate`` is bound by ``connection_type``: websockets builds connections from a class.
    """

    gate: ClassVar[HelloGate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hello: Hello | None = None
        self._reader = HelloReader(self.gate.rules)
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gate.connections.add(self)
        self._deadline = self.loop.call_later(self.gate.timeout_s, self._opening_timed_out)

    def drop(self) -> None:
        """Close before the upgrade, saying nothing (the listener stops)."""
        self._refused = True
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.hello is not None:
            super().data_received(data)
            return
        if self._refused:
            return
        outcome = self._reader.receive_data(data)
        if outcome is None:
            return
        if isinstance(outcome, Refused):
            self._refuse(outcome)
            return
        self.hello = outcome
        self.gate.read(self, outcome)
        if self._reader.rest:
            super().data_received(self._reader.rest)

    def eof_received(self) -> None:
        if self.hello is None:
            if not self._refused:
                self._refuse(self._reader.receive_eof())
            return
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.connections.discard(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _opening_timed_out(self) -> None:
        self._deadline = None
        if self.request is None and not self._refused:
            self._refuse(self._reader.timed_out(self.gate.timeout_s))

    def _refuse(self, refused: Refused) -> None:
        self._refused = True
        self.gate.refuse(self, refused)
        self.transport.close()  # websockets' handshake wakes up on connection_lost and ends


def connection_type(gate: HelloGate) -> type[HelloConnection]:
    """A ``HelloConnection`` class bound to ``gate`` (what ``serve(create_connection=...)`` takes)."""

    class BoundHelloConnection(HelloConnection):
        pass

    BoundHelloConnection.gate = gate
    return BoundHelloConnection


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Ours, or none when none is offered; only others offered (a 2.0.1 station on the wrong
    port): HTTP 400."""
    if not offered:
        return None
    chosen = next((p for p in LEGACY_SUBPROTOCOLS if p in offered), None)
    if chosen is None:
        raise NegotiationError(f"the legacy listener speaks {', '.join(LEGACY_SUBPROTOCOLS)} or none")
    return chosen


class LeniencyLog:
    """Each leniency of each station: logged once (WARNING), counted every time."""

    def __init__(self, metrics: LegacyMetrics) -> None:
        self.metrics = metrics
        self._logged: dict[str, set[Leniency]] = {}

    def __call__(self, station_id: str, leniency: Leniency) -> None:
        self.metrics.leniencies.labels(leniency.value).inc()
        logged = self._logged.get(station_id)
        if logged is None:
            if len(self._logged) >= MAX_STATIONS_REMEMBERED:
                self._logged.clear()
            logged = self._logged[station_id] = set()
        if leniency not in logged:
            logged.add(leniency)
            log.warning(
                "%s: legacy unit: %s mended into OCPP 1.6 (%s; logged once per station, counted in"
                " ocpp809_legacy_leniencies_total)",
                station_id,
                leniency.value,
                _WHAT[leniency],
            )


_WHAT = {
    Leniency.STRING_NUMBER: "a number sent as a decimal string",
    Leniency.NAIVE_TIMESTAMP: "a timestamp without a zone, read in legacy.timezone",
    Leniency.UNKNOWN_FIELD: "a field OCPP 1.6 does not define, dropped",
    Leniency.BOOT_WITHOUT_SERIAL: "BootNotification without chargePointSerialNumber, the hello's serial added",
}


class LegacyListener:
    """The second station listener; see the module docstring."""

    def __init__(
        self,
        legacy: LegacyConfig,
        ocpp: OcppConfig,
        session_context: SessionContext,
        metrics: LegacyMetrics,
        peer_log: PeerLog,
        clock: Callable[[], float],
    ) -> None:
        self.legacy = legacy
        self.ocpp = ocpp
        self.session_context = session_context
        self.clock = clock
        self.zone = zoneinfo.ZoneInfo(legacy.timezone)
        self.metrics = metrics
        self.leniencies = LeniencyLog(self.metrics)
        rules = HelloRules.from_config(legacy.hello_pattern, legacy.identity_template)
        self.gate = HelloGate(rules, ocpp.handshake_timeout_s, self.metrics, peer_log)
        self._server: Server | None = None
        self._admit: Admit | None = None
        self._serve_station: ServeStation | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def where(self) -> str:
        """How the operator knows this listener (start-up errors name it)."""
        return f"legacy listener {self.ocpp.listen_host}:{self.legacy.listen_port}"

    async def start(
        self, admit: Admit, serve_station: ServeStation, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._admit, self._serve_station = admit, serve_station
        self._server = await serve(
            self._handle,
            self.ocpp.listen_host,
            self.legacy.listen_port,
            create_connection=connection_type(self.gate),
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ssl=ssl_context,
            max_size=self.ocpp.max_message_bytes,
            open_timeout=2 * self.ocpp.handshake_timeout_s,  # a backstop: the hello deadline comes first
        )
        scheme = "wss" if ssl_context is not None else "ws"
        log.info(
            "legacy listener on %s://%s:%d/ (a hello line first; identity %r from %r)",
            scheme,
            self.ocpp.listen_host,
            self.port,
            self.legacy.identity_template,
            self.legacy.hello_pattern,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.gate.closing()
            await self._server.wait_closed()
            self._server = None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert isinstance(connection, HelloConnection) and connection.hello is not None  # it came after
        assert self._admit is not None
        return self._admit(connection, connection.hello.station_id)

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, HelloConnection) and ws.hello is not None
        assert self._serve_station is not None
        hello = ws.hello
        dialect = UnitDialect(DialectSettings(self.zone, hello.serial))
        session = LegacySession(
            self.session_context, hello.station_id, self.clock(), dialect, self.leniencies
        )
        await self._serve_station(ws, hello.station_id, session)
