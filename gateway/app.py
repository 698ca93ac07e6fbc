"""The composition root: the one place that builds the core, the store and the adapters."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from gateway import __version__
from gateway.config import Config
from gateway.core_build import build_core
from gateway.errors import Ocpp809Error, StartupError, StoreError
from gateway.operator_requests import RequestSpool
from gateway.runtime import Clock, CoreRuntime
from gateway.status_page import StationNotes, StatusServer
from gateway.store import Store

log = logging.getLogger(__name__)


class Adapter(Protocol):
    """An I/O adapter: started after the core, stopped before it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _what(adapter: Adapter, config: Config) -> str:
    """How the operator knows an adapter: the listener and its address."""
    kind = type(adapter).__name__
    if kind == "Iec104Outstation":
        return f"IEC 104 listener {config.iec104.listen_host}:{config.iec104.port}"
    if kind == "StationServer":
        return f"OCPP listener {config.ocpp.listen_host}:{config.ocpp.port}"
    if kind == "RequestSpool":
        return f"operator request folder of store {config.store.path}"
    return kind


@contextmanager
def _naming_failures(what: str) -> Iterator[None]:
    """A start-up failure of the operator's environment becomes one line naming what failed."""
    try:
        yield
    except StartupError:
        raise
    except ssl.SSLError as exc:
        raise StartupError(f"{what}: TLS: {exc.reason or exc}") from None
    except OSError as exc:
        raise StartupError(f"{what}: {exc.strerror or exc}") from None
    except Ocpp809Error as exc:  # an adapter's own start error (c104's "port in use?", ...)
        if isinstance(exc, StoreError):
            raise
        raise StartupError(f"{what}: {exc}") from None


@dataclass
class Gateway:
    config: Config
    runtime: CoreRuntime
    adapters: list[Adapter] = field(default_factory=list)
    metrics_server: StatusServer | None = None
    station_notes: StationNotes | None = None  # per-station lines the status page adds

    async def start(self) -> None:
        self.runtime.scheduler.start()
        self.runtime.start()
        started: list[Adapter] = []
        try:
            for adapter in self.adapters:
                with _naming_failures(_what(adapter, self.config)):
                    await adapter.start()
                started.append(adapter)
            if self.config.metrics.enabled:  # /metrics, the status page and /healthz
                metrics = self.config.metrics
                with _naming_failures(f"metrics listener {metrics.listen_host}:{metrics.port}"):
                    loop = asyncio.get_running_loop()
                    server = StatusServer(metrics, self.runtime, loop, self.station_notes)
                    server.start()
                self.metrics_server = server
                log.info("status page on %s (/metrics, /healthz)", server.url)
        except BaseException:
            for adapter in reversed(started):
                await adapter.stop()
            await self.runtime.close()
            raise

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics port (the configured one may be 0)."""
        return None if self.metrics_server is None else self.metrics_server.port

    async def stop(self) -> None:
        for adapter in reversed(self.adapters):
            try:
                await adapter.stop()
            except Exception:
                log.exception("adapter %r did not stop cleanly", adapter)
        if self.metrics_server is not None:  # off the loop: a request waiting for a snapshot still gets one
            await asyncio.to_thread(self.metrics_server.close)
        await self.runtime.close()


def build_gateway(config: Config, clock: Clock = time.time) -> Gateway:
    """Wire everything from ``config``; nothing listens until ``start()``.

    The store comes first: it takes the one-gateway-per-store lock before anything is
    written, so a second gateway on the same store fails here and touches nothing.
    """
    store = Store(config.store.path)
    try:
        runtime = build_core(config, store, clock, missing_start=config.store.missing_start)
        adapters, notes = _build_adapters(config, runtime)
        gateway = Gateway(config, runtime, adapters, station_notes=notes)
    except BaseException:
        store.close()  # and with it the lock
        raise
    return gateway


def _build_adapters(config: Config, runtime: CoreRuntime) -> tuple[list[Adapter], StationNotes]:
    """The adapters, in start order, and what the stations side tells the status page per station."""
    adapters: list[Adapter] = []
    # Adapters are added here as they land (iec104/, ocpp_side/).
    from iec104.outstation import Iec104Outstation  # c104 is loaded only where the gateway is built

    adapters.append(Iec104Outstation(config.iec104, runtime))
    from ocpp_side.server import StationServer

    station_server = StationServer(config.ocpp, config.upstream, runtime, config.legacy)
    if station_server.relay_hub is not None:  # a limit at the grid capacity counts as lifted for the CSMS
        station_server.relay_hub.capacity_w = config.limits.max_limit_w
    adapters.append(station_server)
    adapters.append(RequestSpool(config.store.path, runtime))  # operator requests (ocpp809 release)
    return adapters, station_server.metering


async def run_until_stopped(config: Config, stop: asyncio.Event, config_file: str | None = None) -> None:
    gateway = build_gateway(config)
    await gateway.start()
    log.info(  # what an operator needs to find the files: relative paths are the working directory's
        "ocpp809 %s: %sstore %s (store.path %r, working directory %s)",
        __version__,
        f"configuration {os.path.abspath(config_file)}, " if config_file else "",
        os.path.abspath(config.store.path),
        config.store.path,
        os.getcwd(),
    )
    log.info("ocpp809 running")
    try:
        await stop.wait()
    finally:
        log.info("ocpp809 stopping")
        await gateway.stop()
