"""Real OCPP stations for the tests: the ``ocpp`` library's ChargePoint (1.6 and 2.0.1) on websockets.

Each records every call the gateway makes to it and lets a test wait, with a bound, for
a condition over what it has received. Every SetChargingProfile is also kept as a
``Profile`` (when it came, when and how it was answered, its value in W and its validTo),
so a test can work out what the station was bound by at any instant.

``python -m tests.ocpp.stations PORT STATION_ID [VERSION]`` runs one booted station in a
process of its own (to be killed), printing each ``Profile`` as a JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ocpp.charge_point import camel_to_snake_case
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection, connect

WAIT_S = 5.0


@dataclass
class Behaviour:
    """How a simulated station answers the gateway."""

    profile_status: str = "Accepted"
    rate_units: str | None = "Current,Power"  # 1.6 CSV; None: the key is unknown
    max_stack_level: int | None = 8
    refused_measurands: frozenset[str] = frozenset()
    profile_delay_s: float = 0.0  # answer SetChargingProfile this late (the library blocks meanwhile)
    # How SetChargingProfile is answered: "answer" (with profile_status), "silent" (never
    # answered; the station goes on answering everything else) or "garbage" (a CALLRESULT
    # no schema allows). Read when each call arrives, so a test may switch it midway.
    profile_answer: str = "answer"
    voltage_v: float = 230.0  # to turn a limit in A per phase into W


@dataclass(frozen=True)
class Profile:
    """One SetChargingProfile as the station saw it.

    ``status`` is what it answered ("Accepted", "Rejected", ...; "silent": no answer,
    "garbage": an invalid one). Only an Accepted profile is installed: from
    ``answered_s`` on, it binds the station (wall-clock seconds, as the gateway's).
    """

    station_id: str
    received_s: float
    answered_s: float | None
    status: str
    profile_id: int
    stack_level: int
    limit_w: float
    valid_to_s: float | None

    @property
    def installed(self) -> bool:
        return self.status == "Accepted"


def read_profile(
    station_id: str,
    profile: dict[str, Any],
    voltage_v: float,
    received_s: float,
    answered_s: float | None,
    status: str,
) -> Profile:
    """A ``Profile`` from the (snake_case) chargingProfile / csChargingProfiles of a call."""
    schedule = profile["charging_schedule"]
    if isinstance(schedule, list):  # 2.0.1: a list of schedules; the gateway sends one
        schedule = schedule[0]
    period = schedule["charging_schedule_period"][0]
    limit = float(period["limit"])
    if schedule["charging_rate_unit"] == "A":
        limit *= float(period.get("number_phases", 3)) * voltage_v
    valid_to = profile.get("valid_to")
    return Profile(
        station_id,
        received_s,
        answered_s,
        status,
        int(profile["charging_profile_id"] if "charging_profile_id" in profile else profile["id"]),
        int(profile["stack_level"]),
        limit,
        None if valid_to is None else datetime.fromisoformat(valid_to).timestamp(),
    )


@dataclass
class Log:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    sink: Callable[[Profile], None] | None = None  # also told of every Profile

    async def add(self, action: str, payload: dict[str, Any]) -> None:
        async with self.changed:
            self.calls.append((action, payload))
            self.changed.notify_all()

    async def add_profile(self, profile: Profile) -> None:
        if self.sink is not None:
            self.sink(profile)
        async with self.changed:
            self.profiles.append(profile)
            self.changed.notify_all()

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.calls if a == action]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)


def _refused(value: str, refused: frozenset[str]) -> bool:
    return any(m in refused for m in value.split(","))


class _ProfileQuirks:
    """SetChargingProfile left unanswered, or answered with garbage, before the library sees it."""

    behaviour: Behaviour
    log: Log
    id: str
    _connection: Any
    _OUTLET: str  # "connectorId" (1.6) or "evseId" (2.0.1)
    _PROFILE: str  # "csChargingProfiles" (1.6) or "chargingProfile" (2.0.1)

    async def route_message(self, raw_msg: str) -> None:
        answer = self.behaviour.profile_answer
        if answer != "answer":
            try:
                msg = json.loads(raw_msg, parse_float=Decimal)
            except ValueError:
                msg = None
            if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2 and msg[2] == "SetChargingProfile":
                await self._quirk(answer, str(msg[1]), msg[3])
                return
        await super().route_message(raw_msg)  # type: ignore[misc]

    async def _quirk(self, answer: str, unique_id: str, payload: dict[str, Any]) -> None:
        received = time.time()
        snake = camel_to_snake_case(payload)
        profile = camel_to_snake_case(payload[self._PROFILE])
        outlet_key = "connector_id" if self._OUTLET == "connectorId" else "evse_id"
        await self.log.add("SetChargingProfile", {outlet_key: snake[outlet_key], **profile})
        answered = None
        if answer == "garbage":
            answered = time.time()
            await self._connection.send(json.dumps([3, unique_id, {"status": "Perhaps"}]))
        await self.log.add_profile(
            read_profile(self.id, profile, self.behaviour.voltage_v, received, answered, answer)
        )

    async def _answer_profile(self, profile: dict[str, Any]) -> str:
        received = time.time()
        if self.behaviour.profile_delay_s:
            await asyncio.sleep(self.behaviour.profile_delay_s)
        status = self.behaviour.profile_status
        await self.log.add_profile(
            read_profile(self.id, profile, self.behaviour.voltage_v, received, time.time(), status)
        )
        return status


class Station16(_ProfileQuirks, ChargePoint16):
    _OUTLET, _PROFILE = "connectorId", "csChargingProfiles"

    def __init__(self, station_id: str, ws: ClientConnection, behaviour: Behaviour) -> None:
        super().__init__(station_id, ws, response_timeout=WAIT_S)
        self.behaviour = behaviour
        self.log = Log()

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        await self.log.add("SetChargingProfile", {"connector_id": connector_id, **cs_charging_profiles})
        status = await self._answer_profile(cs_charging_profiles)
        return result16.SetChargingProfile(status=status)

    @on("GetConfiguration")
    async def on_get_configuration(self, key: list[str] | None = None) -> Any:
        await self.log.add("GetConfiguration", {"key": key})
        known: dict[str, str] = {}
        if self.behaviour.rate_units is not None:
            known["ChargingScheduleAllowedChargingRateUnit"] = self.behaviour.rate_units
        if self.behaviour.max_stack_level is not None:
            known["ChargeProfileMaxStackLevel"] = str(self.behaviour.max_stack_level)
        keys = key or list(known)
        return result16.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": known[k]} for k in keys if k in known],
            unknown_key=[k for k in keys if k not in known] or None,
        )

    @on("ChangeConfiguration")
    async def on_change_configuration(self, key: str, value: str) -> Any:
        await self.log.add("ChangeConfiguration", {"key": key, "value": value})
        refused = key.startswith("MeterValues") and _refused(value, self.behaviour.refused_measurands)
        return result16.ChangeConfiguration(status="Rejected" if refused else "Accepted")


class Station201(_ProfileQuirks, ChargePoint201):
    _OUTLET, _PROFILE = "evseId", "chargingProfile"

    def __init__(self, station_id: str, ws: ClientConnection, behaviour: Behaviour) -> None:
        super().__init__(station_id, ws, response_timeout=WAIT_S)
        self.behaviour = behaviour
        self.log = Log()

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any]) -> Any:
        await self.log.add("SetChargingProfile", {"evse_id": evse_id, **charging_profile})
        status = await self._answer_profile(charging_profile)
        return result201.SetChargingProfile(status=status)

    @on("GetVariables")
    async def on_get_variables(self, get_variable_data: list[dict[str, Any]]) -> Any:
        await self.log.add("GetVariables", {"get_variable_data": get_variable_data})
        units = (
            None
            if self.behaviour.rate_units is None
            else self.behaviour.rate_units.replace("Current", "A").replace("Power", "W")
        )
        known = {
            "RateUnit": units,
            "ProfileStackLevel": None
            if self.behaviour.max_stack_level is None
            else str(self.behaviour.max_stack_level),
        }
        results = []
        for item in get_variable_data:
            value = known.get(item["variable"]["name"])
            entry: dict[str, Any] = {
                "attribute_status": "Accepted" if value is not None else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                entry["attribute_value"] = value
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    async def on_set_variables(self, set_variable_data: list[dict[str, Any]]) -> Any:
        await self.log.add("SetVariables", {"set_variable_data": set_variable_data})
        results = []
        for item in set_variable_data:
            refused = item["variable"]["name"].endswith("Measurands") and _refused(
                item["attribute_value"], self.behaviour.refused_measurands
            )
            results.append(
                {
                    "attribute_status": "Rejected" if refused else "Accepted",
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        return result201.SetVariables(set_variable_result=results)


@contextlib.asynccontextmanager
async def station(
    port: int,
    station_id: str,
    version: str = "ocpp1.6",
    behaviour: Behaviour | None = None,
    scheme: str = "ws",
    **connect_kwargs: Any,
) -> Any:
    """Connect a real library station to the gateway; closes it on exit."""
    ws = await connect(f"{scheme}://127.0.0.1:{port}/{station_id}", subprotocols=[version], **connect_kwargs)
    cls = Station16 if version == "ocpp1.6" else Station201
    cp = cls(station_id, ws, behaviour or Behaviour())
    async with running(cp, ws):
        yield cp


@contextlib.asynccontextmanager
async def running(cp: ChargePoint16 | ChargePoint201, ws: Any) -> AsyncIterator[None]:
    """Run a connected station's message loop; on exit close its websocket and stop the loop."""
    task = asyncio.create_task(cp.start())
    try:
        yield
    finally:
        await ws.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def boot(cp: ChargePoint16 | ChargePoint201) -> Any:
    """Send the BootNotification of the station's OCPP version; returns the answer."""
    if isinstance(cp, ChargePoint16):
        return await cp.call(
            call16.BootNotification(charge_point_model="Wallbox", charge_point_vendor="ocpp809-test")
        )
    return await cp.call(
        call201.BootNotification(
            charging_station={"model": "Wallbox", "vendor_name": "ocpp809-test"}, reason="PowerUp"
        )
    )


def drop(ws: ClientConnection, reset: bool = False) -> None:
    """Vanish as a dead modem or a killed station does: no close frame, just the TCP end.

    ``reset``: SO_LINGER 0 first, so the kernel sends an RST instead of a FIN.
    """
    transport = ws.transport
    if reset:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _main(argv: list[str]) -> None:
    port, station_id = int(argv[0]), argv[1]
    version = argv[2] if len(argv) > 2 else "ocpp1.6"

    def emit(profile: Profile) -> None:
        sys.stdout.write(json.dumps(asdict(profile)) + "\n")
        sys.stdout.flush()

    async with station(port, station_id, version) as cp:
        cp.log.sink = emit
        await boot(cp)
        await asyncio.Event().wait()  # until the test kills this process


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
