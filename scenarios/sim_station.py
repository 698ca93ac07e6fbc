"""Simulated charging stations (OCPP 1.6J and 2.0.1) that behave like real chargers.

Each ``SimStation`` is an OCPP client on the ``ocpp`` library over ``websockets``,
with the library's strict schema validation left on in both directions. It boots,
reports its status, starts a transaction when its EV wants power, keeps the
charging profiles it is given and draws what their composite allows (see
``scenarios.charging``), answers configuration requests from a small device model,
sends MeterValues at the interval it was configured with and promptly after a
limit change (once when the limit moves and once when the ramp settles), and
reconnects with exponential backoff.

Handlers never await a CALL of their own (the library would deadlock): they change
the model and wake the sender task, which does all the station-initiated CALLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from gateway.model import OcppVersion
from scenarios.charging import (
    ChargerModel,
    ProfileError,
    Purpose,
    RateUnit,
    profile_from_ocpp,
    purpose_from_ocpp,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]

SUPPORTED_MEASURANDS = frozenset(
    {
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Voltage",
        "Power.Offered",
        "Current.Offered",
    }
)
_PHASES = ("L1", "L2", "L3")


@dataclass(frozen=True, slots=True)
class StationSpec:
    """One simulated charger and its EV."""

    station_id: str
    version: OcppVersion = OcppVersion.V16
    demand_w: float = 11000.0  # what the EV would draw without a limit (0: no EV plugged in)
    phases: int = 3
    max_power_w: float = 22000.0  # the charger's own rating
    ramp_w_per_s: float = 3000.0
    meter_interval_s: float = 60.0  # until the central system configures another one
    measurands: tuple[str, ...] = ("Energy.Active.Import.Register", "Power.Active.Import")
    rate_units: tuple[RateUnit, ...] = (RateUnit.A, RateUnit.W)
    max_stack_level: int = 8
    max_profiles: int = 8
    password: str = ""
    id_tag: str = "SIMTAG01"
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    heartbeat_s: float = 300.0  # until BootNotification says otherwise

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", OcppVersion(self.version))
        object.__setattr__(self, "rate_units", tuple(RateUnit(u) for u in self.rate_units))


@dataclass(frozen=True, slots=True)
class StationEvent:
    """Something the station did or was told, with its wall-clock time."""

    at_s: float
    kind: str  # connected, disconnected, booted, profile, profile_rejected, cleared, limit, meter, config
    detail: str = ""
    value: float | None = None


def backoff_delays(min_s: float, max_s: float) -> Callable[[int], float]:
    """Delay before reconnection attempt ``n`` (0-based): doubling from min_s, capped at max_s."""
    return lambda attempt: min(max_s, min_s * (2 ** min(attempt, 30)))


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimStation:
    """A charger with one EV, connecting to ``url`` (the central system's base, without the id)."""

    def __init__(self, spec: StationSpec, url: str, clock: Clock = time.time) -> None:
        self.spec = spec
        self.url = url.rstrip("/") + "/" + spec.station_id
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

    # -- public ----------------------------------------------------------------

    @property
    def station_id(self) -> str:
        return self.spec.station_id

    def power_w(self) -> float:
        return self.model.power_w(self.clock())

    def limit_w(self) -> float | None:
        now = self.clock()
        return self.model.limit_w(now)

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

    async def disconnect(self, for_s: float) -> None:
        """Drop the connection and stay away ``for_s`` seconds before reconnecting."""
        self._resume.clear()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        asyncio.get_running_loop().call_later(max(0.0, for_s), self._resume.set)

    def set_demand(self, demand_w: float) -> None:
        if self.model.set_demand(demand_w, self.clock()):
            self._after_target_change("demand changed")

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
                async with websockets.connect(
                    self.url,
                    subprotocols=[websockets.Subprotocol(self.spec.version.value)],
                    additional_headers=self._auth_headers(),
                    open_timeout=5,
                    compression=None,
                    proxy=None,
                ) as ws:
                    if ws.subprotocol != self.spec.version.value:
                        log.warning("%s: server chose subprotocol %r", self.station_id, ws.subprotocol)
                        continue
                    attempt = 0
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                log.debug("%s: connection failed: %s", self.station_id, exc)
            except Exception:  # a bug in a handler must not kill the fleet
                log.exception("%s: session failed", self.station_id)
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self.booted.clear()
                    self._record("disconnected")
            if self._stopping:
                break
            delay = delay_for(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _auth_headers(self) -> dict[str, str] | None:
        if not self.spec.password:
            return None
        token = base64.b64encode(f"{self.station_id}:{self.spec.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _session(self, ws: Any) -> None:
        self._ws = ws
        self.connections += 1
        cp: _Client16 | _Client201
        cp = _Client16(self, ws) if self.spec.version is OcppVersion.V16 else _Client201(self, ws)
        self.connected.set()
        self._record("connected")
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

    async def _drive(self, cp: _Client16 | _Client201) -> None:
        """Boot, announce, then send heartbeats and meter values until the connection ends."""
        await cp.boot()
        self.booted.set()
        self._record("booted")
        await cp.status(charging=self.transaction_id is not None)
        last_meter = self.clock()
        last_heartbeat = last_meter
        self._report_reason = self._report_reason or "Sample.Periodic"
        while True:
            if self.model.demand_w > 0 and self.transaction_id is None:  # an EV wants power
                await cp.start_transaction()
                self.model.set_charging(True, self.clock())
                self._after_target_change("transaction started")
                await cp.status(charging=True)
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
                await cp.meter_values(self.model.sample(self.clock()), reason)
                last_meter = self.clock()
                self._record("meter", reason, self.model.power_w(last_meter))
            if self.heartbeat_s > 0 and now - last_heartbeat >= self.heartbeat_s:
                last_heartbeat = now
                await cp.heartbeat()
            wake_at = [now + 3600.0]
            if self.meter_interval_s > 0:
                wake_at.append(last_meter + self.meter_interval_s)
            if self.heartbeat_s > 0:
                wake_at.append(last_heartbeat + self.heartbeat_s)
            self._wake.clear()
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
            self._record("limit", "composite", limit)

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
            self._record("profile_rejected", str(exc))
            return False, str(exc)
        if profile.stack_level > self.spec.max_stack_level:
            why = f"stack level {profile.stack_level} above {self.spec.max_stack_level}"
            self._record("profile_rejected", why)
            return False, why
        fresh = (profile.evse_id, profile.profile_id) not in self.model.profiles
        if fresh and len(self.model.profiles) >= self.spec.max_profiles:
            self._record("profile_rejected", "too many profiles")
            return False, "too many profiles"
        if profile.purpose is Purpose.EXTERNAL:
            self._record("profile_rejected", "ChargingStationExternalConstraints is not the CSMS's to set")
            return False, "external constraints are set locally"
        if profile.purpose is Purpose.TX and self.transaction_id is None:
            self._record("profile_rejected", "TxProfile without a transaction")
            return False, "no transaction"
        if profile.purpose is Purpose.STATION_MAX and evse_id != 0:
            self._record("profile_rejected", "a station-wide maximum belongs on connector/EVSE 0")
            return False, "station max profile on a connector"
        self.model.install(profile, now)
        limit = profile.limit_w_at(now, self.spec.phases)
        self._record(
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
            self._record("cleared", f"{removed} profile(s)")
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
            self._record("limit", "composite", limit)
        self._after_target_change("profiles changed")

    def _record(self, kind: str, detail: str = "", value: float | None = None) -> None:
        self.events.append(StationEvent(self.clock(), kind, detail, value))


# -- OCPP 1.6 -------------------------------------------------------------------------------


class _Client16(ChargePoint16):  # type: ignore[misc]
    def __init__(self, station: SimStation, ws: Any) -> None:
        super().__init__(station.station_id, ws, response_timeout=10)
        self.station = station
        spec = station.spec
        self.config: dict[str, tuple[str, bool]] = {  # key -> (value, read-only)
            "HeartbeatInterval": (str(int(station.heartbeat_s)), False),
            "MeterValueSampleInterval": (str(int(station.meter_interval_s)), False),
            "MeterValuesSampledData": (",".join(station.measurands), False),
            "MeterValuesAlignedData": ("Energy.Active.Import.Register", False),
            "ClockAlignedDataInterval": ("0", False),
            "StopTxnSampledData": ("Energy.Active.Import.Register", False),
            "StopTxnAlignedData": ("", False),
            "ConnectionTimeOut": ("60", False),
            "WebSocketPingInterval": ("20", False),
            "AuthorizeRemoteTxRequests": ("false", False),
            "NumberOfConnectors": ("1", True),
            "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True),
            "ChargeProfileMaxStackLevel": (str(spec.max_stack_level), True),
            "ChargingScheduleAllowedChargingRateUnit": (
                ",".join({"A": "Current", "W": "Power"}[u.value] for u in spec.rate_units),
                True,
            ),
            "ChargingScheduleMaxPeriods": ("24", True),
            "MaxChargingProfilesInstalled": (str(spec.max_profiles), True),
        }

    # station-initiated
    async def boot(self) -> None:
        for _ in range(1000):  # bounded: a central system that never accepts gets ~forever anyway
            answer = await self.call(
                call16.BootNotification(charge_point_model="SIM-16", charge_point_vendor="ocpp809"),
                suppress=False,
            )
            if answer.interval:
                self.station.heartbeat_s = float(answer.interval)
            if answer.status == "Accepted":
                return
            await asyncio.sleep(max(1.0, float(answer.interval or 10)))

    async def start_transaction(self) -> None:
        now = self.station.clock()
        answer = await self.call(
            call16.StartTransaction(
                connector_id=1,
                id_tag=self.station.spec.id_tag,
                meter_start=int(self.station.model.energy_wh(now)),
                timestamp=iso(now),
            ),
            suppress=False,
        )
        self.station.transaction_id = int(answer.transaction_id)

    async def status(self, charging: bool) -> None:
        now = iso(self.station.clock())
        await self.call(call16.StatusNotification(0, "NoError", "Available", timestamp=now), suppress=False)
        state = "Charging" if charging else "Available"
        await self.call(call16.StatusNotification(1, "NoError", state, timestamp=now), suppress=False)

    async def heartbeat(self) -> None:
        await self.call(call16.Heartbeat(), suppress=False)

    async def meter_values(self, sample: Any, reason: str) -> None:
        context = "Trigger" if reason == "Trigger" else "Sample.Periodic"
        values = _sampled_values(sample, self.station.measurands, context, version16=True)
        await self.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=self.station.transaction_id
                if isinstance(self.station.transaction_id, int)
                else None,
                meter_value=[{"timestamp": iso(sample.timestamp_s), "sampled_value": values}],
            ),
            suppress=False,
        )

    # central-system-initiated
    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        ok, _ = self.station.install_profile(cs_charging_profiles, connector_id)
        return result16.SetChargingProfile(status="Accepted" if ok else "Rejected")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
    ) -> Any:
        removed = self.station.clear_profiles(id, connector_id, charging_profile_purpose, stack_level)
        return result16.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        wanted = list(self.config) if not key else key
        known = [
            {"key": k, "readonly": self.config[k][1], "value": self.config[k][0]}
            for k in wanted
            if k in self.config
        ]
        unknown = [k for k in wanted if k not in self.config]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> Any:
        if key not in self.config:
            return result16.ChangeConfiguration(status="NotSupported")
        if self.config[key][1] or not _apply_setting(self.station, key, value):
            self.station._record("config", f"{key}={value} rejected")
            return result16.ChangeConfiguration(status="Rejected")
        self.config[key] = (value, False)
        self.station._record("config", f"{key}={value}")
        return result16.ChangeConfiguration(status="Accepted")

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        accepted = self.station.trigger(requested_message)
        return result16.TriggerMessage(status="Accepted" if accepted else "NotImplemented")


# -- OCPP 2.0.1 -----------------------------------------------------------------------------

_Key = tuple[str, str, str]  # component, variable, instance ("" when none)


class _Client201(ChargePoint201):  # type: ignore[misc]
    def __init__(self, station: SimStation, ws: Any) -> None:
        super().__init__(station.station_id, ws, response_timeout=10)
        self.station = station
        spec = station.spec
        measurands = ",".join(station.measurands)
        self.variables: dict[_Key, tuple[str, bool]] = {  # -> (value, read-only)
            ("SampledDataCtrlr", "Enabled", ""): ("true", False),
            ("SampledDataCtrlr", "TxUpdatedInterval", ""): (str(int(station.meter_interval_s)), False),
            ("SampledDataCtrlr", "TxUpdatedMeasurands", ""): (measurands, False),
            ("SampledDataCtrlr", "TxStartedMeasurands", ""): (measurands, False),
            ("SampledDataCtrlr", "TxEndedMeasurands", ""): ("Energy.Active.Import.Register", False),
            ("SampledDataCtrlr", "TxEndedInterval", ""): ("0", False),
            ("AlignedDataCtrlr", "Enabled", ""): ("true", False),
            ("AlignedDataCtrlr", "Interval", ""): ("0", False),
            ("AlignedDataCtrlr", "Measurands", ""): ("Energy.Active.Import.Register", False),
            ("AlignedDataCtrlr", "TxEndedMeasurands", ""): ("", False),
            ("AlignedDataCtrlr", "TxEndedInterval", ""): ("0", False),
            ("SmartChargingCtrlr", "Enabled", ""): ("true", False),
            ("SmartChargingCtrlr", "RateUnit", ""): (",".join(u.value for u in spec.rate_units), True),
            ("SmartChargingCtrlr", "ProfileStackLevel", ""): (str(spec.max_stack_level), True),
            ("SmartChargingCtrlr", "PeriodsPerSchedule", ""): ("24", True),
            ("SmartChargingCtrlr", "Entries", "ChargingProfiles"): (str(spec.max_profiles), True),
            ("SmartChargingCtrlr", "LimitChangeSignificance", ""): ("0.1", False),
            ("OCPPCommCtrlr", "HeartbeatInterval", ""): (str(int(station.heartbeat_s)), False),
            ("ChargingStation", "SupplyPhases", ""): (str(spec.phases), True),
        }
        self.components = {key[0] for key in self.variables}

    async def boot(self) -> None:
        for _ in range(1000):
            answer = await self.call(
                call201.BootNotification(
                    charging_station={"model": "SIM-201", "vendor_name": "ocpp809"}, reason="PowerUp"
                ),
                suppress=False,
            )
            if answer.interval:
                self.station.heartbeat_s = float(answer.interval)
            if answer.status == "Accepted":
                return
            await asyncio.sleep(max(1.0, float(answer.interval or 10)))

    async def start_transaction(self) -> None:
        station = self.station
        station.transaction_id = str(uuid.uuid4())
        await self._transaction_event("Started", "CablePluggedIn", None, id_token=True)

    async def status(self, charging: bool) -> None:
        await self.call(
            call201.StatusNotification(
                timestamp=iso(self.station.clock()),
                connector_status="Occupied" if charging else "Available",
                evse_id=1,
                connector_id=1,
            ),
            suppress=False,
        )

    async def heartbeat(self) -> None:
        await self.call(call201.Heartbeat(), suppress=False)

    async def meter_values(self, sample: Any, reason: str) -> None:
        context = "Trigger" if reason == "Trigger" else "Sample.Periodic"
        values = _sampled_values(sample, self.station.measurands, context, version16=False)
        meter_value = [{"timestamp": iso(sample.timestamp_s), "sampled_value": values}]
        if self.station.transaction_id is None:
            await self.call(call201.MeterValues(evse_id=1, meter_value=meter_value), suppress=False)
            return
        trigger = "ChargingRateChanged" if reason == "Trigger" else "MeterValuePeriodic"
        await self._transaction_event("Updated", trigger, meter_value)

    async def _transaction_event(
        self, event_type: str, trigger: str, meter_value: list[dict[str, Any]] | None, id_token: bool = False
    ) -> None:
        station = self.station
        seq = station._tx_seq
        station._tx_seq += 1
        charging = station.model.charging or event_type == "Started"
        await self.call(
            call201.TransactionEvent(
                event_type=event_type,
                timestamp=iso(station.clock()),
                trigger_reason=trigger,
                seq_no=seq,
                transaction_info={
                    "transaction_id": str(station.transaction_id),
                    "charging_state": "Charging" if charging else "EVConnected",
                },
                meter_value=meter_value,
                evse={"id": 1, "connector_id": 1} if event_type == "Started" else None,
                id_token={"id_token": station.spec.id_tag, "type": "ISO14443"} if id_token else None,
            ),
            suppress=False,
        )

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        ok, why = self.station.install_profile(charging_profile, evse_id)
        if ok:
            return result201.SetChargingProfile(status="Accepted")
        return result201.SetChargingProfile(
            status="Rejected", status_info={"reason_code": "InvalidProfile", "additional_info": why[:512]}
        )

    @on("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        criteria = charging_profile_criteria or {}
        removed = self.station.clear_profiles(
            charging_profile_id,
            criteria.get("evse_id"),
            criteria.get("charging_profile_purpose"),
            criteria.get("stack_level"),
        )
        return result201.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            status, value = self._lookup(item)
            entry: dict[str, Any] = {
                "attribute_status": status,
                "component": item["component"],
                "variable": item["variable"],
            }
            if item.get("attribute_type"):
                entry["attribute_type"] = item["attribute_type"]
            if value is not None:
                entry["attribute_value"] = value
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            status, _value = self._lookup(item)
            key = self._key(item)
            if status == "Accepted":
                value = str(item["attribute_value"])
                if self.variables[key][1] or not _apply_setting(self.station, f"{key[0]}.{key[1]}", value):
                    status = "Rejected"
                else:
                    self.variables[key] = (value, False)
            self.station._record("config", f"{key[0]}.{key[1]}={item['attribute_value']} {status}")
            entry: dict[str, Any] = {
                "attribute_status": status,
                "component": item["component"],
                "variable": item["variable"],
            }
            if item.get("attribute_type"):
                entry["attribute_type"] = item["attribute_type"]
            results.append(entry)
        return result201.SetVariables(set_variable_result=results)

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        accepted = self.station.trigger(requested_message)
        return result201.TriggerMessage(status="Accepted" if accepted else "NotImplemented")

    def _key(self, item: dict[str, Any]) -> _Key:
        return (item["component"]["name"], item["variable"]["name"], item["variable"].get("instance") or "")

    def _lookup(self, item: dict[str, Any]) -> tuple[str, str | None]:
        if item.get("attribute_type") not in (None, "Actual"):
            return "NotSupportedAttributeType", None
        key = self._key(item)
        if key[0] not in self.components:
            return "UnknownComponent", None
        if key not in self.variables:
            return "UnknownVariable", None
        return "Accepted", self.variables[key][0]


# -- shared ---------------------------------------------------------------------------------


def _apply_setting(station: SimStation, name: str, value: str) -> bool:
    """Apply a configuration change that alters behaviour; False when the value is unusable."""
    interval_keys = {"MeterValueSampleInterval", "SampledDataCtrlr.TxUpdatedInterval"}
    measurand_keys = {"MeterValuesSampledData", "SampledDataCtrlr.TxUpdatedMeasurands"}
    heartbeat_keys = {"HeartbeatInterval", "OCPPCommCtrlr.HeartbeatInterval"}
    other_measurand_keys = {
        "MeterValuesAlignedData",
        "StopTxnSampledData",
        "StopTxnAlignedData",
        "SampledDataCtrlr.TxEndedMeasurands",
        "SampledDataCtrlr.TxStartedMeasurands",
        "AlignedDataCtrlr.Measurands",
        "AlignedDataCtrlr.TxEndedMeasurands",
    }
    if name in interval_keys | heartbeat_keys | {"ClockAlignedDataInterval", "AlignedDataCtrlr.Interval"}:
        try:
            seconds = int(value)
        except ValueError:
            return False
        if seconds < 0:
            return False
        if name in interval_keys:
            station.meter_interval_s = float(seconds)
            station._wake.set()
        elif name in heartbeat_keys:
            station.heartbeat_s = float(seconds)
        return True
    if name in measurand_keys | other_measurand_keys:
        items = tuple(m.strip() for m in value.split(",") if m.strip())
        if any(m not in SUPPORTED_MEASURANDS for m in items):
            return False  # a real station refuses the whole list when one measurand is unknown
        if name in measurand_keys:
            station.measurands = items
        return True
    return value.lower() in ("true", "false") if name.endswith("Enabled") else True


def _sampled_values(
    sample: Any, measurands: tuple[str, ...], context: str, version16: bool
) -> list[dict[str, Any]]:
    """Sampled values in the station's configured measurands (1.6: strings, 2.0.1: numbers)."""
    out: list[dict[str, Any]] = []

    def add(measurand: str, value: float, unit: str, phase: str | None = None) -> None:
        item: dict[str, Any] = {"measurand": measurand, "context": context}
        if version16:
            item.update({"value": f"{value:.1f}", "unit": unit, "format": "Raw", "location": "Outlet"})
        else:
            item.update({"value": round(value, 3), "unit_of_measure": {"unit": unit}, "location": "Outlet"})
        if phase is not None:
            item["phase"] = phase
        out.append(item)

    for measurand in measurands:
        if measurand == "Power.Active.Import":
            add(measurand, sample.power_w, "W")
        elif measurand == "Energy.Active.Import.Register":
            add(measurand, sample.energy_wh, "Wh")
        elif measurand == "Current.Import":
            for phase, amps in zip(_PHASES, sample.current_a, strict=False):
                add(measurand, amps, "A", phase)
        elif measurand == "Voltage":
            for phase, volts in zip(_PHASES, sample.voltage_v, strict=False):
                add(measurand, volts, "V", f"{phase}-N")
        elif measurand == "Power.Offered":
            add(measurand, sample.offered_w, "W")
        elif measurand == "Current.Offered":
            add(measurand, sample.offered_w / (len(sample.voltage_v) * sample.voltage_v[0]), "A")
    return out


@dataclass
class Fleet:
    """Several stations started and stopped together."""

    stations: dict[str, SimStation] = field(default_factory=dict)

    def add(self, station: SimStation) -> None:
        self.stations[station.station_id] = station

    def start(self) -> None:
        for station in self.stations.values():
            station.start()

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.stations.values()))

    def total_power_w(self) -> float:
        return sum(s.power_w() for s in self.stations.values())

    async def wait_booted(self, timeout_s: float) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(s.booted.wait() for s in self.stations.values())), timeout=timeout_s
        )
