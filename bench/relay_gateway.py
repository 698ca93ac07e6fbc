"""The gateway under test for the relay benchmark, in its own process (its CPU is measurable).

``bench.gateway_under_test.GatewayUnderTest`` (the station server wired to a real core,
strict validation both ways, the bench's limits) with ``[upstream]`` as the case asks:
no ``csms_url`` (standalone: the gateway answers the stations itself), ``csms_protocol =
"station"`` (each 1.6 station relayed verbatim to a 1.6 CSMS), or ``csms_protocol =
"ocpp2.0.1"`` (each 1.6 station translated for a 2.0.1 CSMS). The relay's own counters are
read from the gateway's metrics registry, so the harness can tell a call the CSMS answered
from one the gateway answered locally (link down or too slow).
"""

from __future__ import annotations

import asyncio
import cProfile
import dataclasses
import io
import logging
import pstats
import time
from multiprocessing.connection import Connection
from typing import Any, Literal

from bench.control import serve_commands
from bench.gateway_under_test import GatewayUnderTest
from bench.stations import raise_fd_limit

log = logging.getLogger(__name__)

CSMS_PROTOCOLS = ("station", "ocpp2.0.1")

# (metric sample, labels) -> the name the harness reports it under
_RELAY_SAMPLES = {
    "relayed_up": ("ocpp809_upstream_calls_relayed_total", {"direction": "station_to_csms"}),
    "relayed_down": ("ocpp809_upstream_calls_relayed_total", {"direction": "csms_to_station"}),
    "answered_locally": ("ocpp809_upstream_calls_answered_locally_total", {}),
    "outbox_appended": ("ocpp809_upstream_outbox_appended_total", {}),
    "links_up": ("ocpp809_upstream_links_up", {}),
}


class RelayGateway(GatewayUnderTest):
    def __init__(self, stations_hint: int, csms_url: str, csms_protocol: str) -> None:
        super().__init__(stations_hint, {"csms_url": csms_url} if csms_url else None)
        if csms_url:
            if csms_protocol not in CSMS_PROTOCOLS:
                raise ValueError(f"csms_protocol {csms_protocol!r}: choose from {', '.join(CSMS_PROTOCOLS)}")
            protocol: Literal["station", "ocpp2.0.1"] = (
                "station" if csms_protocol == "station" else "ocpp2.0.1"
            )
            upstream = dataclasses.replace(self.config.upstream, csms_protocol=protocol)
            self.config = dataclasses.replace(self.config, upstream=upstream)

    def relay_counters(self) -> dict[str, float]:
        """The relay's counters so far (all absent, so 0, when standalone)."""
        assert self.runtime is not None
        registry = self.runtime.metrics.registry
        counters: dict[str, float] = {}
        for name, (sample, labels) in _RELAY_SAMPLES.items():
            value = registry.get_sample_value(sample, labels)
            counters[name] = 0.0 if value is None else float(value)
        return counters


class _Controller:
    def __init__(self, stations_hint: int, csms_url: str, csms_protocol: str) -> None:
        self.gateway = RelayGateway(stations_hint, csms_url, csms_protocol)
        self.profiler: cProfile.Profile | None = None

    async def start(self) -> dict[str, Any]:
        await self.gateway.start()
        return {"port": self.gateway.port}

    def connected(self) -> int:
        return self.gateway.connected()

    async def wait_ready(self, stations: int, timeout_s: float) -> dict[str, Any]:
        """Poll (bounded) until ``stations`` are online, each holding its allocation."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if self.gateway.ready(stations):
                return {"ok": True}
            await asyncio.sleep(0.05)
        return {"ok": False, "connected": self.gateway.connected(), "diagnose": self.gateway.diagnose()}

    def relay_counters(self) -> dict[str, float]:
        return self.gateway.relay_counters()

    def meter_count(self) -> int:
        return self.gateway.meter_count()

    def loop_lag(self) -> dict[str, Any]:
        return self.gateway.loop_lag()

    def quiet(self) -> None:
        self.gateway.quiet()

    def profile_start(self) -> None:
        self.profiler = cProfile.Profile()
        self.profiler.enable()

    def profile_stop(self, top: int = 30) -> str:
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            return ""
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


async def _serve_commands(conn: Connection, stations_hint: int, csms_url: str, csms_protocol: str) -> None:
    controller = _Controller(stations_hint, csms_url, csms_protocol)
    await serve_commands(conn, controller, controller.gateway.stop, "relay-gateway")


def run_relay_gateway(conn: Connection, stations_hint: int, csms_url: str, csms_protocol: str) -> None:
    """Process entry point: ``csms_url`` empty for standalone; ``csms_protocol`` as in [upstream]."""
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    asyncio.run(_serve_commands(conn, stations_hint, csms_url, csms_protocol))
