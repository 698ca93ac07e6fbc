"""The core and the station server on 127.0.0.1 as the composition root wires them, shared by the test suites."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.config import Config
from gateway.core.arbiter import StationView
from gateway.core_build import build_core
from gateway.runtime import CoreRuntime
from gateway.store import Store
from ocpp_side.server import StationServer

WAIT_S = 5.0


def start_core(config: Config) -> CoreRuntime:
    """A started core (store at ``config.store.path``, scheduler on the running loop); close it when done."""
    runtime = build_core(config, Store(config.store.path), time.time, missing_start=None)
    runtime.scheduler.start()
    runtime.start()
    return runtime


class StationSite:
    """The core and the station server, as the composition root wires them."""

    def __init__(self, config: Config, runtime: CoreRuntime, server: StationServer) -> None:
        self.config, self.runtime, self.server = config, runtime, server

    @property
    def port(self) -> int:
        return self.server.port

    def station(self, station_id: str) -> StationView | None:
        """The connected station ``station_id`` as the core sees it (None: not connected)."""
        view = self.reserved(station_id)
        return view if view is not None and view.online else None

    def reserved(self, station_id: str) -> StationView | None:
        """The station as the core keeps it, connected or offline with its commitment."""
        return next((s for s in self.runtime.view().stations if s.station_id == station_id), None)

    async def until(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        """Poll (the core's view and the recordings have no change signal) until ``predicate`` holds, bounded."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.01)
