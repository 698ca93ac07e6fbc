"""The baseline: a central system written plainly on the stock ``ocpp`` library.

This is what the library's own documentation leads one to write: one
``ocpp.v16.ChargePoint`` per connection with ``@on`` handlers, the library's
default (strict) schema validation, and a setpoint fanned out as one
``call(SetChargingProfile)`` per station gathered with ``asyncio.gather``. It is the
yardstick the gateway's station server is compared with in the same run; it holds
no optimisation on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call, call_result
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod
from ocpp.v16.enums import (
    Action,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingProfileStatus,
    ChargingRateUnitType,
    RegistrationStatus,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class BaselineChargePoint(ChargePoint16):  # type: ignore[misc]  # ocpp is untyped
    def __init__(self, station_id: str, connection: ServerConnection, csms: BaselineCsms) -> None:
        super().__init__(station_id, connection)
        self.csms = csms

    @on(Action.boot_notification)  # type: ignore[untyped-decorator]
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any) -> Any:
        self.csms.booted.add(self.id)
        return call_result.BootNotification(
            current_time=_now_iso(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)  # type: ignore[untyped-decorator]
    def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)  # type: ignore[untyped-decorator]
    def on_status_notification(self, connector_id: int, error_code: str, status: str, **kwargs: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.meter_values)  # type: ignore[untyped-decorator]
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any) -> Any:
        for sample in meter_value:
            for value in sample["sampled_value"]:
                if value.get("measurand") == "Power.Active.Import" and "phase" not in value:
                    watts = float(value["value"])
                    if value.get("unit") == "kW":
                        watts *= 1000
                    self.csms.power_w[self.id] = watts
        self.csms.meter_values += 1
        return call_result.MeterValues()

    async def set_max_profile(self, limit_w: float) -> str:
        """Install ``limit_w`` as the station-wide maximum (ChargePointMaxProfile, connector 0)."""
        result = await self.call(
            call.SetChargingProfile(
                connector_id=0,
                cs_charging_profiles=ChargingProfile(
                    charging_profile_id=1,
                    stack_level=0,
                    charging_profile_purpose=ChargingProfilePurposeType.charge_point_max_profile,
                    charging_profile_kind=ChargingProfileKindType.absolute,
                    charging_schedule=ChargingSchedule(
                        charging_rate_unit=ChargingRateUnitType.watts,
                        charging_schedule_period=[ChargingSchedulePeriod(start_period=0, limit=limit_w)],
                        start_schedule=_now_iso(),
                    ),
                ),
            )
        )
        return "CallError" if result is None else str(result.status)


@dataclass(frozen=True, slots=True)
class FanOutResult:
    """One setpoint: when each station's answer reached the server, relative to the setpoint."""

    elapsed_s: float  # setpoint submitted -> last answer in
    accept_times_s: list[float]
    not_accepted: int


@dataclass(frozen=True, slots=True)
class StormResult:
    """Setpoints faster than a fan-out: from the last one to every station Accepted on it."""

    after_last_s: float | None  # None: not every station accepted the last one in time
    all_accepted: bool


class BaselineCsms:
    def __init__(self) -> None:
        self.charge_points: dict[str, BaselineChargePoint] = {}
        self.booted: set[str] = set()
        self.power_w: dict[str, float] = {}
        self.meter_values = 0
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await serve(self._on_connect, host, port, subprotocols=["ocpp1.6"])  # type: ignore[list-item]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _on_connect(self, websocket: ServerConnection) -> None:
        if websocket.subprotocol != "ocpp1.6":
            await websocket.close()
            return
        station_id = websocket.request.path.strip("/") if websocket.request else ""
        charge_point = BaselineChargePoint(station_id, websocket, self)
        self.charge_points[station_id] = charge_point
        try:
            await charge_point.start()
        except ConnectionClosed:
            pass
        finally:
            if self.charge_points.get(station_id) is charge_point:
                del self.charge_points[station_id]
            self.booted.discard(station_id)
            self.power_w.pop(station_id, None)

    def connected(self) -> int:
        return len(self.booted)

    def ready(self, stations: int) -> bool:
        return len(self.booted) == stations

    def meter_count(self) -> int:
        return self.meter_values

    def total_power_w(self) -> float:
        return sum(self.power_w.values())

    async def fan_out(self, site_limit_w: float, timeout_s: float = 60.0) -> FanOutResult:
        """Split the site limit evenly and send every station its share at once."""
        charge_points = list(self.charge_points.values())
        share_w = round(site_limit_w / max(1, len(charge_points)), 1)
        start = time.perf_counter()

        async def one(charge_point: BaselineChargePoint) -> tuple[str, float]:
            try:
                status = await charge_point.set_max_profile(share_w)
            except Exception as exc:  # noqa: BLE001 - timeout, closed, CallError: counted as not accepted
                status = type(exc).__name__
            return status, time.perf_counter() - start

        results = await asyncio.wait_for(asyncio.gather(*(one(cp) for cp in charge_points)), timeout_s)
        elapsed = time.perf_counter() - start
        accepted = [t for status, t in results if status == ChargingProfileStatus.accepted]
        return FanOutResult(elapsed, accepted, len(results) - len(accepted))

    async def storm(self, site_limits_w: list[float], gap_s: float, timeout_s: float = 60.0) -> StormResult:
        """One gather per setpoint, ``gap_s`` apart; each station's calls queue on its call lock."""
        tasks: list[asyncio.Task[FanOutResult]] = []
        last = time.perf_counter()
        for index, limit_w in enumerate(site_limits_w):
            if index:
                await asyncio.sleep(gap_s)
            last = time.perf_counter()
            tasks.append(asyncio.ensure_future(self.fan_out(limit_w, timeout_s)))
        results = await asyncio.gather(*tasks)
        done_at = time.perf_counter()
        all_accepted = results[-1].not_accepted == 0
        return StormResult(done_at - last if all_accepted else None, all_accepted)
