"""Simulated charging stations (OCPP 1.6J and 2.0.1) that behave like real chargers.

Each ``SimStation`` is an OCPP client on the ``ocpp`` library over ``websockets``,
with the library's strict schema validation left on in both directions. It boots,
reports its status, starts a transaction when its EV wants power, keeps the
charging profiles it is given and draws what their composite allows (see
``scenarios.charging``), answers configuration requests from a small device model,
sends MeterValues at the interval it was configured with and promptly after a
limit change (once when the limit moves and once when the ramp settles), and
reconnects with exponential backoff. With ``legacy`` it is a Series 4 unit
(``scenarios.legacy_unit``): a hello line before the upgrade on ``/``, then 1.6 in the
unit's looser dialect.

The OCPP messages of both versions live in ``scenarios.station_ocpp``. Handlers never
await a CALL of their own (the library would deadlock): they change the model and wake
the sender task, which does all the station-initiated CALLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import struct
import time
import zoneinfo
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import connect

from gateway.core.model import OcppVersion
from scenarios.charging import (
    ChargerModel,
    ProfileError,
    Purpose,
    profile_from_ocpp,
    purpose_from_ocpp,
)
from scenarios.legacy_unit import SUBPROTOCOL, LooseConnection, hello_connection, hello_line
from scenarios.station_ocpp import Client16, Client201
from scenarios.station_spec import StationSpec

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class StationEvent:
    """Something the station did or was told, with its wall-clock time."""

    at_s: float
    # connected, disconnected, booted, profile, profile_rejected, cleared, limit, meter, config,
    # tx_started / tx_ended (detail: its id as the station knows it; 1.6: value = meterStart/Stop Wh)
    kind: str
    detail: str = ""
    value: float | None = None


def backoff_delays(min_s: float, max_s: float) -> Callable[[int], float]:
    """Delay before reconnection attempt ``n`` (0-based): doubling from min_s, capped at max_s."""
    return lambda attempt: min(max_s, min_s * (2 ** min(attempt, 30)))


class SimStation:
    """A charger with one EV, connecting to ``url`` (the central system's base, without the id)."""

    def __init__(self, spec: StationSpec, url: str, clock: Clock = time.time) -> None:
        self.spec = spec
        # A Series 4 unit names itself in its hello and upgrades on "/".
        self.url = url.rstrip("/") + "/" + ("" if spec.legacy else spec.station_id)
        self.clock = clock
        now = clock()
        self.model = ChargerModel(
            max_power_w=spec.max_power_w,
            phases=spec.phases,
            ramp_w_per_s=spec.ramp_w_per_s,
            demand_w=spec.demand_w,
            now_s=now,
        )
        self.model.set_charging(False, now)  # charging starts with the transaction
        self.events: list[StationEvent] = []
        self.connected = asyncio.Event()
        self.booted = asyncio.Event()
        self.meter_interval_s = spec.meter_interval_s
        self.measurands: tuple[str, ...] = spec.measurands
        self.heartbeat_s = spec.heartbeat_s
        self.transaction_id: int | str | None = None
        self.connections = 0
        self.attempts = 0  # connection attempts, failed or not
        self.last_error: BaseException | None = None  # why the latest attempt failed (sim stations says)
        self.metering = True  # False: a meter fault, no MeterValues are sent
        self._ev_leaving = False  # the EV went away: stop the transaction when connected
        self._wake = asyncio.Event()  # the sender has something to send
        self._model_wake = asyncio.Event()  # the physics loop must look again
        self._physics_task: asyncio.Task[None] | None = None
        self._report_reason: str | None = None
        self._settle_report_at: float | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None
        self._tx_seq = 0
        self._triggered: set[str] = set()
        self._last_limit: float | None = self.model.limit_w(now)
        self.ever_bound = False  # it has accepted a station-wide maximum profile
        self.listeners: list[Callable[[SimStation, StationEvent], None]] = []  # told of every event

    # -- public ----------------------------------------------------------------

    @property
    def station_id(self) -> str:
        return self.spec.station_id

    def power_w(self) -> float:
        return self.model.power_w(self.clock())

    def limit_w(self) -> float | None:
        now = self.clock()
        return self.model.limit_w(now)

    def cap_w(self) -> float | None:
        """What this station is bound by now: its station-wide maximum profiles (the live one
        while valid, else the fallback one), at most its rating. None while it has never
        accepted one (a station that joins is not bound until its first profile lands); a
        station that held one and holds none now counts at its rating.
        """
        if not self.ever_bound:
            return None
        limit = self.model.max_profile_limit_w(self.clock())
        return self.spec.max_power_w if limit is None else min(limit, self.spec.max_power_w)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sim-station-{self.station_id}")
            self._physics_task = asyncio.create_task(self._physics(), name=f"sim-physics-{self.station_id}")

    async def stop(self) -> None:
        self._stopping = True
        self._resume.set()
        self._wake.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in (self._task, self._physics_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._physics_task = None

    async def disconnect(self, for_s: float, how: str = "close") -> None:
        """Drop the connection and stay away ``for_s`` seconds before reconnecting.

        ``close``: a websocket close frame; ``abort``: a TCP reset, no close frame (the
        station lost power or its modem). Either way it keeps charging under what it holds.
        """
        self._resume.clear()
        ws = self._ws
        if ws is not None:
            if how == "abort":
                transport = ws.transport
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await ws.close()
        asyncio.get_running_loop().call_later(max(0.0, for_s), self._resume.set)

    def set_metering(self, enabled: bool) -> None:
        """Stop or resume MeterValues (a meter fault): the station stays connected and charging."""
        self.metering = enabled
        self._wake.set()

    def set_demand(self, demand_w: float) -> None:
        """What the EV wants; above 0 at a station without a transaction, one starts (an EV arrives)."""
        self._ev_leaving = False
        if self.model.set_demand(demand_w, self.clock()):
            self._after_target_change("demand changed")
        self._wake.set()

    def ev_leaves(self) -> None:
        """The EV finishes and is unplugged: the transaction stops, the connector is Available."""
        self._ev_leaving = True
        if self.model.set_demand(0.0, self.clock()):
            self._after_target_change("EV left")
        self._wake.set()

    # -- the connection loop ---------------------------------------------------

    async def _run(self) -> None:
        delay_for = backoff_delays(self.spec.reconnect_min_s, self.spec.reconnect_max_s)
        attempt = 0
        while not self._stopping:
            await self._resume.wait()
            if self._stopping:
                break
            self.attempts += 1
            try:
                async with self._connect() as ws:
                    if ws.subprotocol not in self._subprotocols():
                        log.warning("%s: server chose subprotocol %r", self.station_id, ws.subprotocol)
                        continue
                    attempt = 0
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self.last_error = exc
                log.debug("%s: connection failed: %s", self.station_id, exc)
            except Exception:  # a bug in a handler must not kill the fleet
                log.exception("%s: session failed", self.station_id)
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self.booted.clear()
                    self.record("disconnected")
            if self._stopping:
                break
            delay = delay_for(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _connect(self) -> connect:
        spec = self.spec
        return connect(
            self.url,
            subprotocols=[SUBPROTOCOL if spec.legacy else websockets.Subprotocol(spec.version.value)],
            additional_headers=self._auth_headers(),
            open_timeout=5,
            compression=None,
            proxy=None,
            create_connection=hello_connection(hello_line(self.station_id)) if spec.legacy else None,
        )

    def _subprotocols(self) -> tuple[str | None, ...]:
        """What the server may choose: a Series 4 unit also takes none."""
        return (SUBPROTOCOL, None) if self.spec.legacy else (self.spec.version.value,)

    def _auth_headers(self) -> dict[str, str] | None:
        if not self.spec.password:
            return None
        token = base64.b64encode(f"{self.station_id}:{self.spec.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _session(self, ws: Any) -> None:
        self._ws = ws
        self.connections += 1
        cp: Client16 | Client201
        if self.spec.legacy:
            cp = Client16(self, LooseConnection(ws, zoneinfo.ZoneInfo(self.spec.timezone), self.clock))
        elif self.spec.version is OcppVersion.V16:
            cp = Client16(self, ws)
        else:
            cp = Client201(self, ws)
        self.connected.set()
        self.record("connected")
        reader = asyncio.create_task(cp.start(), name=f"sim-reader-{self.station_id}")
        sender = asyncio.create_task(self._drive(cp), name=f"sim-sender-{self.station_id}")
        try:
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, websockets.exceptions.ConnectionClosed):
                    raise exc
        finally:
            for task in (reader, sender):
                task.cancel()
            for task in (reader, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._ws = None

    async def _drive(self, cp: Client16 | Client201) -> None:
        """Boot, announce, then send heartbeats and meter values until the connection ends."""
        await cp.boot()
        self.booted.set()
        self.record("booted")
        await cp.status(charging=self.transaction_id is not None)
        last_meter = self.clock()
        last_heartbeat = last_meter
        self._report_reason = self._report_reason or "Sample.Periodic"
        while not self._stopping:  # stop() wakes us: a cancel racing that wake can be swallowed
            self._wake.clear()  # before looking: a wake during this pass's awaits is kept for the wait
            if self.model.demand_w > 0 and self.transaction_id is None:  # an EV wants power
                await cp.start_transaction()
                self.model.set_charging(True, self.clock())
                self._after_target_change("transaction started")
                await cp.status(charging=True)
            if self._ev_leaving and self.transaction_id is not None:  # the EV has gone
                self._ev_leaving = False
                self.model.set_charging(False, self.clock())
                await cp.stop_transaction()
                self.transaction_id = None
                self._after_target_change("transaction stopped")
                await cp.status(charging=False)
            now = self.clock()
            if self.meter_interval_s > 0 and now - last_meter >= self.meter_interval_s:
                self._report_reason = self._report_reason or "Sample.Periodic"
            for message in sorted(self._triggered):
                self._triggered.discard(message)
                if message == "MeterValues":
                    self._report_reason = self._report_reason or "Trigger"
                elif message == "StatusNotification":
                    await cp.status(charging=self.transaction_id is not None)
                elif message == "Heartbeat":
                    last_heartbeat = now
                    await cp.heartbeat()
            if self._report_reason is not None:
                reason, self._report_reason = self._report_reason, None
                last_meter = self.clock()
                if self.metering:
                    await cp.meter_values(self.model.sample(last_meter), reason)
                    self.record("meter", reason, self.model.power_w(last_meter))
            if self.heartbeat_s > 0 and now - last_heartbeat >= self.heartbeat_s:
                last_heartbeat = now
                await cp.heartbeat()
            wake_at = [now + 3600.0]
            if self.meter_interval_s > 0:
                wake_at.append(last_meter + self.meter_interval_s)
            if self.heartbeat_s > 0:
                wake_at.append(last_heartbeat + self.heartbeat_s)
            if self._report_reason is None and not self._triggered:
                timeout = max(0.0, min(wake_at) - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _physics(self) -> None:
        """The charger's own clock: follow validTo and schedule edges, report when a ramp settles.

        Runs whether or not the station is connected: a station that lost its central
        system still drops to its lower profile when the live one lapses.
        """
        while True:
            now = self.clock()
            self._follow_model(now)
            if self._settle_report_at is not None and now >= self._settle_report_at:
                self._settle_report_at = None
                self._report_reason = self._report_reason or "Trigger"
                self._wake.set()
            wake_at = [now + 3600.0]
            model_next = self.model.next_event_s(now)
            if model_next is not None:
                wake_at.append(model_next)
            if self._settle_report_at is not None:
                wake_at.append(self._settle_report_at)
            self._model_wake.clear()
            timeout = max(0.001, min(wake_at) - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._model_wake.wait(), timeout=timeout)

    def _follow_model(self, now: float) -> None:
        """Notice a validTo or schedule edge passing, as a real charger's scheduler would."""
        self.model.drop_expired(now)
        if self.model.update(now):
            self._after_target_change("schedule changed")
        limit = self.model.limit_w(now)
        if limit != self._last_limit:
            self._last_limit = limit
            self.record("limit", "composite", limit)

    def _after_target_change(self, why: str) -> None:
        self._settle_report_at = self.model.ramp.settles_at()
        self._report_reason = self._report_reason or "Trigger"
        log.debug("%s: target %.1f W (%s)", self.station_id, self.model.ramp.target_w, why)
        self._wake.set()
        self._model_wake.set()

    # -- what handlers call ----------------------------------------------------

    def install_profile(self, raw: dict[str, Any], evse_id: int) -> tuple[bool, str]:
        now = self.clock()
        try:
            profile = profile_from_ocpp(raw, evse_id, now, self.spec.rate_units)
        except ProfileError as exc:
            self.record("profile_rejected", str(exc))
            return False, str(exc)
        if profile.stack_level > self.spec.max_stack_level:
            why = f"stack level {profile.stack_level} above {self.spec.max_stack_level}"
            self.record("profile_rejected", why)
            return False, why
        fresh = (profile.evse_id, profile.profile_id) not in self.model.profiles
        if fresh and len(self.model.profiles) >= self.spec.max_profiles:
            self.record("profile_rejected", "too many profiles")
            return False, "too many profiles"
        if profile.purpose is Purpose.EXTERNAL:
            self.record("profile_rejected", "ChargingStationExternalConstraints is not the CSMS's to set")
            return False, "external constraints are set locally"
        if profile.purpose is Purpose.TX and self.transaction_id is None:
            self.record("profile_rejected", "TxProfile without a transaction")
            return False, "no transaction"
        if profile.purpose is Purpose.STATION_MAX and evse_id != 0:
            self.record("profile_rejected", "a station-wide maximum belongs on connector/EVSE 0")
            return False, "station max profile on a connector"
        self.model.install(profile, now)
        if profile.purpose is Purpose.STATION_MAX:
            self.ever_bound = True
        limit = profile.limit_w_at(now, self.spec.phases)
        self.record(
            "profile", f"id={profile.profile_id} stack={profile.stack_level} {profile.purpose}", limit
        )
        self._limit_may_have_changed(now)
        return True, ""

    def clear_profiles(
        self, profile_id: int | None, evse_id: int | None, purpose: str | None, stack: int | None
    ) -> int:
        now = self.clock()
        try:
            kind = purpose_from_ocpp(purpose) if purpose else None
        except ProfileError:
            return 0
        removed = self.model.clear(
            now, profile_id=profile_id, evse_id=evse_id, purpose=kind, stack_level=stack
        )
        if removed:
            self.record("cleared", f"{removed} profile(s)")
            self._limit_may_have_changed(now)
        return removed

    def trigger(self, message: str) -> bool:
        if message not in ("MeterValues", "StatusNotification", "Heartbeat"):
            return False
        self._triggered.add(message)
        self._wake.set()
        return True

    def _limit_may_have_changed(self, now: float) -> None:
        limit = self.model.limit_w(now)
        if limit != self._last_limit:
            self._last_limit = limit
            self.record("limit", "composite", limit)
        self._after_target_change("profiles changed")

    def record(self, kind: str, detail: str = "", value: float | None = None) -> None:
        event = StationEvent(self.clock(), kind, detail, value)
        self.events.append(event)
        for listener in self.listeners:
            listener(self, event)

    def next_tx_seq(self) -> int:
        """The next 2.0.1 TransactionEvent seqNo (kept across reconnections, as the spec wants)."""
        seq = self._tx_seq
        self._tx_seq += 1
        return seq

    def set_meter_interval(self, seconds: float) -> None:
        self.meter_interval_s = seconds
        self._wake.set()


@dataclass
class Fleet:
    """Several stations started and stopped together."""

    stations: dict[str, SimStation] = field(default_factory=dict)

    def add(self, station: SimStation) -> None:
        self.stations[station.station_id] = station

    def start(self, ids: Collection[str] | None = None) -> None:
        """Start every station, or only those in ``ids`` (the others join later)."""
        for sid, station in self.stations.items():
            if ids is None or sid in ids:
                station.start()

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.stations.values()))

    def total_power_w(self) -> float:
        return sum(s.power_w() for s in self.stations.values())

    async def wait_booted(self, timeout_s: float, ids: Collection[str] | None = None) -> None:
        waiting = [s.booted.wait() for sid, s in self.stations.items() if ids is None or sid in ids]
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=timeout_s)
