"""The IEC 104 front: the public listener, which lets only well-formed APDUs through to c104.

Why: c104 2.2.1 and its lib60870 crash on short ASDUs (``iec104.apdu_guard``), and the
wheel cannot be patched where the gateway is installed. So c104 listens on 127.0.0.1 on
an OS-chosen port, and the front owns the public ``iec104.listen_host:port``. For each
master it accepts:

1. ``iec104.allowed_masters`` is checked against the real address (refused: closed at
   once, ``ocpp809_iec104_refused_connections_total``, one rate-limited line);
2. with ``[iec104.tls]`` the front is the TLS server (IEC 62351-3, ``ssl_context``), after
   the address check as lib60870 did it;
3. a connection to c104 is opened from a loopback address of its own (127.1.x.y, unique
   while the connection lives): c104's ``on_connect`` gets only an IP address, and this
   one maps back to the master (``claim``), and the descriptor scan of the slot logic
   (``iec104.connections``) maps back through ``peer_name``. c104 refuses any connection
   the front did not open (``claim`` returns None), so nothing reaches it around the guard;
4. octets from the master go through an ``ApduFilter`` and reach c104 as whole, checked
   APDUs, one write each; the first frame that is not well-formed closes both connections
   (``ocpp809_iec104_frames_refused_total{reason}``, one rate-limited line); octets from
   c104 go to the master unchanged. Either side closing closes the other.

The front runs its own event loop in a thread of its own, so the gateway's loop (busy with
a fan-out to thousands of stations) never delays a frame: a setpoint's way through the
front is two loopback hops on an idle loop. It is Python, though: each frame it forwards
waits for the GIL, up to the interpreter's switch interval (5 ms) while the gateway's
thread computes (measured in bench/README.md). Everything lib60870 does on the connection
(t1-t3, k and w, sequence numbers, STARTDT) is unchanged: it sees the master's frames as
they came, minus the malformed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from iec104.apdu_guard import ApduFilter, Refusal
from iec104.peer_log import PeerLog, bounded

log = logging.getLogger(__name__)

BACKEND_HOST = "127.0.0.1"
_READ_SIZE = 65536
SWITCH_INTERVAL_S = 0.0005  # see start()
_CLOSE_WAIT_S = 2.0
# Source addresses of the connections to c104: 127.1.0.0 .. 127.1.255.255 (all of 127/8 is
# loopback on Linux). Where binding one fails (other systems), 127.0.0.1 is used and the
# front opens one connection to c104 at a time, so the newest unclaimed one is the one.
_SOURCE_BASE = int(ipaddress.IPv4Address("127.1.0.0"))
_SOURCE_COUNT = 1 << 16


@dataclass(frozen=True, slots=True)
class FrontSettings:
    listen_host: str
    port: int  # 0: the OS chooses (``Iec104Front.port`` says which)
    allowed: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]  # empty: any address
    ssl_context: ssl.SSLContext | None = None
    handshake_timeout_s: float = 30.0
    # Connections not yet handed to c104 (in their TLS handshake, or connecting): more are
    # refused at once. lib60870 took at most max_connections + 1 handshakes; the front must
    # not let a crowd of silent handshakes hold descriptors for a handshake timeout each.
    max_pending: int = 16


@dataclass(frozen=True, slots=True)
class FrontHooks:
    """What the front reports: the outstation's peer log and counters (all thread-safe)."""

    peer_log: PeerLog
    connection_refused: Callable[[], None]
    frame_refused: Callable[[Refusal], None]


@dataclass
class _Link:
    """One master's connection and the loopback address its connection to c104 comes from."""

    master: str  # "ip:port" of the master
    master_ip: str
    source: str  # the loopback address the connection to c104 is opened from
    backend_port: int = 0  # its local port, once connected
    claimed: bool = False


