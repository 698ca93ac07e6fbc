"""The IEC 60870-5-104 outstation (controlled station) on c104: the adapter shell.

c104 listens on 127.0.0.1 on a port of its own; masters connect to the front
(``iec104.front``) on ``iec104.listen_host:port``, which checks ``allowed_masters``, ends
TLS and passes only well-formed APDUs (``iec104.apdu_guard``): c104 2.2.1 crashes on short
ASDUs. ``on_connect`` accepts only connections the front opened and learns from it which
master each one carries, so the peers in the logs and the audit rows are the masters' own.

Threads: c104 calls ``on_receive``, ``on_connect``, ``on_unexpected_message`` and
``on_send_raw`` on its own threads. Those callbacks only translate (``iec104.points``),
hand the event to the asyncio loop and answer; all core access, every point update and
all link state happen on the loop.

Fail closed: c104 turns an exception or a wrong return type in ``on_receive`` into a
*positive* confirmation and drops the callback for good. ``_on_command`` therefore
catches everything and answers FAILURE on any error or timeout. The limit is never read
back from ``point.value`` (c104 stores rejected values there too); the core is the truth.

Link supervision: every DSO session is seen, however short. The rule:

- A master is *seen* when the outstation writes a STARTDT con (reported by c104's
  ``Server.on_send_raw``; lib60870 counts the connection as in data transfer before it
  writes the con) or when a command reaches ``on_receive``/``on_unexpected_message``
  (lib60870 closes a connection that sends an I-frame before STARTDT). Each sighting is
  handed to the loop, which feeds ``DsoLinkUp`` at once if the link was down.
  ``on_send_raw`` is set only from each accepted connection until t1 later: c104 2.2.1
  leaks ~400 B for every frame written while it is set (docs/c104/raw_callback_leak.py).
  A STARTDT or STOPDT more than t1 after its connect is seen by the poll below instead.
- The link is *lost* when, at a check, no connection is in data transfer
  (``Server.active_connection_count`` is 0) while the link is up: ``DsoLinkLost`` is fed.
  A check runs after every sighting, after every STOPDT con the outstation writes, and
  every ``iec104.link_poll_s`` (the safety net). Up is set by the sighting, not by the
  poll, so a session that starts and ends between two polls still gives ``DsoLinkUp``
  then ``DsoLinkLost``: the hold starts after every session.
- Timing bound: ``DsoLinkUp`` follows a STARTDT con within t1 of its connect, or a
  command, by one hand-over from c104's callback thread to the loop (milliseconds),
  whatever ``link_poll_s`` is; a later STARTDT by at most ``link_poll_s``.
  ``DsoLinkLost`` follows the moment lib60870 takes the last connection out of data
  transfer by at most ``link_poll_s`` (at once for a STOPDT). lib60870 does that on a
  STOPDT act, on a FIN or RST read by the connection's thread, and, for a peer that died
  silently, after t3 (idle, TESTFR act sent) + t1 (no TESTFR con). So: a close, a reset
  or a session shorter than the poll is lost within ``link_poll_s``; a silent death
  within t3 + t1 + ``link_poll_s``. c104 2.2.1 has no server-side close callback
  (lib60870's connection-closed event stays inside c104), which is why loss needs the poll.

A new session gets the full picture: every sighting of a STARTDT con re-sends every
monitored point with COT spontaneous (3) at once, even when a master reconnects between
two polls and the count of connections never changed. IEC 60870-5-104 lets the
outstation send I-frames only after STARTDT con and leaves bringing a controlling
station up to date after a (re)connection to its station (general) interrogation; the
interrogation is answered from the points (COT 20) at any time, so a master gets the
full picture either way.

This module has no ``from __future__ import annotations`` on purpose: c104 2.2.1
compares callback signatures with real annotation objects and refuses string ones.
"""

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from enum import Enum

import c104
from prometheus_client import Counter, Gauge

from gateway.core.decisions import Decision
from gateway.core.events import DsoLinkLost, DsoLinkUp, SetpointReceived
from gateway.core.model import RejectReason
from gateway.errors import Ocpp809Error, PeerInputError
from gateway.runtime import CoreRuntime, SetpointOutcome
from iec104.apdu_guard import Refusal
from iec104.codec import QualityFlag, TypeId, decode_asdu
from iec104.connections import ConnectionCache, most_stalled, shut_down
from iec104.front import BACKEND_HOST, FrontHooks, FrontSettings, Iec104Front
from iec104.peer_log import PeerLog, bounded
from iec104.points import (
    CommandIn,
    CommandRefused,
    MonitoredValue,
    PointSpec,
    SetpointTest,
    TransmitPolicy,
    command_kind,
    point_specs,
    telemetry_for,
    telemetry_from_view,
    translate_command,
)
from iec104.settings import Iec104Config

