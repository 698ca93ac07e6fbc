"""The outstation's TCP connections as the kernel sees them, to make room when every slot is taken.

Why this exists: c104 2.2.1 neither lists a server's connections nor closes one, and
lib60870 keeps a connection that stalls (a master that sends half an APDU, or nothing)
until t3 + t1, 35 s by default: two such connections held both ``max_connections``
slots and locked the SCADA out (issue 13). The sockets are in this process, though, so
the kernel can say how long each one has been silent (``TCP_INFO``,
``tcpi_last_data_recv``) and a ``shutdown()`` ends one: lib60870's connection thread
reads end-of-file, closes the connection and frees its slot as for any peer that left.

Linux only (``/proc/self/fd`` and ``TCP_INFO``); elsewhere ``outstation_connections``
finds nothing and no connection is ever dropped. Nothing here closes or keeps a
descriptor it does not own: each socket is inspected and shut down through a ``dup``,
and only after checking, on that duplicate, that it is still the same connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TCP_ESTABLISHED = 1
# struct tcp_info (linux/tcp.h): u8 tcpi_state at 0, u32 tcpi_last_data_recv at 52.
_TCP_INFO_SIZE = 104
_STATE = struct.Struct("B")
_LAST_DATA_RECV_MS = struct.Struct("I")
_LAST_DATA_RECV_OFFSET = 52

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TcpConnection:
    """One connection accepted on the outstation's port."""

    fd: int  # the process's descriptor (lib60870's); never closed here
    local: Endpoint
    peer: Endpoint
    state: int  # TCP state (1: established)
    silent_s: float  # since the last data segment from the peer (since the accept when none came)

    @property
    def name(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"


def outstation_connections(host: str, port: int) -> list[TcpConnection]:
    """The TCP connections of this process whose local end is ``host:port`` (any host for 0.0.0.0/::).

    Costs one ``readlink`` per descriptor and a look at every socket: about 50 us a socket
    (270 ms with 5,000 station sockets in the development sandbox), hence ``ConnectionCache``.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    found: list[TcpConnection] = []
    for fd in fds:
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        connection = _inspect(fd, host, port)
        if connection is not None:
            found.append(connection)
    return found


class ConnectionCache:
    """The outstation's connections, looked up cheaply: the known descriptors are re-read, and the
    whole descriptor table is scanned only when fewer are found than expected, at most once per
    ``min_scan_interval_s`` (a peer that connects in a loop cannot make the gateway scan in a loop)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        min_scan_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.min_scan_interval_s = min_scan_interval_s
        self.clock = clock
        self.scans = 0
        self._known: list[TcpConnection] = []
        self._last_scan_s: float | None = None

    def connections(self, expected: int) -> list[TcpConnection]:
        current = [c for c in (_reinspect(k, self.host, self.port) for k in self._known) if c is not None]
        now = self.clock()
        due = self._last_scan_s is None or now - self._last_scan_s >= self.min_scan_interval_s
        if len(current) < expected and due:
            self._last_scan_s = now
            self.scans += 1
            current = outstation_connections(self.host, self.port)
        self._known = current
        return current


def most_stalled(connections: Iterable[TcpConnection], stall_s: float) -> TcpConnection | None:
    """The established connection silent longest, if it has been silent at least ``stall_s``."""
    candidates = [c for c in connections if c.state == TCP_ESTABLISHED and c.silent_s >= stall_s]
    return max(candidates, key=lambda c: c.silent_s, default=None)


def shut_down(connection: TcpConnection) -> bool:
    """End ``connection`` (FIN both ways) if its descriptor still holds it; the owner closes it."""
    dup = _dup_socket(connection.fd)
    if dup is None:
        return False
    with dup:
        try:
            if (
                _endpoint(dup.getsockname()) != connection.local
                or _endpoint(dup.getpeername()) != connection.peer
            ):
                return False  # the descriptor was closed and reused meanwhile: not ours to touch
            dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
    return True


def _reinspect(known: TcpConnection, host: str, port: int) -> TcpConnection | None:
    """``known`` read again, if its descriptor still holds the same connection."""
    current = _inspect(known.fd, host, port)
    if current is None or current.local != known.local or current.peer != known.peer:
        return None
    return current


def _inspect(fd: int, host: str, port: int) -> TcpConnection | None:
    dup = _dup_socket(fd)
    if dup is None:
        return None
    with dup:
        try:
            if dup.family not in (socket.AF_INET, socket.AF_INET6) or dup.type != socket.SOCK_STREAM:
                return None
            local = _endpoint(dup.getsockname())
            if local[1] != port or not _same_host(local[0], host):
                return None
            peer = _endpoint(dup.getpeername())  # OSError for the listening socket
            info = dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return None
    if len(info) < _LAST_DATA_RECV_OFFSET + _LAST_DATA_RECV_MS.size:
        return None
    (state,) = _STATE.unpack_from(info, 0)
    (last_recv_ms,) = _LAST_DATA_RECV_MS.unpack_from(info, _LAST_DATA_RECV_OFFSET)
    return TcpConnection(fd, local, peer, state, last_recv_ms / 1000)


def _dup_socket(fd: int) -> socket.socket | None:
    try:
        copy = os.dup(fd)
    except OSError:
        return None
    try:
        return socket.socket(fileno=copy)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(copy)
        return None


def _endpoint(address: object) -> Endpoint:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        if host.startswith("::ffff:"):  # an IPv4 peer on a dual-stack socket
            host = host.removeprefix("::ffff:")
        return host, int(address[1])
    raise OSError(f"not an IP endpoint: {address!r}")


def _same_host(local: str, listen_host: str) -> bool:
    try:
        listen = ipaddress.ip_address(listen_host)
    except ValueError:
        return True  # a host name: the port decides
    if listen.is_unspecified:
        return True
    try:
        return ipaddress.ip_address(local) == listen
    except ValueError:
        return False


__all__ = [
    "TCP_ESTABLISHED",
    "ConnectionCache",
    "TcpConnection",
    "most_stalled",
    "outstation_connections",
    "shut_down",
]
