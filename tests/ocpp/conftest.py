"""A real core (CoreRuntime, temp SQLite store) with the OCPP station server on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, parse_config
from ocpp_side.server import StationServer
from tests.support.loopback import StationSite, start_core


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


class Site(StationSite):
    """The core and the station server, as the composition root wires them."""


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    sites: list[Site] = []

    async def make(ocpp: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> Site:
        config = site_config(tmp_path, ocpp, limits)
        runtime = start_core(config)
        server = StationServer(config.ocpp, config.upstream, runtime)
        await server.start()
        site = Site(config, runtime, server)
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.server.stop()
        await site.runtime.close()