log = logging.getLogger(__name__)

_C104_TYPES = {
    TypeId.C_SE_NC_1: c104.Type.C_SE_NC_1,
    TypeId.C_SE_TC_1: c104.Type.C_SE_TC_1,
    TypeId.M_ME_TF_1: c104.Type.M_ME_TF_1,
    TypeId.M_SP_TB_1: c104.Type.M_SP_TB_1,
}
_UMC_REASONS = {
    "UNKNOWN_IOA": RejectReason.UNKNOWN_POINT,
    "MISMATCHED_TYPE_ID": RejectReason.UNKNOWN_POINT,
    "UNKNOWN_TYPE_ID": RejectReason.UNKNOWN_POINT,
    "INVALID_TYPE_ID": RejectReason.UNKNOWN_POINT,
    "UNKNOWN_CA": RejectReason.WRONG_COMMON_ADDRESS,
    "INVALID_COT": RejectReason.UNEXPECTED_CAUSE,
    "UNKNOWN_COT": RejectReason.UNEXPECTED_CAUSE,
}
_FIRST_COMMAND_TYPE = 45  # C_SC_NA_1: lower type ids are monitor direction
# U-frames the outstation writes (control field octet 1): a master entered / left data transfer.
_U_FRAME_LENGTH = 6
_STARTDT_CON = 0x0B
_STOPDT_CON = 0x23
_PORT_ATTEMPTS = 5
# The information object octets at the end of IncomingMessage.raw_explain: "... (64 00 00 cd cc bc 40 00 )".
_EXPLAINED_OCTETS = re.compile(r"\(((?:[0-9a-f]{2} )*)\)$")


class Iec104StartError(Ocpp809Error):
    """The outstation could not start (port in use, unreadable certificate, ...)."""


# A command the core took in time but has not decided yet gets this many more timeouts to be
# decided: confirming late is true, denying a command the core applied would not be.
LATE_ANSWER_FACTOR = 5


class _TicketState(Enum):
    PENDING = "pending"
    STARTED = "started"
    ABANDONED = "abandoned"