def normalised_ip(host: str) -> str:
    """An address as the allowlist and the logs see it (IPv4 peers on a dual-stack socket as IPv4)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class Iec104Front:
    """The guard in front of c104: ``bind`` (public port), ``start`` (c104's port known), ``stop``."""

    def __init__(self, settings: FrontSettings, hooks: FrontHooks) -> None:
        self.settings = settings
        self.hooks = hooks
        self._listener: socket.socket | None = None
        self._backend_port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._lock = threading.Lock()  # _links and _next_source: the front's loop and c104's threads
        self._links: dict[str, _Link] = {}  # by source address
        self._next_source = 0
        self._own_sources = True  # False once binding a 127.1.x.y address failed
        self._serial = asyncio.Lock()  # only when sources are shared (see _SOURCE_BASE)
        self._tasks: set[asyncio.Task[None]] = set()  # the front's loop only
        self._pending = 0  # the front's loop only: sessions not yet handed to c104

    # -- lifecycle (the gateway's loop) -------------------------------------------------

    def bind(self) -> int:
        """Open the public listening socket (OSError when the port is taken); returns its port."""
        host = self.settings.listen_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # "::" takes IPv4 masters too where the system can (they appear as ::ffff:a.b.c.d).
        dualstack = family == socket.AF_INET6 and _unspecified(host) and socket.has_dualstack_ipv6()
        listener = socket.create_server(
            (host, self.settings.port), family=family, backlog=64, dualstack_ipv6=dualstack
        )
        listener.setblocking(False)
        self._listener = listener
        return self.port

    @property
    def port(self) -> int:
        if self._listener is None:
            return self.settings.port
        return int(self._listener.getsockname()[1])

    async def start(self, backend_port: int) -> None:
        """Serve: forward every master that passes to c104 on ``BACKEND_HOST:backend_port``."""
        if self._listener is None:
            self.bind()
        self._backend_port = backend_port
        # Every DSO frame crosses this thread, which needs the GIL while the gateway's loop
        # computes (a fan-out): 0.5 ms instead of Python's 5 ms switch interval gets an ACT_CON
        # through sooner (bench/README.md, "ACT_CON": at rest p50 85 -> 57 ms). Process-wide.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="iec104-front", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)

    async def stop(self) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)
        self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- what c104's callbacks ask (c104's threads) ------------------------------------

    def claim(self, ip: str) -> str | None:
        """The master behind a connection c104 accepted from ``ip``; None if the front did not open it.

        Each connection the front opens can be claimed once: a process that connects to c104's
        port directly gets None, and c104 refuses it.
        """
        with self._lock:
            if ip == BACKEND_HOST:  # shared source (no 127.1.x.y here): the one being connected
                shared = (k for k in self._links.values() if k.source == BACKEND_HOST and not k.claimed)
                link = None if self._own_sources else next(shared, None)
            else:
                link = self._links.get(ip)
            if link is None or link.claimed:
                return None
            link.claimed = True
            return link.master_ip

    def peer_name(self, backend_peer: tuple[str, int]) -> str:
        """The master ("ip:port") behind c104's connection from ``backend_peer``, as far as known."""
        with self._lock:
            for link in self._links.values():
                if link.source == backend_peer[0] and link.backend_port in (0, backend_peer[1]):
                    return link.master
        return f"{backend_peer[0]}:{backend_peer[1]} (not through the front)"

    # -- the front's own thread and loop -------------------------------------------------

    def _run(self, ready: Future[None]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to start() or logged, never lost
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.error("IEC 104 front stopped", exc_info=exc)

    async def _serve(self, ready: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        listener = self._listener
        assert listener is not None
        server = await asyncio.start_server(self._handle, sock=listener, limit=_READ_SIZE)
        tasks = self._tasks
        ready.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _CLOSE_WAIT_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the peer or c104 went away: nothing to report beyond what lib60870 sees
        except asyncio.CancelledError:
            # The front is stopping. Ended quietly: asyncio's stream server reads the handler
            # task's exception when it finishes, which for a cancelled task is an error line.
            pass
        except Exception as exc:  # noqa: BLE001 - our own failure: logged, the front goes on
            self.hooks.peer_log.log(logging.ERROR, "front", "IEC 104 front: connection failed", exc_info=exc)
        finally:
            self._tasks.discard(task)
            await _close(writer)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not peer:
            return  # gone before it was looked at
        ip = normalised_ip(str(peer[0]))
        name = f"[{ip}]:{peer[1]}" if ":" in ip else f"{ip}:{peer[1]}"
        allowed = self.settings.allowed
        if allowed and not _in(ip, allowed):
            self.hooks.connection_refused()
            self.hooks.peer_log.warning(
                ip, f"IEC 104 connection from {bounded(ip)} refused: not in iec104.allowed_masters"
            )
            return
        if self._pending >= self.settings.max_pending:
            self.hooks.connection_refused()
            self.hooks.peer_log.warning(
                ip,
                f"IEC 104 connection from {name} refused: {self._pending} connections are still in"
                " their TLS handshake or connecting",
            )
            return
        self._pending += 1
        try:
            backend = await self._open(name, ip, writer)
        finally:
            self._pending -= 1
        if backend is None:
            return
        link, (back_reader, back_writer) = backend
        try:
            try:
                await self._pump(name, ip, reader, writer, back_reader, back_writer)
            finally:
                await _close(back_writer)
        finally:
            with self._lock:
                self._links.pop(link.source, None)

    async def _open(
        self, name: str, ip: str, writer: asyncio.StreamWriter
    ) -> tuple[_Link, tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None:
        """TLS (when configured), then the connection to c104; None when either failed."""
        context = self.settings.ssl_context
        if context is not None:
            try:
                await writer.start_tls(context, ssl_handshake_timeout=self.settings.handshake_timeout_s)
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
                self.hooks.peer_log.warning(ip, f"IEC 104 TLS handshake with {name} failed: {bounded(exc)}")
                return None
        link = self._new_link(name, ip)
        try:
            return link, await self._connect(link)
        except BaseException:
            with self._lock:
                self._links.pop(link.source, None)
            raise

    def _new_link(self, name: str, ip: str) -> _Link:
        with self._lock:
            source = BACKEND_HOST
            if self._own_sources:
                for _ in range(_SOURCE_COUNT):
                    candidate = str(ipaddress.IPv4Address(_SOURCE_BASE + self._next_source))
                    self._next_source = (self._next_source + 1) % _SOURCE_COUNT
                    if candidate not in self._links:
                        source = candidate
                        break
            link = _Link(name, ip, source)
            if source != BACKEND_HOST:
                self._links[source] = link
            return link

    async def _connect(self, link: _Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if link.source != BACKEND_HOST:
            try:
                backend = await asyncio.open_connection(
                    BACKEND_HOST, self._backend_port, local_addr=(link.source, 0), limit=_READ_SIZE
                )
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:  # anything but "127.1.x.y is not local here"
                    raise
                with self._lock:
                    self._own_sources = False
                    self._links.pop(link.source, None)
                log.warning(
                    "IEC 104 front: %s is not a local address; connecting from %s", link.source, BACKEND_HOST
                )
                link.source = BACKEND_HOST
            else:
                link.backend_port = int(backend[1].get_extra_info("sockname")[1])
                return backend
        async with self._serial:  # one unclaimed connection from 127.0.0.1 at a time
            with self._lock:
                self._links[f"{BACKEND_HOST}#{id(link)}"] = link
            try:
                backend = await asyncio.open_connection(BACKEND_HOST, self._backend_port, limit=_READ_SIZE)
                for _ in range(100):  # until c104's on_connect claimed it (or refused it)
                    if link.claimed or backend[0].at_eof():
                        break
                    await asyncio.sleep(0.01)
                return backend
            finally:
                with self._lock:
                    self._links.pop(f"{BACKEND_HOST}#{id(link)}", None)

    async def _pump(
        self,
        name: str,
        ip: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        back_reader: asyncio.StreamReader,
        back_writer: asyncio.StreamWriter,
    ) -> None:
        inbound = asyncio.ensure_future(self._inbound(name, ip, reader, back_writer))
        outbound = asyncio.ensure_future(_copy(back_reader, writer))
        try:
            await asyncio.wait((inbound, outbound), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (inbound, outbound):
                task.cancel()
            await asyncio.gather(inbound, outbound, return_exceptions=True)

    async def _inbound(
        self, name: str, ip: str, reader: asyncio.StreamReader, back_writer: asyncio.StreamWriter
    ) -> None:
        """Master -> c104: whole checked APDUs, until the master closes or sends a bad frame."""
        apdus = ApduFilter()
        while data := await reader.read(_READ_SIZE):
            frames = apdus.receive_data(data)
            if frames:
                back_writer.write(b"".join(frames))
                await back_writer.drain()
            if apdus.refused is not None:
                reason, head = apdus.refused.reason, apdus.refused.head
                self.hooks.frame_refused(reason)
                self.hooks.peer_log.warning(
                    ip,
                    f"IEC 104 frame from {name} refused ({reason.value}: {head.hex(' ')}"
                    f"{' ...' if len(head) >= 16 else ''}); connection closed",
                )
                return


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """c104 -> master, unchanged."""
    while data := await reader.read(_READ_SIZE):
        writer.write(data)
        await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT_S)


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _in(ip: str, allowed: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        return ipaddress.ip_address(ip) in allowed
    except ValueError:
        return False


__all__ = ["BACKEND_HOST", "FrontHooks", "FrontSettings", "Iec104Front", "normalised_ip"]
