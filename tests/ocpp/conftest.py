"""A real core (CoreRuntime, temp SQLite store) with the OCPP station server on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.app import arbiter_settings
from gateway.arbiter import Arbiter, StationView
from gateway.config import Config, parse_config
from gateway.metrics import CoreMetrics
from gateway.runtime import CoreRuntime
from gateway.store import Store
from ocpp_side.server import StationServer

WAIT_S = 5.0


def site_config(
    tmp_path: Path, ocpp: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> Config:
    return parse_config(
        {
            "limits": {"initial_limit_w": 100000.0, "fallback_limit_w": 10000.0, **(limits or {})},
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0, **(ocpp or {})},
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )


class Site:
    """The core and the station server, as the composition root wires them."""

    def __init__(self, config: Config, runtime: CoreRuntime, server: StationServer) -> None:
        self.config, self.runtime, self.server = config, runtime, server

    @property
    def port(self) -> int:
        return self.server.port

    def station(self, station_id: str) -> StationView | None:
        return next((s for s in self.runtime.view().stations if s.station_id == station_id), None)

    async def until(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        """Poll the core's view (it has no change signal) until ``predicate`` holds, bounded."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.01)


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    sites: list[Site] = []

    async def make(ocpp: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> Site:
        config = site_config(tmp_path, ocpp, limits)
        store = Store(config.store.path)
        arbiter = Arbiter.start(arbiter_settings(config), store.load_limit(), time.time())
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        runtime = CoreRuntime(arbiter, store, CoreMetrics(), scheduler)
        scheduler.start()
        runtime.start()
        server = StationServer(config.ocpp, config.upstream, runtime)
        await server.start()
        site = Site(config, runtime, server)
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.server.stop()
        await site.runtime.close()
