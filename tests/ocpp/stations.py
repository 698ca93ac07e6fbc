"""Real OCPP stations for the tests: the ``ocpp`` library's ChargePoint (1.6 and 2.0.1) on websockets.

Each records every call the gateway makes to it and lets a test wait, with a bound, for
a condition over what it has received.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
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


@dataclass
class Log:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, action: str, payload: dict[str, Any]) -> None:
        async with self.changed:
            self.calls.append((action, payload))
            self.changed.notify_all()

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.calls if a == action]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)


def _refused(value: str, refused: frozenset[str]) -> bool:
    return any(m in refused for m in value.split(","))


class Station16(ChargePoint16):
    def __init__(self, station_id: str, ws: ClientConnection, behaviour: Behaviour) -> None:
        super().__init__(station_id, ws, response_timeout=WAIT_S)
        self.behaviour = behaviour
        self.log = Log()

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        await self.log.add("SetChargingProfile", {"connector_id": connector_id, **cs_charging_profiles})
        if self.behaviour.profile_delay_s:
            await asyncio.sleep(self.behaviour.profile_delay_s)
        return result16.SetChargingProfile(status=self.behaviour.profile_status)

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


class Station201(ChargePoint201):
    def __init__(self, station_id: str, ws: ClientConnection, behaviour: Behaviour) -> None:
        super().__init__(station_id, ws, response_timeout=WAIT_S)
        self.behaviour = behaviour
        self.log = Log()

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any]) -> Any:
        await self.log.add("SetChargingProfile", {"evse_id": evse_id, **charging_profile})
        if self.behaviour.profile_delay_s:
            await asyncio.sleep(self.behaviour.profile_delay_s)
        return result201.SetChargingProfile(status=self.behaviour.profile_status)

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
