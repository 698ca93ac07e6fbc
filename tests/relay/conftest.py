"""A real core and station server relaying to the recording CSMS simulator, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from ocpp.routing import on
from ocpp.v16 import call_result as result16
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect

from gateway.config import Config, parse_config
from gateway.runtime import CoreRuntime
from ocpp_side.server import StationServer
from scenarios.sim_csms import SimCsms
from tests.ocpp.stations import Behaviour, Station16, Station201, running
from tests.support.loopback import StationSite, start_core


class RecordingWs:
    """The station's websocket, recording every text frame it sends and receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sent: list[str] = []
        self.received: list[str] = []

    async def recv(self) -> str:
        message = await self.ws.recv()
        self.received.append(message)
        return str(message)

    async def send(self, message: str) -> None:
        self.sent.append(message)
        await self.ws.send(message)

    def calls_sent(self) -> list[str]:
        return [m for m in self.sent if orjson.loads(m)[0] == 2]

    def calls_received(self) -> list[list[Any]]:
        return [msg for m in self.received if (msg := orjson.loads(m))[0] == 2]


class RelayStation16(Station16):
    @on("ClearChargingProfile")
    async def on_clear(self, **kwargs: Any) -> Any:
        await self.log.add("ClearChargingProfile", kwargs)
        return result16.ClearChargingProfile(status="Accepted")

    @on("RemoteStopTransaction")
    async def on_remote_stop(self, transaction_id: int) -> Any:
        await self.log.add("RemoteStopTransaction", {"transaction_id": transaction_id})
        return result16.RemoteStopTransaction(status="Accepted")


class RelayStation201(Station201):
    @on("ClearChargingProfile")
    async def on_clear(self, **kwargs: Any) -> Any:
        await self.log.add("ClearChargingProfile", kwargs)
        return result201.ClearChargingProfile(status="Accepted")


@contextlib.asynccontextmanager
async def relay_station(port: int, station_id: str, version: str = "ocpp1.6") -> Any:
    """A real library station whose frames are recorded; closed on exit."""
    ws = await connect(f"ws://127.0.0.1:{port}/{station_id}", subprotocols=[version])  # type: ignore[list-item]
    rec = RecordingWs(ws)
    cls = RelayStation16 if version == "ocpp1.6" else RelayStation201
    cp = cls(station_id, rec, Behaviour())
    cp.wire = rec
    async with running(cp, ws):
        yield cp


class Site(StationSite):
    """The core and the station server, relaying to the recording CSMS simulator."""

    def __init__(self, config: Config, runtime: CoreRuntime, server: StationServer, csms: SimCsms) -> None:
        super().__init__(config, runtime, server)
        self.csms = csms

    def upstream_in(self, station_id: str) -> list[str]:
        return [f.raw for f in self.csms.frames_of(station_id, "in")]

    def upstream_out(self, station_id: str) -> list[str]:
        return [f.raw for f in self.csms.frames_of(station_id, "out")]


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    sites: list[Site] = []

    async def make(upstream: dict[str, Any] | None = None, ocpp: dict[str, Any] | None = None) -> Site:
        csms = SimCsms("127.0.0.1", 0)
        await csms.start()
        config = parse_config(
            {
                "limits": {"initial_limit_w": 100000.0, "fallback_limit_w": 10000.0},
                "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0, **(ocpp or {})},
                "upstream": {
                    "csms_url": csms.url,
                    "outbox_path": str(tmp_path / f"outbox{len(sites)}.sqlite3"),
                    "reconnect_min_s": 0.05,
                    "reconnect_max_s": 0.2,
                    "connect_wait_s": 2.0,
                    "call_timeout_s": 2.0,
                    **(upstream or {}),
                },
                "metrics": {"enabled": False},
                "store": {"path": str(tmp_path / f"store{len(sites)}.sqlite3")},
            }
        )
        runtime = start_core(config)
        server = StationServer(config.ocpp, config.upstream, runtime)
        assert server.relay_hub is not None
        server.relay_hub.capacity_w = config.limits.max_limit_w  # as the composition root does
        await server.start()
        site = Site(config, runtime, server, csms)
        sites.append(site)
        return site

    yield make
    for site in sites:  # bounded, so a hang fails here and says where
        await asyncio.wait_for(site.server.stop(), 20)
        await asyncio.wait_for(site.runtime.close(), 10)
        await asyncio.wait_for(site.csms.stop(), 10)
