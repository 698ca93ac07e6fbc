"""The DSO's IEC 104 master in its own process: the project's ``iec104.master.Iec104Master``.

Timed from the wire: a setpoint's latency is from just before its C_SE_NC_1 is written to
the moment its ACT_CON (or negative confirmation) has been read and decoded by the master.
In a process of its own, so neither the stations nor the gateway delay what it reads.

Driven by the harness over a pipe (``bench.control``); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.control import serve_commands
from iec104.master import Iec104Master

log = logging.getLogger(__name__)

SETPOINT_IOA = 100  # the gateway's default C_SE_NC_1 point (iec104.points.limit_setpoint)


@dataclass
class SoakStats:
    sent: int = 0
    positive: int = 0
    negative: int = 0
    failed: int = 0  # no answer, connection lost
    latencies_s: list[float] = field(default_factory=list)
    reconnects: int = 0
    connect_failures: int = 0
    frames_after_connect: int = (
        0  # frames the outstation wrote within t1 of each connect (c104's leak window)
    )
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text)


class MasterDriver:
    def __init__(self) -> None:
        self.master: Iec104Master | None = None
        self.connected_at = 0.0  # time.time() of the latest STARTDT con
        self._soak: asyncio.Task[None] | None = None
        self._soak_stopping: asyncio.Event | None = None
        self.soak = SoakStats()

    async def connect(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        await self.close()
        master = Iec104Master(host, port, connect_timeout_s=timeout_s, answer_timeout_s=timeout_s)
        await master.connect()
        try:
            await master.start_data_transfer()
        except BaseException:
            await master.close()
            raise
        self.master = master
        self.connected_at = time.time()

    async def close(self) -> None:
        master, self.master = self.master, None
        if master is not None:
            await master.close()

    def frames_since_connect(self, window_s: float) -> int:
        """ASDUs the outstation sent within ``window_s`` of the latest connect, plus its STARTDT con."""
        master = self.master
        if master is None:
            return 0
        end = self.connected_at + window_s
        return 1 + sum(1 for r in master.received if r.received_at_s <= end)

    async def setpoints(
        self,
        values_w: list[float],
        gaps_s: list[float],
        timeout_s: float,
        ioa: int = SETPOINT_IOA,
        max_s: float | None = None,
    ) -> list[dict[str, Any]]:
        """Send ``values_w[i]`` at start + sum(gaps_s[:i]) (or at once if the previous answer came
        later); each with its ACT_CON latency and whether it was positive. With ``max_s``, no
        setpoint is sent once that long has passed (a gateway answering slowly bounds the series)."""
        master = self.master
        if master is None:
            raise RuntimeError("connect first")
        results = []
        due = started = time.perf_counter()
        for index, value in enumerate(values_w):
            if max_s is not None and time.perf_counter() - started > max_s:
                break
            if index:
                due += gaps_s[index - 1]
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.perf_counter()
            con = await master.send_setpoint(ioa, value, timeout_s=timeout_s)
            results.append(
                {"value_w": value, "latency_s": time.perf_counter() - sent, "positive": con.positive}
            )
        return results

    # -- soak: a setpoint every few seconds, a reconnect now and then -----------------

    def soak_start(
        self,
        host: str,
        port: int,
        values_w: list[float],
        every_s: float,
        reconnect_every_s: float,
        t1_s: float,
        timeout_s: float = 10.0,
    ) -> None:
        self.soak = SoakStats()
        self._soak_stopping = asyncio.Event()
        self._soak = asyncio.get_running_loop().create_task(
            self._soak_loop(host, port, values_w, every_s, reconnect_every_s, t1_s, timeout_s)
        )

    async def _soak_loop(
        self,
        host: str,
        port: int,
        values_w: list[float],
        every_s: float,
        reconnect_every_s: float,
        t1_s: float,
        timeout_s: float,
    ) -> None:
        stats = self.soak
        stopping = self._soak_stopping
        assert stopping is not None
        loop = asyncio.get_running_loop()
        next_reconnect = loop.time() + reconnect_every_s
        index = 0
        due = loop.time()
        while not stopping.is_set():
            if self.master is None or loop.time() >= next_reconnect:
                if self.master is not None:
                    stats.frames_after_connect += self.frames_since_connect(t1_s)
                    await self.close()
                    stats.reconnects += 1
                    await asyncio.sleep(1.0)  # away for a second: the gateway sees the link go
                try:
                    await self.connect(host, port, timeout_s)
                except Exception as exc:  # noqa: BLE001 - counted; tried again on the next round
                    stats.connect_failures += 1
                    stats.error(f"connect: {type(exc).__name__}: {exc}")
                next_reconnect = loop.time() + reconnect_every_s
            master = self.master
            if master is not None:
                value = values_w[index % len(values_w)]
                index += 1
                stats.sent += 1
                sent = time.perf_counter()
                try:
                    con = await master.send_setpoint(SETPOINT_IOA, value, timeout_s=timeout_s)
                except Exception as exc:  # noqa: BLE001 - counted: the soak goes on
                    stats.failed += 1
                    stats.error(f"setpoint: {type(exc).__name__}: {exc}")
                    await self.close()
                else:
                    stats.latencies_s.append(time.perf_counter() - sent)
                    if con.positive:
                        stats.positive += 1
                    else:
                        stats.negative += 1
            due += every_s
            with contextlib.suppress(TimeoutError):  # woken early by soak_stop
                await asyncio.wait_for(stopping.wait(), max(0.0, due - loop.time()))

    def soak_stats(self) -> dict[str, Any]:
        s = self.soak
        return {
            "sent": s.sent,
            "positive": s.positive,
            "negative": s.negative,
            "failed": s.failed,
            "latencies_s": list(s.latencies_s),
            "reconnects": s.reconnects,
            "connect_failures": s.connect_failures,
            "frames_after_connect": s.frames_after_connect,
            "errors": list(s.errors),
        }

    async def soak_stop(self, t1_s: float, timeout_s: float = 15.0) -> dict[str, Any]:
        """Stop after the setpoint in flight (if any) has its answer, so every one sent is counted."""
        task, self._soak = self._soak, None
        if self._soak_stopping is not None:
            self._soak_stopping.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.master is not None:
            self.soak.frames_after_connect += self.frames_since_connect(t1_s)
        await self.close()
        return self.soak_stats()

    async def stop(self) -> None:
        if self._soak is not None:
            self._soak.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._soak
        await self.close()


async def _serve_commands(conn: Connection) -> None:
    driver = MasterDriver()
    await serve_commands(conn, driver, driver.stop, "master")


def run_master(conn: Connection) -> None:
    """Process entry point: serve harness commands until told to exit."""
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve_commands(conn))