class _Ticket:
    """Decides, under a lock, whether a command reached the core or was abandoned on timeout.

    A command abandoned before the loop started it never reaches the core, so the negative
    confirmation the master gets is the truth and nothing changes.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = _TicketState.PENDING

    def start(self) -> bool:
        with self.lock:
            if self.state is _TicketState.ABANDONED:
                return False
            self.state = _TicketState.STARTED
            return True

    def abandon(self) -> _TicketState:
        with self.lock:
            if self.state is _TicketState.PENDING:
                self.state = _TicketState.ABANDONED
            return self.state


class _Metrics:
    def __init__(self, runtime: CoreRuntime) -> None:
        r = runtime.metrics.registry
        self.active_connections = Gauge(
            "ocpp809_iec104_active_connections", "IEC 104 connections in data transfer", registry=r
        )
        self.refused_connections = Counter(
            "ocpp809_iec104_refused_connections",
            "Connections refused: an address not in the master allowlist, or one to c104 around the front",
            registry=r,
        )
        self.command_failures = Counter(
            "ocpp809_iec104_command_failures",
            "Commands answered negatively because the core erred or did not answer in time",
            ["cause"],
            registry=r,
        )
        self.late_confirmations = Counter(
            "ocpp809_iec104_late_confirmations",
            "Commands the core took in time but decided after command_timeout_s: answered with its decision",
            registry=r,
        )
        self.transmissions = Counter(
            "ocpp809_iec104_transmissions",
            "Monitored values handed to c104: change, cyclic or resync",
            ["why"],
            registry=r,
        )
        self.transmit_failures = Counter(
            "ocpp809_iec104_transmit_failures", "Monitored values c104 did not accept", registry=r
        )
        # Known labels start at zero: a rate over a series that does not exist yet is no rate.
        for cause in ("internal_error", "timeout"):
            self.command_failures.labels(cause)
        for why in ("change", "cyclic", "resync"):
            self.transmissions.labels(why)
        self.sessions = Counter(
            "ocpp809_iec104_sessions",
            "Master sessions that started data transfer (STARTDT con written)",
            registry=r,
        )
        self.stalled_dropped = Counter(
            "ocpp809_iec104_stalled_dropped",
            "Connections dropped to make room for a new master: every slot taken, this one silent for t1",
            registry=r,
        )
        self.frames_refused = Counter(
            "ocpp809_iec104_frames_refused",
            "Connections closed by the front because a frame from the master was not a well-formed APDU",
            ["reason"],
            registry=r,
        )
        for reason in Refusal:
            self.frames_refused.labels(reason.value)
        self.refused_full = Counter(
            "ocpp809_iec104_refused_full",
            "Masters refused because every slot was taken and no connection had been silent for t1",
            registry=r,
        )


class Iec104Outstation:
    def __init__(self, config: Iec104Config, runtime: CoreRuntime) -> None:
        self.config = config
        self.runtime = runtime
        self.specs: tuple[PointSpec, ...] = point_specs(config.points)
        self._allowed = frozenset(ipaddress.ip_address(a) for a in config.allowed_masters)
        self._policy = TransmitPolicy(config.deadband_w)
        self._metrics = _Metrics(runtime)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: c104.Server | None = None
        self._points: dict[int, c104.Point] = {}
        self._current: dict[int, MonitoredValue] = {}
        self._dirty: set[int] = set()
        self._flush_scheduled = False
        self._link_up = False
        self._active = 0
        self._link_lock = asyncio.Lock()  # link checks run one at a time, so Up/Lost stay ordered
        self._checks: set[asyncio.Task[None]] = set()
        self._peers_lock = threading.Lock()
        self._peers: list[str] = []  # addresses accepted since the connection count was last zero
        self._jobs: list[str] = []
        self._backend_port = 0  # c104's own port on 127.0.0.1, behind the front
        self._peer_log = PeerLog(log)
        self._front: Iec104Front | None = None  # built by start(): the TLS files are read there
        self._connections: ConnectionCache | None = None  # c104's accepting thread only
        self._send_raw_lock = threading.Lock()
        self._send_raw_until = 0.0  # time.monotonic() until which on_send_raw stays set
        self._send_raw_armed = False

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the outstation listens on (the front's; the chosen one when the config says 0)."""
        return self.config.port if self._front is None else self._front.port

    @property
    def backend_port(self) -> int:
        """c104's own port on 127.0.0.1, which only the front connects to."""
        return self._backend_port

    @property
    def link_up(self) -> bool:
        return self._link_up

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if not self._allowed:
            log.warning("iec104.allowed_masters is empty: masters from any address are accepted")
        front = self._front = Iec104Front(
            FrontSettings(
                cfg.listen_host,
                cfg.port,
                self._allowed,
                self._ssl_context(),
                handshake_timeout_s=float(cfg.t0_s),
            ),
            FrontHooks(self._peer_log, self._metrics.refused_connections.inc, self._frame_refused),
        )
        front.bind()  # the public port first: a port in use fails before c104 starts
        # c104 binds a random port for 0 but cannot tell which, so pick a free one here.
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._backend_port = _free_port(BACKEND_HOST)
            server = self._build_server()
            # Points hold the core's current state before any master can interrogate.
            self._update(telemetry_from_view(self.runtime.view(), self.specs, self.runtime.clock()))
            self._write_points()
            try:
                server.start()
                break
            except RuntimeError as exc:
                server.stop()
                if attempt == _PORT_ATTEMPTS:
                    await front.stop()
                    raise Iec104StartError(f"IEC 104 server on {BACKEND_HOST}: {exc}") from None
        self._server = server
        try:
            await front.start(self._backend_port)
        except BaseException:
            self._server = None
            await asyncio.to_thread(server.stop)
            await front.stop()
            raise
        self.runtime.add_listener(self._on_decisions)
        scheduler = self.runtime.scheduler
        poll = scheduler.add_job(
            self._poll_link, "interval", seconds=cfg.link_poll_s, id=f"iec104-link-{id(self)}"
        )
        self._jobs.append(poll.id)
        if cfg.periodic_interval_s > 0:
            cyclic = scheduler.add_job(
                self._transmit_cyclic,
                "interval",
                seconds=cfg.periodic_interval_s,
                id=f"iec104-cyclic-{id(self)}",
            )
            self._jobs.append(cyclic.id)
        log.info(
            "IEC 104 outstation on %s:%d (common address %d, TLS %s; c104 behind the APDU guard on %s:%d)",
            cfg.listen_host,
            self.port,
            cfg.common_address,
            "on" if cfg.tls.enabled else "off",
            BACKEND_HOST,
            self._backend_port,
        )

    def _build_server(self) -> c104.Server:
        cfg = self.config
        try:
            server = c104.Server(
                ip=BACKEND_HOST,
                port=self._backend_port,
                tick_rate_ms=cfg.tick_rate_ms,
                select_timeout_ms=cfg.select_timeout_ms,
                # One spare slot: lib60870 refuses a connection beyond its limit before on_connect
                # could see it, so the outstation could never make room (see _make_room).
                max_connections=cfg.max_connections + 1,
                transport_security=None,  # TLS ends in the front (_ssl_context)
            )
        except ValueError as exc:
            raise Iec104StartError(f"IEC 104 settings: {exc}") from None
        params = server.protocol_parameters
        params.connection_timeout = cfg.t0_s
        params.message_timeout = cfg.t1_s
        params.confirm_interval = cfg.t2_s
        params.keep_alive_interval = cfg.t3_s
        params.send_window_size = cfg.k
        params.receive_window_size = cfg.w
        points: dict[int, c104.Point] = {}
        station = server.add_station(common_address=cfg.common_address)
        if station is None:  # pragma: no cover - a fresh server always takes its first station
            raise Iec104StartError(f"cannot add station {cfg.common_address}")
        for spec in self.specs:
            mode = (
                c104.CommandMode.SELECT_AND_EXECUTE if spec.select_before_operate else c104.CommandMode.DIRECT
            )
            point = station.add_point(io_address=spec.ioa, type=_C104_TYPES[spec.type_id], command_mode=mode)
            if point is None:  # pragma: no cover - IOAs are unique (config check)
                raise Iec104StartError(f"cannot add IOA {spec.ioa}")
            if spec.is_command:
                point.on_receive(callable=self._on_command)
            points[spec.ioa] = point
        server.on_connect(callable=self._on_connect)
        server.on_unexpected_message(callable=self._on_unexpected)
        # on_send_raw is armed per connection only (_arm_send_raw): c104 2.2.1 leaks ~400 B per frame
        # sent while it is set (docs/c104/raw_callback_leak.py).
        self._points = points
        return server

    async def stop(self) -> None:
        for job_id in self._jobs:
            if self.runtime.scheduler.get_job(job_id) is not None:
                self.runtime.scheduler.remove_job(job_id)
        self._jobs.clear()
        server, self._server = self._server, None
        checks, self._checks = list(self._checks), set()
        for check in checks:
            check.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        if self._front is not None:
            await self._front.stop()  # no master reaches c104 any more; their connections to it close
        if server is not None:
            # stop() joins c104's threads, which may be waiting for the loop in _on_command.
            await asyncio.to_thread(server.stop)
        log.info("IEC 104 outstation stopped")

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The front's TLS server (IEC 62351-3), with what c104's ``TransportSecurity`` required before.

        c104 was configured with ``validate=True, only_known=False`` and TLS 1.2 to 1.3: the
        master's certificate is required and its chain and validity time checked against the
        CA (any certificate the CA signed, no pinning list). The same here, with Python's ssl.
        """
        tls = self.config.tls
        if not tls.enabled:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED  # the config check requires require_client_cert
        return context

    # -- c104 callbacks (c104's threads) -------------------------------------------------

    def _frame_refused(self, reason: Refusal) -> None:
        self._metrics.frames_refused.labels(reason.value).inc()

    def _on_connect(self, server: c104.Server, ip: str) -> bool:
        """A connection from the front (``ip`` is its loopback source): the master's address
        was checked against ``iec104.allowed_masters`` there; anything else is refused."""
        try:
            front = self._front
            master = front.claim(ip) if front is not None else None
            if master is None:
                self._peer_log.warning(
                    ip, f"IEC 104 connection to c104 from {bounded(ip)} refused: not opened by the front"
                )
                self._metrics.refused_connections.inc()
                return False
            ip = master
            if not self._make_room(server, ip):
                return False
            self._arm_send_raw(server)
            log.info("IEC 104 connection from %s accepted", ip)
            with self._peers_lock:
                if ip not in self._peers:
                    self._peers.append(ip)
            return True
        except Exception as exc:  # noqa: BLE001 - never raise into c104; refuse when unsure
            self._peer_log.log(logging.ERROR, ip, f"on_connect failed for {bounded(ip)}", exc_info=exc)
            return False

    def _make_room(self, server: c104.Server, ip: str) -> bool:
        """A master may connect: is there a slot, or a stalled connection to drop for it?

        ``max_connections`` slots; when all are taken, the connection the kernel says has been
        silent longest is shut down if nothing has come from it for at least ``t1_s`` (a master
        that behaves answers within t1, and a half APDU is never completed); otherwise the
        newcomer is refused. Runs on c104's accepting thread, before the newcomer is counted.
        """
        cfg = self.config
        if server.open_connection_count < cfg.max_connections:
            return True
        cache = self._connections
        if cache is None or cache.port != self._backend_port:
            cache = self._connections = ConnectionCache(BACKEND_HOST, self._backend_port)
        # c104's side of each master's connection: the front forwards whole APDUs only, so a
        # master that stalls in the middle of one leaves this side silent too.
        victim = most_stalled(cache.connections(server.open_connection_count), float(cfg.t1_s))
        # Named before the shutdown: the front forgets the master once its connection ends.
        name = "" if victim is None or self._front is None else self._front.peer_name(victim.peer)
        if victim is None or not shut_down(victim):
            self._metrics.refused_full.inc()
            self._peer_log.warning(
                ip,
                f"IEC 104 connection from {bounded(ip)} refused: all {cfg.max_connections} slots are taken"
                f" and no connection has been silent for t1 ({cfg.t1_s} s)",
            )
            return False
        self._metrics.stalled_dropped.inc()
        name = name or victim.name
        self._peer_log.warning(
            f"{name.rsplit(':', 1)[0]} (dropped)",  # its own budget: refusals from the address do not hide it
            f"IEC 104 connection from {name} dropped, silent for {victim.silent_s:.1f} s:"
            f" all {cfg.max_connections} slots were taken and a master from {bounded(ip)} connected",
        )
        return True

    def _arm_send_raw(self, server: c104.Server) -> None:
        """Watch the frames the outstation writes for t1 after a connection is accepted.

        c104 2.2.1 leaks a memoryview and a bytes object (~400 B) for every frame written while
        ``on_send_raw`` is set, telemetry included. The callback is only needed to see a new
        session's STARTDT con (and a STOPDT con at once), which follows the connect: so it is set
        from each accepted connection until t1 later (``_disarm_send_raw``, at the link checks).
        A STARTDT or STOPDT later than that is seen by the link poll instead.
        """
        with self._send_raw_lock:
            self._send_raw_until = time.monotonic() + self.config.t1_s
            if not self._send_raw_armed:
                server.on_send_raw(callable=self._on_send_raw)
                self._send_raw_armed = True

    def _disarm_send_raw(self, server: c104.Server) -> None:
        with self._send_raw_lock:
            if self._send_raw_armed and time.monotonic() >= self._send_raw_until:
                server.on_send_raw(callable=None)  # type: ignore[arg-type]  # None unsets (Callback::reset)
                self._send_raw_armed = False

    def _on_send_raw(self, server: c104.Server, data: bytes) -> None:
        # c104 reports every frame the outstation writes; only STARTDT/STOPDT con matter here.
        try:
            if len(data) == _U_FRAME_LENGTH and data[2] in (_STARTDT_CON, _STOPDT_CON):
                self._call_on_loop(self._on_data_transfer_frame, data[2] == _STARTDT_CON)
        except Exception as exc:  # noqa: BLE001 - never raise into c104
            self._peer_log.log(logging.ERROR, "on_send_raw", "on_send_raw failed", exc_info=exc)

    def _on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        try:
            self._call_on_loop(self._master_seen)  # a command proves a master in data transfer
            return self._decide_command(message)
        except BaseException as exc:  # noqa: BLE001 - fail closed, keep the callback for the next command
            # Our own failure, not the peer's: with a traceback, but a flood of them stays bounded.
            self._peer_log.log(
                logging.ERROR,
                self._peer(0),
                "IEC 104 command handling failed; answering negatively",
                exc_info=exc,
            )
            self._metrics.command_failures.labels("internal_error").inc()
            return c104.ResponseState.FAILURE

    def _on_unexpected(self, server: c104.Server, message: c104.IncomingMessage, cause: c104.Umc) -> None:
        # c104 has already answered (negative ACT_CON and/or a mirrored UNKNOWN_* cause).
        try:
            self._call_on_loop(self._master_seen)
            type_id = int(message.type.value)
            if type_id < _FIRST_COMMAND_TYPE:
                self._peer_log.warning(
                    self._peer(0),
                    f"unexpected {command_kind(type_id)} in monitor direction from the master: {cause.name}",
                )
                return
            kind = command_kind(type_id)
            reason = _UMC_REASONS.get(cause.name, RejectReason.UNKNOWN_POINT)
            detail = (
                f"{kind} at IOA {message.io_address}, common address {message.common_address}: {cause.name}"
            )
            value: float | None = None
            command = self._command_from(message)
            if command is not None:
                # Our own translation names the refusal more precisely than c104's cause.
                translated = translate_command(command, self.config.common_address, self.specs)
                value = command.value
                if isinstance(translated, CommandRefused):
                    reason, detail, value = translated.reason, translated.detail, translated.value_w
            peer = self._peer(message.originator_address)
            self._call_on_loop(self.runtime.refuse_command, peer, kind, value, reason, detail)
        except Exception as exc:  # noqa: BLE001 - never raise into c104
            self._peer_log.log(logging.ERROR, self._peer(0), "on_unexpected_message failed", exc_info=exc)

    # -- command path ---------------------------------------------------------------------

    def _decide_command(self, message: c104.IncomingMessage) -> c104.ResponseState:
        command = self._command_from(message)
        if command is None:
            return self._refuse_undecodable(message)
        translated = translate_command(command, self.config.common_address, self.specs)
        if isinstance(translated, CommandRefused):
            self._call_on_loop(
                self.runtime.refuse_command,
                command.peer,
                translated.kind,
                translated.value_w,
                translated.reason,
                translated.detail,
            )
            return c104.ResponseState.FAILURE
        if isinstance(translated, SetpointTest):
            # T bit: answered (c104 mirrors T) with what the core would say, never applied.
            outcome = self._submit_and_wait(translated.event, test=True)
        else:
            outcome = self._submit_and_wait(translated)
        return c104.ResponseState.SUCCESS if outcome.accepted else c104.ResponseState.FAILURE

    def _refuse_undecodable(self, message: c104.IncomingMessage) -> c104.ResponseState:
        """A command c104 took but whose octets do not decode: one bounded WARNING line, audited, negative."""
        peer = self._peer(int(message.originator_address))
        kind = command_kind(int(message.type.value))
        detail = f"{kind} at IOA {int(message.io_address)} could not be decoded"
        self._peer_log.warning(peer, f"IEC 104 command from {peer}: {detail}; answered negatively")
        self._call_on_loop(self.runtime.refuse_command, peer, kind, None, RejectReason.UNKNOWN_POINT, detail)
        return c104.ResponseState.FAILURE

    def _command_from(self, message: c104.IncomingMessage) -> CommandIn | None:
        """Decode the command from its octets: exact CP56Time2a (UTC, IV bit), float value, T and P/N bits."""
        try:
            asdu = decode_asdu(asdu_octets(message))
        except PeerInputError:
            return None
        if not asdu.objects:
            return None
        obj = asdu.objects[0]
        value = float(obj.value) if isinstance(obj.value, (int, float)) else float("nan")
        return CommandIn(
            asdu.type_id,
            obj.ioa,
            asdu.common_address,
            asdu.cot,
            value,
            obj.time_tag,
            self._peer(asdu.originator),
            test=asdu.test,
            negative=asdu.negative,
        )

    def _submit_and_wait(self, event: SetpointReceived, *, test: bool = False) -> SetpointOutcome:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("no event loop")
        ticket = _Ticket()
        future: Future[SetpointOutcome | None] = asyncio.run_coroutine_threadsafe(
            self._decide(event, ticket, test), loop
        )
        timeout_s = self.config.command_timeout_s
        try:
            outcome = future.result(timeout=timeout_s)
        except FutureTimeout:
            started = ticket.abandon() is _TicketState.STARTED
            outcome = self._late_outcome(event, future, timeout_s) if started else None
            if outcome is not None:
                return outcome  # late, but the truth: a command the core decided is never denied
            # Not taken: it never reaches the core. Taken and hung at an await: cancelled
            # there, before the store or the core changed. Either way "no" is the truth.
            future.cancel()
            self._metrics.command_failures.labels("timeout").inc()
            detail = f"the core did not {'decide' if started else 'take'} the command within {timeout_s:g} s"
            log.error("setpoint %r W answered negatively: %s", event.value_w, detail)
            self._audit_failure(event, RejectReason.TIMEOUT, detail)
            return SetpointOutcome(False, RejectReason.TIMEOUT, detail)
        except Exception as exc:  # noqa: BLE001 - any core failure is a negative ACT_CON, never a crash
            self._metrics.command_failures.labels("internal_error").inc()
            detail = f"the core failed: {type(exc).__name__}: {exc}"
            log.error("setpoint %r W answered negatively: %s", event.value_w, detail)
            self._audit_failure(event, RejectReason.INTERNAL_ERROR, detail)
            return SetpointOutcome(False, RejectReason.INTERNAL_ERROR, detail)
        if outcome is None:  # pragma: no cover - abandoned tickets end in the timeout branch
            return SetpointOutcome(False, RejectReason.TIMEOUT)
        return outcome

    def _late_outcome(
        self, event: SetpointReceived, future: Future[SetpointOutcome | None], timeout_s: float
    ) -> SetpointOutcome | None:
        """The core took the command before the timeout and is deciding it (a busy loop, e.g.
        a fan-out to thousands of stations): its answer, once it comes, is the confirmation
        (issue 13: 27 of them were denied at 5,000 stations although stored and applied).
        None if the core is still not done after ``LATE_ANSWER_FACTOR`` x the timeout."""
        try:
            outcome = future.result(timeout=timeout_s * LATE_ANSWER_FACTOR)
        except FutureTimeout:
            return None
        except Exception:  # noqa: BLE001 - failed while deciding: a negative ACT_CON, as below
            return None
        if outcome is not None:
            self._metrics.late_confirmations.inc()
            log.warning(
                "setpoint %r W: the core took it in time but decided only after %g s; answered with"
                " its decision (%s)",
                event.value_w,
                timeout_s,
                "accepted" if outcome.accepted else "refused",
            )
        return outcome

    def _audit_failure(self, event: SetpointReceived, reason: RejectReason, detail: str) -> None:
        self._call_on_loop(
            self.runtime.refuse_command, event.peer, event.kind.value, event.value_w, reason, detail
        )

    async def _decide(self, event: SetpointReceived, ticket: _Ticket, test: bool) -> SetpointOutcome | None:
        if not ticket.start():
            return None
        if test:
            return self._check_test(event)
        return await self.runtime.submit_setpoint(event)

    def _check_test(self, event: SetpointReceived) -> SetpointOutcome:
        """A test command (T bit): the core's own check says what the answer is; nothing is applied.

        Audited as not applied (reason ``test_command``) with what the core would have said.
        """
        refusal = self.runtime.arbiter.check_setpoint(event, self.runtime.clock())
        would = (
            "would be accepted"
            if refusal is None
            else f"would be refused: {refusal.reason.value}, {refusal.detail}"
        )
        detail = f"test command (T bit set): not applied; {would}"
        self.runtime.refuse_command(
            event.peer, event.kind.value, event.value_w, RejectReason.TEST_COMMAND, detail
        )
        if refusal is None:
            return SetpointOutcome(True)
        return SetpointOutcome(False, refusal.reason, refusal.detail)

    # -- telemetry (loop thread) ------------------------------------------------------------

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        if self._server is None:
            return
        values = telemetry_for(list(decisions), self.specs, self.runtime.clock())
        if not values:
            return
        self._update(values)
        self._write_points()  # at once: an interrogation right after must see the new values
        if not self._flush_scheduled:
            # Coalesce a burst (e.g. many meter samples) into one flush per c104 tick: c104 sends
            # its queue once a tick anyway, and a burst of transmit() calls overflows that queue
            # (measured: 2000 accepted, 779 delivered) while one per tick keeps the latest value.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.config.tick_rate_ms / 1000, self._flush)

    def _update(self, values: list[MonitoredValue]) -> None:
        for value in values:
            self._current[value.ioa] = value
            self._dirty.add(value.ioa)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._server is None:
            return
        self._write_points()
        if self._link_up:
            for ioa in sorted(self._pending_spontaneous()):
                self._transmit(self._current[ioa], "change")

    def _write_points(self) -> None:
        """Put every changed value into its c104 point, so interrogation answers the current state."""
        for ioa in list(self._dirty):
            value = self._current[ioa]
            self._points[ioa].info = _information(value)
            self._dirty.discard(ioa)

    def _pending_spontaneous(self) -> list[int]:
        return [ioa for ioa, value in self._current.items() if self._policy.should_send(value)]

    def _transmit(self, value: MonitoredValue, why: str) -> None:
        """Hand one value to c104 with COT spontaneous: the companion standard allows only
        spontaneous (3) and request (5) for M_ME_TF_1, and no periodic (1) for M_SP_TB_1, so
        the cyclic and resynchronising re-sends are spontaneous too (``why`` labels the metric)."""
        point = self._points[value.ioa]
        try:
            ok = point.transmit(cause=c104.Cot.SPONTANEOUS)
        except ValueError as exc:
            ok = False
            log.warning("IEC 104 transmit of IOA %d failed: %s", value.ioa, exc)
        self._metrics.transmissions.labels(why).inc()
        if ok:
            # Handed to c104's queue, not necessarily delivered: the cyclic transmission and
            # the resend after each new STARTDT make sure the master ends up current.
            self._policy.sent(value)
        else:
            self._metrics.transmit_failures.inc()

    async def _transmit_cyclic(self) -> None:
        if self._server is None or not self._link_up:
            return
        for ioa in sorted(self._current):
            self._transmit(self._current[ioa], "cyclic")

    # -- link supervision (loop thread) --------------------------------------------------------

    def _on_data_transfer_frame(self, started: bool) -> None:
        """The outstation wrote a STARTDT con (a session began) or a STOPDT con (one ended)."""
        if started:
            self._metrics.sessions.inc()
        self._spawn_check(seen=started, new_session=started)

    def _master_seen(self) -> None:
        self._spawn_check(seen=True)

    def _spawn_check(self, *, seen: bool = False, new_session: bool = False) -> None:
        if self._server is None:
            return
        check = asyncio.get_running_loop().create_task(self._check_link(seen, new_session))
        self._checks.add(check)
        check.add_done_callback(self._check_done)

    def _check_done(self, check: asyncio.Task[None]) -> None:
        self._checks.discard(check)
        if not check.cancelled() and check.exception() is not None:
            log.error("IEC 104 link check failed", exc_info=check.exception())

    async def _poll_link(self) -> None:
        await self._check_link(seen=False, new_session=False)

    async def _check_link(self, seen: bool, new_session: bool) -> None:
        """Apply the link rule of the module docstring once: Up if seen, Lost if nobody is left."""
        async with self._link_lock:
            server = self._server
            if server is None:
                return
            self._disarm_send_raw(server)
            active = server.active_connection_count
            if server.open_connection_count == 0:
                with self._peers_lock:
                    self._peers.clear()
            previous, self._active = self._active, active
            self._metrics.active_connections.set(active)
            if (seen or active > 0) and not self._link_up:
                self._link_up = True
                log.info("DSO link up (%d master(s) in data transfer)", active)
                self.runtime.submit(DsoLinkUp())
            if active > 0 and (new_session or active > previous):
                # A poll that sees the count rise before the STARTDT con is reported resends
                # too: a master may get the same values twice, never none.
                self._resync()
            if active == 0 and self._link_up:
                self._link_up = False
                log.warning("DSO link lost: no master in data transfer")
                self.runtime.submit(DsoLinkLost())
            elif self._link_up and self._pending_spontaneous():
                self._flush()  # a transmit c104 refused earlier is retried here

    def _resync(self) -> None:
        """A master (re)started data transfer: nothing was queued for it, so send everything now."""
        self._policy.forget()
        self._update(telemetry_from_view(self.runtime.view(), self.specs, self.runtime.clock()))
        self._write_points()
        for ioa in sorted(self._current):
            self._transmit(self._current[ioa], "resync")

    # -- helpers ------------------------------------------------------------------------------

    def _peer(self, originator: int) -> str:
        with self._peers_lock:
            peers = "|".join(self._peers) or "unknown"
        # c104 does not say which connection a command came on; with one master this is exact.
        return f"{peers} oa={originator}"

    def _call_on_loop(self, fn: object, *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]


def asdu_octets(message: c104.IncomingMessage) -> bytes:
    """The ASDU of a received message, without ``IncomingMessage.raw``.

    c104 2.2.1 leaks the buffer behind ``raw`` (32 B a read, docs/c104/raw_leak.py), so the
    header is rebuilt from the message's properties and the information object octets are
    taken from ``raw_explain``, which frees its buffer. Raises ``PeerInputError`` when the
    explanation does not end in the octets.
    """
    objects = explained_octets(str(message.raw_explain))
    cause = (
        (int(message.cot.value) & 0x3F)
        | (0x40 if message.is_negative else 0)
        | (0x80 if message.is_test else 0)
    )
    vsq = (int(message.number_of_objects) & 0x7F) | (0x80 if message.is_sequence else 0)
    head = bytes((int(message.type.value) & 0xFF, vsq, cause, int(message.originator_address) & 0xFF))
    return head + int(message.common_address).to_bytes(2, "little") + objects


def explained_octets(explain: str) -> bytes:
    """The information object octets c104 lists at the end of ``raw_explain`` (none when it lists none)."""
    text = explain.rstrip()
    if not text.endswith(")"):
        return b""  # c104 lists octets only when there are some after the header
    match = _EXPLAINED_OCTETS.search(text)
    if match is None:
        raise PeerInputError(f"unexpected c104 message explanation: {bounded(explain)}")
    return bytes.fromhex(match.group(1))


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _information(value: MonitoredValue) -> c104.Information:
    # c104 converts naive datetimes with the local zone and sends CP56Time2a in UTC.
    recorded_at = datetime.fromtimestamp(value.recorded_at_s)
    quality = _c104_quality(value.quality)
    if value.type_id == TypeId.M_ME_TF_1:
        return c104.ShortInfo(actual=float(value.value), quality=quality, recorded_at=recorded_at)
    return c104.SingleInfo(on=bool(value.value), quality=quality, recorded_at=recorded_at)


def _c104_quality(flags: QualityFlag) -> c104.Quality:
    quality = c104.Quality()
    if flags & QualityFlag.NT:
        quality |= c104.Quality.NonTopical  # type: ignore[operator]  # the stub lacks __or__
    if flags & QualityFlag.IV:
        quality |= c104.Quality.Invalid  # type: ignore[operator]
    return quality


__all__ = ["Iec104Outstation", "Iec104StartError", "asdu_octets", "explained_octets"]
