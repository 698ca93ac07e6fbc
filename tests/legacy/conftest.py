"""A real core with the station server and its legacy listener on 127.0.0.1, OS-chosen ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, parse_config
from gateway.core.arbiter import StationView
from ocpp_side.server import StationServer
from tests.support.loopback import StationSite, start_core


def legacy_config(
    tmp_path: Path,
    legacy: dict[str, Any] | None = None,
    ocpp: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> Config:
    return parse_config(
        {
            "limits": {"initial_limit_w": 100000.0, "fallback_limit_w": 10000.0, **(limits or {})},
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0, **(ocpp or {})},
            "legacy": {"enabled": True, "listen_port": 0, **(legacy or {})},
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )


class LegacySite(StationSite):
    @property
    def legacy_port(self) -> int:
        return self.server.legacy_port

    def online(self, station_id: str) -> StationView:
        """The connected station as the core sees it (it must be connected)."""
        view = self.station(station_id)
        assert view is not None, f"{station_id} is not connected"
        return view

    def metric(self, name: str, labels: dict[str, str]) -> float:
        value = self.runtime.metrics.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value


SiteFactory = Callable[..., Awaitable[LegacySite]]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    sites: list[LegacySite] = []

    async def make(
        legacy: dict[str, Any] | None = None,
        ocpp: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
    ) -> LegacySite:
        config = legacy_config(tmp_path, legacy, ocpp, limits)
        runtime = start_core(config)
        server = StationServer(config.ocpp, config.upstream, runtime, config.legacy)
        await server.start()
        site = LegacySite(config, runtime, server)
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.server.stop()
        await site.runtime.close()
