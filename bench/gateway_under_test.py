"""The ocpp809 station server under test, wired to a real core the way ``gateway.app`` does.

The fan-out is driven exactly as in production: a DSO setpoint goes into
``CoreRuntime.submit_setpoint``, the arbiter allocates, the station server sends the
profiles, and each station's answer comes back as a ``ProfileResult`` event. The
clock stops when the core itself decides ``AllStationsEnforced``.

Bench-only instrumentation: a decision listener (allowed to every adapter) and a
thin wrapper around ``runtime.submit`` that timestamps ``ProfileResult`` and counts
``MeterSampled`` events on their way into the core. Nothing in ``ocpp_side/`` or the
core is changed.
"""

from __future__ import annotations

import asyncio
import importlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bench.baseline_csms import FanOutResult, StormResult
from gateway.app import arbiter_settings
from gateway.arbiter import Arbiter
from gateway.config import Config, parse_config
from gateway.decisions import AllStationsEnforced, ApplyStationLimit, Decision
from gateway.events import Event, MeterSampled, ProfileResult, SetpointReceived
from gateway.metrics import CoreMetrics
from gateway.model import ProfileOutcome
from gateway.runtime import CoreRuntime
from gateway.store import Store

STATION_MAX_W = 22000.0
STATION_MIN_W = 4140.0


def bench_config(stations: int, store_path: str) -> Config:
    """Limits wide enough that every setpoint of the benchmark changes every station's share."""
    site_max_w = max(1e6, stations * STATION_MAX_W * 2)
    return parse_config(
        {
            "limits": {
                "min_limit_w": 1000.0,
                "max_limit_w": site_max_w,
                # Below one station's minimum: every fallback share is 0 W whatever the station count,
                # so stations connecting do not reshuffle everybody's fallback profile.
                "fallback_limit_w": 1000.0,
                "initial_limit_w": site_max_w,
            },
            "ocpp": {
                "listen_host": "127.0.0.1",
                "port": 0,
                "station_max_power_w": STATION_MAX_W,
                "station_min_power_w": STATION_MIN_W,
            },
            "store": {"path": store_path},
            "metrics": {"enabled": False},
        },
        "<bench>",
    )


def load_station_server() -> type[Any]:
    """Find ``StationServer`` in ocpp_side wherever its author put it."""
    for name in ("ocpp_side", "ocpp_side.server", "ocpp_side.station_server", "ocpp_side.stations"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = getattr(module, "StationServer", None)
        if cls is not None:
            return cls  # type: ignore[no-any-return]
    raise ImportError("ocpp_side has no StationServer yet")


class GatewayUnderTest:
    def __init__(self, stations_hint: int) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ocpp809-bench-")
        self.config = bench_config(stations_hint, str(Path(self._tmp.name) / "bench.sqlite3"))
        self.runtime: CoreRuntime | None = None
        self.server: Any = None
        self.meter_samples = 0
        self.last_power_w: dict[str, float] = {}
        self._t0: float | None = None
        self._expected: dict[str, int] = {}
        self._accepted_at: dict[str, float] = {}
        self._done: asyncio.Future[float] | None = None

    @property
    def port(self) -> int:
        return int(self.server.port)

    async def start(self) -> None:
        config = self.config
        store = Store(config.store.path)
        arbiter = Arbiter.start(arbiter_settings(config), store.load_limit(), time.time())
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        runtime = CoreRuntime(arbiter, store, CoreMetrics(), scheduler)
        self.runtime = runtime
        inner_submit = runtime.submit

        async def submit(event: Event) -> list[Decision]:
            if type(event) is ProfileResult:
                self._on_profile_result(event)
            elif type(event) is MeterSampled:
                self.meter_samples += 1
                self.last_power_w[event.station_id] = event.power_w
            return await inner_submit(event)

        runtime.submit = submit  # type: ignore[method-assign]
        station_server_cls = load_station_server()
        self.server = station_server_cls(config.ocpp, config.upstream, runtime)
        runtime.scheduler.start()
        runtime.start()
        runtime.add_listener(self._on_decisions)
        await self.server.start()

    async def stop(self) -> None:
        try:
            if self.server is not None:
                await self.server.stop()
        finally:
            if self.runtime is not None:
                await self.runtime.close()
            self._tmp.cleanup()

    def connected(self) -> int:
        assert self.runtime is not None
        return len(self.runtime.view().stations)

    def ready(self, stations: int) -> bool:
        """Every station known to the core and holding its latest allocation."""
        assert self.runtime is not None
        view = self.runtime.view()
        return len(view.stations) == stations and view.enforced

    def total_power_w(self) -> float:
        assert self.runtime is not None
        return self.runtime.view().total_power_w

    def meter_count(self) -> int:
        return self.meter_samples

    async def fan_out(self, site_limit_w: float, timeout_s: float = 60.0) -> FanOutResult:
        assert self.runtime is not None
        loop = asyncio.get_running_loop()
        self._expected = {}
        self._accepted_at = {}
        self._done = loop.create_future()
        start = time.perf_counter()
        self._t0 = start
        try:
            outcome = await self.runtime.submit_setpoint(SetpointReceived(site_limit_w, peer="bench"))
            if not outcome.accepted:
                raise RuntimeError(f"the core refused setpoint {site_limit_w:g} W: {outcome.detail}")
            if not self._expected:
                raise RuntimeError(
                    f"setpoint {site_limit_w:g} W changed no station's allocation: nothing to time"
                )
            try:
                done_at = await asyncio.wait_for(self._done, timeout_s)
            except TimeoutError:
                done_at = time.perf_counter()
        finally:
            self._t0 = None
        times = sorted(self._accepted_at.values())
        not_accepted = len(self._expected) - len(self._accepted_at)
        if not self._done.done():
            not_accepted = max(not_accepted, 1)
        return FanOutResult(done_at - start, times, not_accepted)

    async def storm(self, site_limits_w: list[float], gap_s: float, timeout_s: float = 60.0) -> StormResult:
        """Setpoints ``gap_s`` apart, faster than a fan-out completes: time to all Accepted on the last."""
        assert self.runtime is not None
        loop = asyncio.get_running_loop()
        self._expected, self._accepted_at = {}, {}
        self._t0 = last = time.perf_counter()
        done: asyncio.Future[float] = loop.create_future()
        try:
            for index, limit_w in enumerate(site_limits_w):
                if index:
                    await asyncio.sleep(gap_s)
                self._done = done = loop.create_future()  # only the last setpoint's completion counts
                last = time.perf_counter()
                outcome = await self.runtime.submit_setpoint(SetpointReceived(limit_w, peer="bench"))
                if not outcome.accepted:
                    raise RuntimeError(f"the core refused setpoint {limit_w:g} W: {outcome.detail}")
            try:
                done_at: float | None = await asyncio.wait_for(done, timeout_s)
            except TimeoutError:
                done_at = None
        finally:
            self._t0 = None
        return StormResult(None if done_at is None else done_at - last, done_at is not None)

    # -- instrumentation -------------------------------------------------------

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        if self._t0 is None:
            return
        for decision in decisions:
            if type(decision) is ApplyStationLimit:
                self._expected[decision.station_id] = decision.seq
            elif type(decision) is AllStationsEnforced and self._done is not None and not self._done.done():
                self._done.set_result(time.perf_counter())

    def _on_profile_result(self, event: ProfileResult) -> None:
        if self._t0 is None or event.outcome is not ProfileOutcome.ACCEPTED:
            return
        if self._expected.get(event.station_id) == event.seq and event.station_id not in self._accepted_at:
            self._accepted_at[event.station_id] = time.perf_counter() - self._t0
