"""The central system under test, in its own process, driven by the harness over a pipe.

Both systems offer the same small surface (``start/stop``, ``port``, ``connected``,
``ready``, ``fan_out``, ``meter_count``, ``total_power_w``), so the harness treats
them alike. Commands are read on a dedicated thread, so the asyncio loop and the
default executor (which the ``ocpp`` library uses for validation) stay the
system's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import ctypes
import gc
import io
import logging
import pstats
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.control import serve_commands
from bench.stations import raise_fd_limit

log = logging.getLogger(__name__)

SYSTEMS = ("baseline", "gateway")


def _make_system(system: str, stations_hint: int, options: dict[str, Any] | None) -> Any:
    if system == "baseline":
        from bench.baseline_csms import BaselineCsms

        return BaselineCsms()
    if system == "gateway":
        from bench.gateway_under_test import GatewayUnderTest

        return GatewayUnderTest(stations_hint, options)
    raise ValueError(f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}")


class _GcClock:
    """Wall time spent in the cyclic garbage collector, by generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.runs[generation] += 1

    def take(self) -> dict[str, list[float] | list[int]]:
        taken: dict[str, list[float] | list[int]] = {"seconds": self.seconds, "runs": self.runs}
        self.seconds, self.runs = [0.0, 0.0, 0.0], [0, 0, 0]
        return taken


class _Controller:
    def __init__(self, system: str, stations_hint: int, options: dict[str, Any] | None = None) -> None:
        self.system = _make_system(system, stations_hint, options)
        self.profiler: cProfile.Profile | None = None
        self.gc_clock = _GcClock()
        self._dropping: asyncio.Task[None] | None = None
        self.drops = 0

    def gc_freeze(self) -> int:
        """What-if: move every live object to the permanent generation (``--gc-freeze``)."""
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()

    def gc_time(self) -> dict[str, list[float] | list[int]]:
        """GC time since the last call."""
        return self.gc_clock.take()

    async def start(self) -> dict[str, Any]:
        await self.system.start()
        return {"port": self.system.port, "iec104_port": getattr(self.system, "iec104_port", None)}

    def tasks(self) -> int:
        """asyncio tasks alive in this process (the soak's leak check)."""
        return len(asyncio.all_tasks())

    def health(self) -> dict[str, int]:
        """The soak's per-minute reading from inside: asyncio tasks, and the blocks Python's own
        allocator holds (objects; what is not in it and still grows RSS is native: c104, SQLite)."""
        return {"tasks": len(asyncio.all_tasks()), "py_blocks": sys.getallocatedblocks()}

    def setpoints_seen(self, since: int = 0) -> list[tuple[float, float, int | None, bool, str]]:
        """Gateway: the setpoints that reached the core from index ``since`` on (see GatewayUnderTest)."""
        return list(getattr(self.system, "setpoints_seen", [])[since:])

    def loop_lag(self) -> dict[str, Any]:
        """Gateway: the event loop's worst lateness since the last call."""
        lag = getattr(self.system, "loop_lag", None)
        return {} if lag is None else dict(lag())

    def commands_seen(self, since: int = 0) -> list[tuple[float, float]]:
        """Gateway: the commands the outstation decided on c104's thread, from index ``since`` on."""
        return list(getattr(self.system, "commands_seen", [])[since:])

    def drop(self, down_s: float) -> bool:
        """A central system that drops: every connection closed, the listener gone for ``down_s``,
        then back on the same port. Returns at once; False if the previous drop is still running."""
        if self._dropping is not None and not self._dropping.done():
            return False
        self._dropping = asyncio.get_running_loop().create_task(self._drop(down_s))
        return True

    async def _drop(self, down_s: float) -> None:
        port = self.system.port
        await self.system.stop()
        await asyncio.sleep(down_s)
        await self.system.start(port=port)
        self.drops += 1

    def drop_count(self) -> int:
        return self.drops

    def connected(self) -> int:
        return int(self.system.connected())

    async def wait_ready(self, stations: int, timeout_s: float) -> dict[str, Any]:
        """Poll (bounded) until the system holds ``stations`` booted, enforced stations."""
        start = time.perf_counter()
        deadline = start + timeout_s
        while time.perf_counter() < deadline:
            if self.system.ready(stations):
                return {"ok": True, "elapsed_s": time.perf_counter() - start}
            await asyncio.sleep(0.02)
        return {"ok": False, "elapsed_s": time.perf_counter() - start, "connected": self.connected()}

    def diagnose(self) -> dict[str, Any]:
        diagnose = getattr(self.system, "diagnose", None)
        return {} if diagnose is None else dict(diagnose())

    def quiet(self) -> None:
        """Teardown: the system's per-station log lines (stations going offline) are noise now."""
        quiet = getattr(self.system, "quiet", None)
        if quiet is not None:
            quiet()

    async def release_offline(self) -> int:
        """Gateway: release stations that went away still holding profiles (the warm-up's)."""
        release = getattr(self.system, "release_offline", None)
        return 0 if release is None else int(await release())

    def join_start(self, station_id: str) -> None:
        self.system.join_start(station_id)

    async def join_wait(self, timeout_s: float) -> dict[str, Any]:
        return dict(await self.system.join_wait(timeout_s))

    async def fan_out(self, site_limit_w: float, timeout_s: float) -> dict[str, Any]:
        result = await self.system.fan_out(site_limit_w, timeout_s)
        return {
            "elapsed_s": result.elapsed_s,
            "accept_times_s": list(result.accept_times_s),
            "not_accepted": result.not_accepted,
        }

    def settle_memory(self) -> None:
        """Collect garbage and hand free heap back to the OS, so RSS deltas count live memory only."""
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: RSS keeps the allocator's slack
            pass

    async def storm(self, site_limits_w: list[float], gap_s: float, timeout_s: float) -> dict[str, Any]:
        result = await self.system.storm(site_limits_w, gap_s, timeout_s)
        return {"after_last_s": result.after_last_s, "all_accepted": result.all_accepted}

    def ingestion(self) -> dict[str, Any]:
        return {"meter_values": self.system.meter_count(), "total_power_w": self.system.total_power_w()}

    def profile_start(self) -> None:
        self.profiler = cProfile.Profile()
        self.profiler.enable()

    def profile_stop(self, top: int = 25) -> str:
        if self.profiler is None:
            return ""
        self.profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        self.profiler = None
        return out.getvalue()

    async def stop(self) -> None:
        if self._dropping is not None and not self._dropping.done():
            self._dropping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dropping
        await self.system.stop()


async def _serve_commands(
    conn: Connection, system: str, stations_hint: int, options: dict[str, Any] | None
) -> None:
    controller = _Controller(system, stations_hint, options)
    await serve_commands(conn, controller, controller.stop, "server")


def run_server(
    conn: Connection, system: str, stations_hint: int, options: dict[str, Any] | None = None
) -> None:
    """Process entry point for one central system under test (``options``: GatewayUnderTest's)."""
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    asyncio.run(_serve_commands(conn, system, stations_hint, options))
