"""Lean simulated charging stations: many raw websocket clients in one asyncio process.

The benchmark measures the central system, so the stations must cost as little as
possible: raw ``websockets`` clients without compression or keepalive pings,
OCPP-J frames built by hand and parsed with orjson, no schema validation, every
CALL from the server answered at once (SetChargingProfile: Accepted).

Run in its own process by ``bench.fanout`` through ``run_simulator`` and a
multiprocessing pipe; every command is bounded in time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import math
import random
import resource
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State
from websockets.typing import Subprotocol

from bench.control import serve_commands

log = logging.getLogger(__name__)

V16 = "ocpp1.6"
V201 = "ocpp2.0.1"

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# Values a real 1.6 station would report for the keys the gateway asks about.
_V16_CONFIG = {
    "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
    "ChargeProfileMaxStackLevel": "8",
    "ChargingScheduleMaxPeriods": "24",
    "MaxChargingProfilesInstalled": "10",
    "MeterValueSampleInterval": "60",
    "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
    "MeterValuesAlignedData": "Energy.Active.Import.Register",
    "ClockAlignedDataInterval": "900",
    "HeartbeatInterval": "300",
    "NumberOfConnectors": "1",
}

# 2.0.1 component/variable values for GetVariables (SmartChargingCtrlr and friends).
_V201_VARIABLES = {
    ("SmartChargingCtrlr", "RateUnit"): "A,W",
    ("SmartChargingCtrlr", "ProfileStackLevel"): "8",
    ("SmartChargingCtrlr", "PeriodsPerSchedule"): "24",
    ("SmartChargingCtrlr", "Entries"): "10",
    ("SmartChargingCtrlr", "Enabled"): "true",
    ("SmartChargingCtrlr", "LimitChangeSignificance"): "0.1",
    ("SampledDataCtrlr", "TxUpdatedInterval"): "60",
    ("SampledDataCtrlr", "TxUpdatedMeasurands"): "Energy.Active.Import.Register,Power.Active.Import",
    ("AlignedDataCtrlr", "Interval"): "900",
    ("AlignedDataCtrlr", "Measurands"): "Energy.Active.Import.Register",
}

POWER_W = 7200.0  # every station reports this draw, so the server's total is checkable


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def boot_payload(version: str) -> dict[str, Any]:
    if version == V16:
        return {"chargePointVendor": "ocpp809-bench", "chargePointModel": "sim"}
    return {"chargingStation": {"vendorName": "ocpp809-bench", "model": "sim"}, "reason": "PowerUp"}


def meter_payload(version: str, seq: int) -> dict[str, Any]:
    """One MID-style sample: power, energy register, current and voltage per phase."""
    ts = _iso_now()
    if version == V16:
        values = [
            {"value": f"{POWER_W:.1f}", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": f"{1000.0 + seq:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        ]
        for phase in ("L1", "L2", "L3"):
            values.append({"value": "10.4", "measurand": "Current.Import", "phase": phase, "unit": "A"})
            values.append({"value": "230.1", "measurand": "Voltage", "phase": f"{phase}-N", "unit": "V"})
        return {"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": values}]}
    values201: list[dict[str, Any]] = [
        {"value": POWER_W, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
        {
            "value": 1000.0 + seq,
            "measurand": "Energy.Active.Import.Register",
            "unitOfMeasure": {"unit": "Wh"},
        },
    ]
    for phase in ("L1", "L2", "L3"):
        values201.append(
            {"value": 10.4, "measurand": "Current.Import", "phase": phase, "unitOfMeasure": {"unit": "A"}}
        )
        values201.append(
            {"value": 230.1, "measurand": "Voltage", "phase": f"{phase}-N", "unitOfMeasure": {"unit": "V"}}
        )
    return {"evseId": 1, "meterValue": [{"timestamp": ts, "sampledValue": values201}]}


def _profile_limit(version: str, payload: dict[str, Any]) -> tuple[str, int, float | None]:
    """(rate unit, stackLevel, first period's limit) of a SetChargingProfile request."""
    try:
        if version == V16:
            profile = payload["csChargingProfiles"]
            schedule = profile["chargingSchedule"]
        else:
            profile = payload["chargingProfile"]
            schedule = profile["chargingSchedule"]
            schedule = schedule[0] if isinstance(schedule, list) else schedule
        unit = str(schedule["chargingRateUnit"])
        return unit, int(profile["stackLevel"]), float(schedule["chargingSchedulePeriod"][0]["limit"])
    except (KeyError, IndexError, TypeError, ValueError):
        return "?", -1, None


class CallErrorReceived(Exception):
    """The server answered one of the station's CALLs with a CALLERROR."""


class LeanClientConnection(ClientConnection):
    """A client connection that hands each text frame to a callback as it is parsed.

    Skipping the message queue and a reader coroutine per station keeps the station
    side at a few microseconds per frame, so 5,000 of them in one process do not
    bound what is measured on the server. Replies are written at once, in order.
    """

    on_text: Callable[[bytes], None] | None = None
    on_lost: Callable[[], None] | None = None

    def process_event(self, event: Event) -> None:
        handler = self.on_text
        if handler is not None and type(event) is Frame and event.opcode is Opcode.TEXT and event.fin:
            handler(bytes(event.data))
            return
        super().process_event(event)

    def send_now(self, data: bytes) -> None:
        """Write one text frame without a coroutine (frames here are small and few at a time)."""
        self.protocol.send_text(data)
        self.send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()


@dataclass(slots=True)
class SimStation:
    """One simulated station: answers the server's CALLs at once and resolves its own CALLs."""

    station_id: str
    version: str
    ws: LeanClientConnection
    reject_profiles: bool = False
    pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    profiles_received: int = 0
    # stackLevel -> (rate unit, limit) of the latest profile installed at that level
    profiles: dict[int, tuple[str, float | None]] = field(default_factory=dict)
    server_calls: dict[str, int] = field(default_factory=dict)
    # A joining station logs each SetChargingProfile it answers: (perf_counter, stackLevel, unit, limit).
    profile_log: list[tuple[float, int, str, float | None]] | None = None
    fleet: Fleet | None = None  # told of every profile accepted and every connection lost
    url: str = ""  # where it connected, so that it can come back (reconnect storm)
    password: str | None = None  # HTTP Basic Auth (security profiles 1 and 2)
    cap_mw: int = 0  # what it is bound by now, in mW (see ``station_cap_mw``), counted in the fleet's sum
    reconnecting: bool = False

    def attach(self) -> None:
        ws = self.ws
        ws.on_text = self.dispatch
        ws.on_lost = lambda: self._lost(ws)

    def _lost(self, ws: LeanClientConnection) -> None:
        if ws is not self.ws:
            return  # an old connection, already replaced
        self.fail_pending()
        if self.fleet is not None:
            self.fleet.station_lost(self)

    def send_call(self, action: str, payload_json: bytes) -> asyncio.Future[Any]:
        """Send a CALL whose payload is already JSON; the future gets the CALLRESULT payload."""
        unique_id = str(next(self.ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[unique_id] = future
        try:
            self.ws.send_now(b'[2,"%b","%b",%b]' % (unique_id.encode(), action.encode(), payload_json))
        except InvalidState as exc:  # closed meanwhile
            self.pending.pop(unique_id, None)
            future.set_exception(ConnectionError(f"{self.station_id}: {exc}"))
        return future

    async def call(self, action: str, payload: dict[str, Any], timeout_s: float) -> Any:
        return await asyncio.wait_for(self.send_call(action, orjson.dumps(payload)), timeout_s)

    def fail_pending(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.station_id}: connection closed"))
        self.pending.clear()

    def dispatch(self, raw: bytes) -> None:
        try:
            frame = orjson.loads(raw)
            kind = frame[0]
        except (orjson.JSONDecodeError, IndexError, TypeError, KeyError):
            return
        if kind == CALL:
            action, payload = frame[2], frame[3]
            self.server_calls[action] = self.server_calls.get(action, 0) + 1
            reply = self._answer(frame[1], action, payload)
            if self.ws.protocol.state is State.OPEN:  # closing: the server sees the close instead
                self.ws.send_now(orjson.dumps(reply))
        elif kind in (CALLRESULT, CALLERROR):
            future = self.pending.pop(frame[1], None)
            if future is not None and not future.done():
                if kind == CALLRESULT:
                    future.set_result(frame[2])
                else:
                    future.set_exception(CallErrorReceived(f"CALLERROR {frame[2]}: {frame[3]}"))

    def _answer(self, unique_id: str, action: str, payload: dict[str, Any]) -> list[Any]:
        if action == "SetChargingProfile":
            self.profiles_received += 1
            unit, level, limit = _profile_limit(self.version, payload)
            if self.profile_log is not None:
                self.profile_log.append((time.perf_counter(), level, unit, limit))
            if self.reject_profiles:
                return [CALLRESULT, unique_id, {"status": "Rejected"}]
            self.profiles[level] = (unit, limit)
            if self.fleet is not None:
                self.fleet.profile_accepted(self, level, unit, limit)
            return [CALLRESULT, unique_id, {"status": "Accepted"}]
        handler = _V16_ANSWERS.get(action) if self.version == V16 else _V201_ANSWERS.get(action)
        if handler is None:
            return [CALLERROR, unique_id, "NotImplemented", f"{action} is not simulated", {}]
        return [CALLRESULT, unique_id, handler(payload)]


def _v16_get_configuration(payload: dict[str, Any]) -> dict[str, Any]:
    keys = payload.get("key") or list(_V16_CONFIG)
    known = [{"key": k, "readonly": False, "value": _V16_CONFIG[k]} for k in keys if k in _V16_CONFIG]
    unknown = [k for k in keys if k not in _V16_CONFIG]
    answer: dict[str, Any] = {"configurationKey": known}
    if unknown:
        answer["unknownKey"] = unknown
    return answer


def _ACCEPTED(_payload: dict[str, Any]) -> dict[str, Any]:
    return {"status": "Accepted"}


_V16_ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ChangeConfiguration": _ACCEPTED,
    "GetConfiguration": _v16_get_configuration,
    "ClearChargingProfile": _ACCEPTED,
    "TriggerMessage": _ACCEPTED,
    "Reset": _ACCEPTED,
    "ChangeAvailability": _ACCEPTED,
    "RemoteStartTransaction": _ACCEPTED,
    "RemoteStopTransaction": _ACCEPTED,
    "UnlockConnector": lambda _p: {"status": "Unlocked"},
    "GetCompositeSchedule": lambda _p: {"status": "Rejected"},
    "DataTransfer": lambda _p: {"status": "UnknownVendorId"},
}


def _v201_set_variables(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "setVariableResult": [
            {"attributeStatus": "Accepted", "component": d["component"], "variable": d["variable"]}
            for d in payload.get("setVariableData", [])
        ]
    }


def _v201_get_variables(payload: dict[str, Any]) -> dict[str, Any]:
    results = []
    for d in payload.get("getVariableData", []):
        key = (d["component"]["name"], d["variable"]["name"])
        entry: dict[str, Any] = {"component": d["component"], "variable": d["variable"]}
        if key in _V201_VARIABLES:
            entry.update(attributeStatus="Accepted", attributeValue=_V201_VARIABLES[key])
        else:
            entry["attributeStatus"] = "UnknownVariable"
        results.append(entry)
    return {"getVariableResult": results}


_V201_ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "SetVariables": _v201_set_variables,
    "GetVariables": _v201_get_variables,
    "ClearChargingProfile": _ACCEPTED,
    "TriggerMessage": _ACCEPTED,
    "Reset": _ACCEPTED,
    "ChangeAvailability": _ACCEPTED,
    "RequestStartTransaction": _ACCEPTED,
    "RequestStopTransaction": _ACCEPTED,
    "UnlockConnector": lambda _p: {"status": "Unlocked"},
    "GetCompositeSchedule": lambda _p: {"status": "Rejected"},
    "DataTransfer": lambda _p: {"status": "UnknownVendorId"},
    "NotifyChargingLimit": lambda _p: {},
}


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit: 5,000 sockets need more than 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


STATION_RATING_W = 22000.0  # what a station may draw when no profile binds it (the gateway's bench max)
W_PER_A = 230.0 * 3  # the gateway's default voltage and phases: a limit in A is this many W per A
_CAP_TOLERANCE_MW = 1000  # 1 W: profile limits are rounded to 0.1 W


def station_cap_mw(station: SimStation) -> int:
    """What ``station`` is bound by now, in mW: the limit at the top of its profile stack (the live
    profile over the fallback one), at most its rating; 0 while it has never accepted a profile.

    Validity (validTo) is not modelled: the live profiles the bench sends stay valid for minutes.
    """
    if not station.profiles:
        return 0
    unit, limit = station.profiles[max(station.profiles)]
    if limit is None:
        watts = STATION_RATING_W
    else:
        watts = limit if unit == "W" else limit * W_PER_A
    return round(min(watts, STATION_RATING_W) * 1000)


def _same_share(unit: str, limit: float | None, expected_w: float) -> bool:
    """A live limit carrying ``expected_w``: in W to 0.05 W, or in A as the gateway rounds it down
    (to 0.1 A) when a station's unit discovery failed and it falls back to current."""
    if limit is None:
        return False
    if unit == "W":
        return abs(limit - expected_w) < 0.05
    return unit == "A" and 0 <= expected_w - limit * W_PER_A < 0.1 * W_PER_A + 0.05


@dataclass(slots=True)
class CapWatch:
    """The cap invariant from the stations' side: the sum of what they are bound by, after every
    profile any of them Accepted, against the site limit in force."""

    limit_mw: int
    started: float
    max_mw: int
    updates: int = 0
    violations: int = 0  # profile answers after which the sum was above the limit
    above_since: float | None = None
    above_s: float = 0.0
    first_above: float | None = None

    def observe(self, total_mw: int, at: float) -> None:
        self.updates += 1
        self.max_mw = max(self.max_mw, total_mw)
        if total_mw > self.limit_mw + _CAP_TOLERANCE_MW:
            self.violations += 1
            if self.above_since is None:
                self.above_since = at
                if self.first_above is None:
                    self.first_above = at
        elif self.above_since is not None:
            self.above_s += at - self.above_since
            self.above_since = None

    def result(self, total_mw: int, now: float) -> dict[str, Any]:
        above_s = self.above_s + (now - self.above_since if self.above_since is not None else 0.0)
        return {
            "limit_w": self.limit_mw / 1000,
            "max_sum_w": self.max_mw / 1000,
            "sum_now_w": total_mw / 1000,
            "updates": self.updates,
            "violations": self.violations,
            "above_s": above_s,
            "first_above_at": self.first_above,  # time.monotonic()
            "watched_s": now - self.started,
        }


@dataclass(slots=True)
class StormRecord:
    """One station through a gateway restart (times: time.monotonic())."""

    lost_at: float | None = None
    attempts: int = 0
    opened_at: float | None = None
    booted_at: float | None = None
    levels: dict[int, float] = field(default_factory=dict)  # stackLevel -> first Accepted since reopening
    final_at: float | None = None  # its live level holds the expected share since then
    error: str = ""
    failed_at: list[float] = field(default_factory=list)  # each failed attempt (time.monotonic())
    unit: str = ""  # the unit of the live profile that re-profiled it (W, or A after a failed discovery)

    def both_levels_at(self) -> float | None:
        return sorted(self.levels.values())[1] if len(self.levels) >= 2 else None

    def complete(self) -> bool:
        return self.booted_at is not None and len(self.levels) >= 2 and self.final_at is not None

    def complete_at(self) -> float | None:
        """When it was re-profiled: both levels Accepted and the live one on the expected share."""
        both = self.both_levels_at()
        if not self.complete() or both is None or self.final_at is None:
            return None
        return max(both, self.final_at)


@dataclass(slots=True)
class StormPlan:
    expected_live_w: float
    spread_s: float
    retry_s: float
    timeout_s: float
    deadline: float
    rng: random.Random
    slots: asyncio.Semaphore | None
    records: dict[str, StormRecord]
    failures: dict[str, int] = field(default_factory=dict)  # why attempts failed: exception type -> count
    released_at: float | None = None  # the gateway listens again: lost stations come back from then on
    waiting: list[SimStation] = field(default_factory=list)  # lost before the release
    lag_max_s: float = 0.0  # this process's event loop, late by at most this much during the storm
    lag_over_50ms: int = 0


@dataclass(slots=True)
class MeterStats:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    skipped: int = 0  # the station's previous MeterValues was still unanswered when the next was due
    errors: list[str] = field(default_factory=list)

    def done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.failed += 1
            return
        exc = future.exception()
        if exc is None:
            self.answered += 1
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{type(exc).__name__}: {exc}")


class Fleet:
    """The simulated stations of one process, driven by commands from the harness."""

    def __init__(self) -> None:
        self.stations: dict[str, SimStation] = {}
        self._join_started: dict[str, float] = {}
        self._ssl: dict[str, ssl.SSLContext] = {}
        self.handshakes = 0  # websocket connections opened
        self.caps_mw = 0  # sum of every station's cap_mw
        self._watch: CapWatch | None = None
        self._storm: StormPlan | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._meter_task: asyncio.Task[None] | None = None
        self._meter_stats = MeterStats()

    async def connect(
        self,
        url: str,
        version: str,
        prefix: str,
        count: int,
        concurrency: int,
        timeout_s: float,
        reject_profiles: bool = False,
        password_prefix: str | None = None,
        ca_file: str | None = None,
    ) -> dict[str, Any]:
        """Open ``count`` connections and boot each; time until the last BootNotification is Accepted.

        ``wss://`` urls trust ``ca_file``; with ``password_prefix`` each station sends HTTP Basic
        Auth with the password ``password_prefix + station_id`` (security profiles 1 and 2).
        """
        handshakes = asyncio.Semaphore(concurrency)
        booted = 0
        failures: list[str] = []
        if ca_file:
            self._ssl.setdefault(url, ssl.create_default_context(cafile=ca_file))

        async def one(index: int) -> None:
            nonlocal booted
            station_id = f"{prefix}{index:05d}"
            password = None if password_prefix is None else password_prefix + station_id
            async with handshakes:  # a burst beyond the listen backlog only measures SYN retries
                station = await self._open(url, version, station_id, timeout_s, reject_profiles, password)
            await self._boot(station, timeout_s)
            booted += 1

        async def guarded(index: int) -> None:
            try:
                await one(index)
            except Exception as exc:  # noqa: BLE001 - counted and reported; one must not stop the rest
                failures.append(f"{type(exc).__name__}: {exc}")

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(guarded(i) for i in range(count))), timeout_s * 2)
        elapsed = time.perf_counter() - start
        return {"booted": booted, "failed": len(failures), "errors": failures[:5], "elapsed_s": elapsed}

    async def _dial(
        self, url: str, version: str, station_id: str, timeout_s: float, password: str | None
    ) -> LeanClientConnection:
        headers = {}
        if password is not None:
            token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        ws = await connect(
            f"{url}/{station_id}",
            subprotocols=[Subprotocol(version)],
            compression=None,
            ping_interval=None,
            open_timeout=timeout_s,
            close_timeout=2,
            max_size=2**20,
            ssl=self._ssl.get(url),
            additional_headers=headers or None,
            create_connection=LeanClientConnection,
        )
        if ws.subprotocol != version:
            await ws.close()
            raise ConnectionError(f"{station_id}: server chose subprotocol {ws.subprotocol!r}")
        assert isinstance(ws, LeanClientConnection)
        self.handshakes += 1
        return ws

    async def _open(
        self,
        url: str,
        version: str,
        station_id: str,
        timeout_s: float,
        reject_profiles: bool,
        password: str | None = None,
    ) -> SimStation:
        ws = await self._dial(url, version, station_id, timeout_s, password)
        station = SimStation(station_id, version, ws, reject_profiles, fleet=self, url=url, password=password)
        station.attach()
        self.stations[station_id] = station
        return station

    @staticmethod
    async def _boot(station: SimStation, timeout_s: float) -> None:
        answer = await station.call("BootNotification", boot_payload(station.version), timeout_s)
        if answer.get("status") != "Accepted":
            raise ConnectionError(f"{station.station_id}: BootNotification {answer.get('status')}")

    # -- what the stations are bound by ------------------------------------------

    def profile_accepted(self, station: SimStation, level: int, unit: str, limit: float | None) -> None:
        """A station Accepted a profile: its cap, the sum, the watch, and the restart's record."""
        cap = station_cap_mw(station)
        if cap != station.cap_mw:
            self.caps_mw += cap - station.cap_mw
            station.cap_mw = cap
            if self._watch is not None:
                self._watch.observe(self.caps_mw, time.monotonic())
        plan = self._storm
        if plan is None:
            return
        record = plan.records.get(station.station_id)
        if record is None or record.opened_at is None:
            return
        at = time.monotonic()
        record.levels.setdefault(level, at)
        if level == max(station.profiles):
            if _same_share(unit, limit, plan.expected_live_w):
                if record.final_at is None:
                    record.final_at = at
                record.unit = unit
            else:
                record.final_at = None

    def cap_watch_start(self, limit_w: float) -> dict[str, Any]:
        """Watch the sum of the stations' caps against ``limit_w`` from now on."""
        now = time.monotonic()
        self._watch = CapWatch(round(limit_w * 1000), now, self.caps_mw)
        self._watch.observe(self.caps_mw, now)
        return {"sum_w": self.caps_mw / 1000, "at": now}

    def cap_watch_stop(self) -> dict[str, Any]:
        watch, self._watch = self._watch, None
        if watch is None:
            return {}
        return watch.result(self.caps_mw, time.monotonic())

    # -- a gateway restart --------------------------------------------------------

    def storm_arm(
        self,
        prefix: str,
        expected_live_w: float,
        spread_s: float,
        retry_s: float,
        timeout_s: float,
        concurrency: int = 0,
        seed: int = 809,
    ) -> int:
        """From now on, a station of ``prefix`` that loses its connection comes back once
        ``storm_release`` says the gateway listens again: after a random delay in [0, spread_s],
        retrying every ~retry_s (jittered) while refused, until ``timeout_s`` has passed; at most
        ``concurrency`` handshakes at once (0: no bound). Its record times the reconnection and the
        profiles it Accepts afterwards (the live one must carry ``expected_live_w``)."""
        stations = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
        self._storm = StormPlan(
            expected_live_w,
            spread_s,
            retry_s,
            timeout_s,
            time.monotonic() + timeout_s,
            random.Random(seed),
            asyncio.Semaphore(concurrency) if concurrency > 0 else None,
            {s.station_id: StormRecord() for s in stations},
        )
        return len(stations)

    def station_lost(self, station: SimStation) -> None:
        plan = self._storm
        if plan is None or station.reconnecting or station.station_id not in plan.records:
            return
        station.reconnecting = True
        plan.records[station.station_id].lost_at = time.monotonic()
        if plan.released_at is None:
            plan.waiting.append(station)  # nothing listens yet: it comes back once something does
        else:
            self._spawn(self._reconnect(station, plan))

    def storm_release(self) -> int:
        """The gateway listens again: every station that lost its connection comes back, each after
        a random delay in [0, spread_s] from now (so N arrive within ``spread_s``)."""
        plan = self._storm
        if plan is None:
            raise RuntimeError("storm_arm first")
        plan.released_at = time.monotonic()
        waiting, plan.waiting = plan.waiting, []
        for station in waiting:
            self._spawn(self._reconnect(station, plan))
        self._spawn(self._watch_lag(plan))
        return len(waiting)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_lag(self, plan: StormPlan) -> None:
        """How late this process's own loop runs during the storm: the stations must not be the bottleneck."""
        loop = asyncio.get_running_loop()
        while self._storm is plan:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            late = loop.time() - due
            plan.lag_max_s = max(plan.lag_max_s, late)
            plan.lag_over_50ms += late > 0.05

    async def _reconnect(self, station: SimStation, plan: StormPlan) -> None:
        record = plan.records[station.station_id]
        try:
            await asyncio.sleep(plan.rng.uniform(0, plan.spread_s))
            while True:
                record.attempts += 1
                opened: LeanClientConnection | None = None
                try:
                    if plan.slots is None:
                        opened = await self._dial(
                            station.url, station.version, station.station_id, plan.timeout_s, station.password
                        )
                    else:
                        async with plan.slots:
                            opened = await self._dial(
                                station.url,
                                station.version,
                                station.station_id,
                                plan.timeout_s,
                                station.password,
                            )
                    station.ws = opened
                    station.attach()
                    record.opened_at = time.monotonic()
                    record.levels.clear()
                    record.final_at = None
                    await self._boot(station, plan.timeout_s)
                    record.booted_at = time.monotonic()
                    return
                except Exception as exc:  # noqa: BLE001 - refused, reset, timed out: a station retries
                    record.error = f"{type(exc).__name__}: {exc}"
                    record.failed_at.append(time.monotonic())
                    kind = type(exc).__name__
                    plan.failures[kind] = plan.failures.get(kind, 0) + 1
                    if opened is not None:
                        opened.transport.abort()
                    if time.monotonic() > plan.deadline:
                        return
                    await asyncio.sleep(plan.retry_s * plan.rng.uniform(0.5, 1.5))
        finally:
            station.reconnecting = False

    async def storm_wait(self, timeout_s: float) -> dict[str, Any]:
        """Until every station of the restart is back, booted and re-profiled at both levels with
        its live profile on the expected share (bounded); then each one's times."""
        plan = self._storm
        if plan is None:
            raise RuntimeError("storm_arm first")
        deadline = time.monotonic() + timeout_s
        records = plan.records
        while time.monotonic() < deadline:
            if all(r.complete() for r in records.values()):
                break
            await asyncio.sleep(0.05)
        values = list(records.values())
        incomplete = [i for i, r in records.items() if not r.complete()]
        return {
            "stations": len(values),
            "completed": len(values) - len(incomplete),
            "lost": [r.lost_at for r in values if r.lost_at is not None],
            "opened": [r.opened_at for r in values if r.opened_at is not None],
            "booted": [r.booted_at for r in values if r.booted_at is not None],
            "both_levels": [t for r in values if (t := r.both_levels_at()) is not None],
            "final": [r.final_at for r in values if r.final_at is not None],
            "complete": [t for r in values if (t := r.complete_at()) is not None],
            # each station's own wait: its reconnection -> its re-profiling
            "own": [t - r.opened_at for r in values if (t := r.complete_at()) is not None and r.opened_at],
            "attempts": sum(r.attempts for r in values),
            "in_amperes": sum(1 for r in values if r.complete() and r.unit == "A"),
            "failures": dict(plan.failures),
            "last_failure": max((t for r in values for t in r.failed_at), default=None),
            "released_at": plan.released_at,
            "lag_max_s": plan.lag_max_s,
            "lag_over_50ms": plan.lag_over_50ms,
            "handshakes": self.handshakes,
            "examples_incomplete": [
                {
                    "id": i,
                    "attempts": records[i].attempts,
                    "booted": records[i].booted_at is not None,
                    "levels": sorted(records[i].levels),
                    "holds": self.stations[i].profiles.get(max(self.stations[i].profiles, default=-1)),
                    "error": records[i].error,
                }
                for i in incomplete[:3]
            ],
        }

    def storm_disarm(self) -> None:
        self._storm = None

    # -- joins, MeterValues, summaries --------------------------------------------

    async def join(self, url: str, version: str, station_id: str, timeout_s: float) -> dict[str, Any]:
        """One station joins (websocket open + BootNotification) and logs the profiles it answers.

        Times are seconds after the connection attempt started; ``profile_log`` has the rest.
        """
        start = time.perf_counter()
        station = await asyncio.wait_for(self._open(url, version, station_id, timeout_s, False), timeout_s)
        station.profile_log = []
        self._join_started[station_id] = start
        opened = time.perf_counter()
        await self._boot(station, timeout_s)
        return {"open_s": opened - start, "boot_s": time.perf_counter() - start}

    def profile_log(self, station_id: str) -> list[tuple[float, int, str, float | None]]:
        """What a joining station answered: (seconds after its join started, stackLevel, unit, limit)."""
        station = self.stations[station_id]
        start = self._join_started[station_id]
        return [(t - start, level, unit, limit) for t, level, unit, limit in station.profile_log or []]

    async def meter_burst(self, prefix: str, per_station: int, timeout_s: float) -> dict[str, Any]:
        """Every station sends ``per_station`` MeterValues back to back (one CALL outstanding each)."""
        stations = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
        answered = 0
        failures: list[str] = []

        # One payload for the whole burst (the server parses each copy anyway): the
        # station side then costs one small bytes format per message.
        payload_json = {v: orjson.dumps(meter_payload(v, 0)) for v in (V16, V201)}

        async def one(station: SimStation) -> None:
            nonlocal answered
            frame_payload = payload_json[station.version]
            for _ in range(per_station):
                try:
                    await station.send_call("MeterValues", frame_payload)
                except (ConnectionError, CallErrorReceived) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                answered += 1

        start = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(one(s) for s in stations)), timeout_s)
        except TimeoutError:
            failures.append(f"burst not finished within {timeout_s:g} s")
        elapsed = time.perf_counter() - start
        return {"answered": answered, "failed": len(failures), "errors": failures[:5], "elapsed_s": elapsed}

    def meter_periodic_start(self, prefix: str, every_s: float) -> int:
        """Each station of ``prefix`` sends MeterValues every ``every_s``, the stations spread evenly
        over the interval (a steady N / every_s messages a second), until ``meter_periodic_stop``."""
        stations = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
        self._meter_stats = MeterStats()
        self._meter_task = asyncio.get_running_loop().create_task(self._meter_loop(stations, every_s))
        return len(stations)

    async def _meter_loop(self, stations: list[SimStation], every_s: float) -> None:
        loop = asyncio.get_running_loop()
        stats, n = self._meter_stats, len(stations)
        outstanding: dict[str, asyncio.Future[Any]] = {}
        start = loop.time()
        payload_at = -math.inf
        payload_json: dict[str, bytes] = {}
        sent = 0
        tick = min(0.1, every_s / 10)
        while n:
            now = loop.time()
            if now - payload_at >= 1.0:  # a fresh timestamp every second: readings must be topical
                payload_at = now
                payload_json = {v: orjson.dumps(meter_payload(v, sent)) for v in (V16, V201)}
            while start + (sent // n) * every_s + (sent % n) / n * every_s <= now:
                station = stations[sent % n]
                sent += 1
                previous = outstanding.get(station.station_id)
                if previous is not None and not previous.done():
                    stats.skipped += 1
                    continue
                future = station.send_call("MeterValues", payload_json[station.version])
                future.add_done_callback(stats.done)
                outstanding[station.station_id] = future
                stats.sent += 1
            await asyncio.sleep(tick)

    def meter_periodic_stats(self) -> dict[str, Any]:
        s = self._meter_stats
        return {
            "sent": s.sent,
            "answered": s.answered,
            "failed": s.failed,
            "skipped": s.skipped,
            "errors": s.errors,
        }

    async def meter_periodic_stop(self) -> dict[str, Any]:
        task, self._meter_task = self._meter_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return self.meter_periodic_stats()

    def profile_summary(self, prefix: str) -> dict[str, Any]:
        """What the stations hold: profiles received, and the limits installed per stack level."""
        stations = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
        top_limits: dict[str, int] = {}
        levels: dict[str, int] = {}  # "stackLevel: limit unit" -> stations
        for s in stations:
            if s.profiles:
                unit, limit = s.profiles[max(s.profiles)]
                key = f"{limit:g} {unit}" if limit is not None else "?"
                top_limits[key] = top_limits.get(key, 0) + 1
            for level, (unit, limit) in s.profiles.items():
                key = f"{level}: {limit:g} {unit}" if limit is not None else f"{level}: ?"
                levels[key] = levels.get(key, 0) + 1
        calls: dict[str, int] = {}
        for s in stations:
            for action, n in s.server_calls.items():
                calls[action] = calls.get(action, 0) + n
        return {
            "stations": len(stations),
            "connected": sum(1 for s in stations if s.ws.protocol.state is State.OPEN),
            "profiles_received": sum(s.profiles_received for s in stations),
            "top_level_limits": top_limits,
            "levels": levels,
            "server_calls": calls,
            "caps_sum_w": self.caps_mw / 1000,
        }

    async def close(self, prefix: str = "") -> int:
        if self._meter_task is not None:
            await self.meter_periodic_stop()
        if not prefix:
            self._storm = None
            for task in list(self._tasks):
                task.cancel()
        doomed = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
        for s in doomed:
            s.fleet = None  # leaving on purpose: no reconnection, and out of the sum
            self.caps_mw -= s.cap_mw
        await asyncio.gather(*(s.ws.close() for s in doomed), return_exceptions=True)
        for s in doomed:
            del self.stations[s.station_id]
        return len(doomed)


async def _serve_commands(conn: Connection) -> None:
    fleet = Fleet()
    await serve_commands(conn, fleet, fleet.close, "simulator")


def run_simulator(conn: Connection) -> None:
    """Process entry point: serve harness commands until told to exit."""
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    asyncio.run(_serve_commands(conn))
