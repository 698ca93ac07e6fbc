"""What every benchmark mode shares: child processes on a pipe, /proc readings, percentiles.

Every child process is started by ``Child`` and stopped by ``Child.close`` (exit command,
then terminate, then kill, each bounded); every request waits a bounded time.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import time
from multiprocessing.connection import Connection
from typing import Any


class BenchError(RuntimeError):
    pass


class Child:
    """A child process answering (command, kwargs) on a pipe; always stopped by ``close``."""

    def __init__(self, name: str, target: Any, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self.conn: Connection
        self.conn, child_end = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child_end, *args), name=name, daemon=True)
        self.proc.start()
        child_end.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def request(self, command: str, wait_s: float, /, **kwargs: Any) -> Any:
        try:
            self.conn.send((command, kwargs))
            if not self.conn.poll(wait_s):
                raise BenchError(f"{self.name}: no answer to {command} within {wait_s:g} s")
            reply = self.conn.recv()
        except (OSError, EOFError) as exc:
            raise BenchError(f"{self.name}: process gone ({type(exc).__name__}: {exc})") from None
        if not reply["ok"]:
            raise BenchError(f"{self.name}: {command} failed: {reply['error']}")
        return reply.get("result")

    def close(self, wait_s: float = 15.0) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("exit", {}))
                if self.conn.poll(wait_s):
                    self.conn.recv()
            except (OSError, EOFError):
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def connect_fleet(
    sim: Child, url: str, count: int, concurrency: int, timeout_s: float, **extra: Any
) -> dict[str, Any]:
    """``count`` 1.6 stations (ids S…) connected and booted through the station process
    ``sim``, ``concurrency`` handshakes at a time; BenchError if any did not boot."""
    boot: dict[str, Any] = sim.request(
        "connect",
        timeout_s * 2,
        url=url,
        version="ocpp1.6",
        prefix="S",
        count=count,
        concurrency=concurrency,
        timeout_s=timeout_s,
        **extra,
    )
    if boot["failed"]:
        raise BenchError(f"{boot['failed']} of {count} stations did not boot: {boot['errors']}")
    return boot


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (sockets, files, pipes, epoll ...)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def folder_bytes(folder: str) -> int:
    """Bytes in the files of ``folder`` (the gateway's store, its WAL and the relay's outbox)."""
    total = 0
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a server that must come back on the same one after a restart."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def load_avg_1m() -> float:
    return os.getloadavg()[0]


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` (bounded) until it is true; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def machine_cpu_s() -> tuple[float, float]:
    """(busy, steal): CPU seconds of the whole machine since boot, all cores together (/proc/stat).

    Busy is everything but idle, iowait and steal; steal is time the hypervisor gave to others.
    The difference of two readings, less the bench's own processes, is what other work used.
    """
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle, iowait = fields[3], fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user and nice
    return (sum(fields) - guest - idle - iowait - steal) / ticks, steal / ticks
