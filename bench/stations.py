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
import itertools
import logging
import resource
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

    def attach(self) -> None:
        self.ws.on_text = self.dispatch
        self.ws.on_lost = self.fail_pending

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


class Fleet:
    """The simulated stations of one process, driven by commands from the harness."""

    def __init__(self) -> None:
        self.stations: dict[str, SimStation] = {}
        self._join_started: dict[str, float] = {}

    async def connect(
        self,
        url: str,
        version: str,
        prefix: str,
        count: int,
        concurrency: int,
        timeout_s: float,
        reject_profiles: bool = False,
    ) -> dict[str, Any]:
        """Open ``count`` connections and boot each; time until the last BootNotification is Accepted."""
        handshakes = asyncio.Semaphore(concurrency)
        booted = 0
        failures: list[str] = []

        async def one(index: int) -> None:
            nonlocal booted
            station_id = f"{prefix}{index:05d}"
            async with handshakes:  # a burst beyond the listen backlog only measures SYN retries
                station = await self._open(url, version, station_id, timeout_s, reject_profiles)
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

    async def _open(
        self, url: str, version: str, station_id: str, timeout_s: float, reject_profiles: bool
    ) -> SimStation:
        ws = await connect(
            f"{url}/{station_id}",
            subprotocols=[Subprotocol(version)],
            compression=None,
            ping_interval=None,
            open_timeout=timeout_s,
            close_timeout=2,
            max_size=2**20,
            create_connection=LeanClientConnection,
        )
        if ws.subprotocol != version:
            await ws.close()
            raise ConnectionError(f"{station_id}: server chose subprotocol {ws.subprotocol!r}")
        assert isinstance(ws, LeanClientConnection)
        station = SimStation(station_id, version, ws, reject_profiles)
        station.attach()
        self.stations[station_id] = station
        return station

    @staticmethod
    async def _boot(station: SimStation, timeout_s: float) -> None:
        answer = await station.call("BootNotification", boot_payload(station.version), timeout_s)
        if answer.get("status") != "Accepted":
            raise ConnectionError(f"{station.station_id}: BootNotification {answer.get('status')}")

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

    def profile_summary(self, prefix: str) -> dict[str, Any]:
        """What the stations hold: profiles received, and the limits installed per stack level."""
        stations = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
        top_limits: dict[str, int] = {}
        for s in stations:
            if s.profiles:
                unit, limit = s.profiles[max(s.profiles)]
                key = f"{limit:g} {unit}" if limit is not None else "?"
                top_limits[key] = top_limits.get(key, 0) + 1
        calls: dict[str, int] = {}
        for s in stations:
            for action, n in s.server_calls.items():
                calls[action] = calls.get(action, 0) + n
        return {
            "stations": len(stations),
            "profiles_received": sum(s.profiles_received for s in stations),
            "top_level_limits": top_limits,
            "server_calls": calls,
        }

    async def close(self, prefix: str = "") -> int:
        doomed = [s for s in self.stations.values() if s.station_id.startswith(prefix)]
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
