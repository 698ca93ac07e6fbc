"""A whole core (real runtime, temp SQLite store) with the IEC 104 outstation on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, parse_config
from gateway.runtime import CoreRuntime
from iec104.master import Iec104Master
from iec104.outstation import Iec104Outstation
from tests.support.loopback import start_core


def site_config(tmp_path: Path, **iec104: Any) -> Config:
    """Defaults of the design (6 kW min, 100 kW max) with timers short enough for tests."""
    limits = iec104.pop("limits", {})
    ocpp = iec104.pop("ocpp", {})
    section: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "port": 0,
        "allowed_masters": ["127.0.0.1"],
        "link_poll_s": 0.05,
        "tick_rate_ms": 50,
        "periodic_interval_s": 0.0,
        "deadband_w": 0.0,
    }
    section.update(iec104)
    return parse_config(
        {
            "limits": {"hold_timeout_s": 300.0, **limits},
            "iec104": section,
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, **ocpp},
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )


@dataclass
class Site:
    config: Config
    runtime: CoreRuntime
    outstation: Iec104Outstation

    @property
    def port(self) -> int:
        return self.outstation.port

    def master(self, **kwargs: Any) -> Iec104Master:
        return Iec104Master("127.0.0.1", self.port, **kwargs)

    async def until(self, condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
        """Wait for a state the site reaches on its own (bounded; polls the loop, not the clock)."""

        async def poll() -> None:
            while not condition():
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(poll(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"not reached within {timeout_s} s: {what}") from None


@asynccontextmanager
async def running_site(config: Config) -> AsyncIterator[Site]:
    runtime = start_core(config)
    outstation = Iec104Outstation(config.iec104, runtime)
    try:
        await outstation.start()
        yield Site(config, runtime, outstation)
    finally:
        await outstation.stop()
        await runtime.close()


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_site(site_config(tmp_path)) as running:
        yield running
