"""OCPP 1.6 and 2.0.1 as a simulated station speaks them: its CALLs, its handlers, its settings.

``Client16`` and ``Client201`` are the ``ocpp`` library's ChargePoint classes (strict
schema validation on) bound to one ``SimStation``: the station-initiated CALLs the
sender task makes, and the handlers for what the central system asks. Handlers only
change the station and return; they never await a CALL (the library would deadlock).
The configuration keys (1.6) and device-model variables (2.0.1) a real charger offers
for metering and smart charging are kept here, with what changing them does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from scenarios.charging import ChargerModel
from scenarios.legacy_unit import MODEL, VENDOR
from scenarios.station_spec import StationSpec


class SimStation(Protocol):
    """What a protocol client uses of its simulated station (``scenarios.sim_station``
    implements it; named here so the two modules do not import each other)."""

    spec: StationSpec
    model: ChargerModel
    clock: Callable[[], float]
    transaction_id: int | str | None
    measurands: tuple[str, ...]
    heartbeat_s: float
    meter_interval_s: float

    @property
    def station_id(self) -> str: ...
    def record(self, kind: str, detail: str = "", value: float | None = None) -> None: ...
    def trigger(self, message: str) -> bool: ...
    def install_profile(self, raw: dict[str, Any], evse_id: int) -> tuple[bool, str]: ...
    def clear_profiles(
        self, profile_id: int | None, evse_id: int | None, purpose: str | None, stack: int | None
    ) -> int: ...
    def next_tx_seq(self) -> int: ...
    def set_meter_interval(self, seconds: float) -> None: ...


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


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- OCPP 1.6 -------------------------------------------------------------------------------


class Client16(ChargePoint16):  # type: ignore[misc]
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
            model, vendor = (MODEL, VENDOR) if self.station.spec.legacy else ("SIM-16", "ocpp809")
            answer = await self.call(
                call16.BootNotification(charge_point_model=model, charge_point_vendor=vendor),
                suppress=False,
            )
            if answer.interval:
                self.station.heartbeat_s = float(answer.interval)
            if answer.status == "Accepted":
                return
            await asyncio.sleep(max(1.0, float(answer.interval or 10)))

    async def start_transaction(self) -> None:
        now = self.station.clock()
        meter_start = int(self.station.model.energy_wh(now))
        answer = await self.call(
            call16.StartTransaction(
                connector_id=1,
                id_tag=self.station.spec.id_tag,
                meter_start=meter_start,
                timestamp=iso(now),
            ),
            suppress=False,
        )
        self.station.transaction_id = int(answer.transaction_id)
        self.station.record("tx_started", str(answer.transaction_id), float(meter_start))

    async def stop_transaction(self) -> None:
        now = self.station.clock()
        transaction_id = self.station.transaction_id
        meter_stop = int(self.station.model.energy_wh(now))
        await self.call(
            call16.StopTransaction(
                meter_stop=meter_stop,
                timestamp=iso(now),
                transaction_id=transaction_id if isinstance(transaction_id, int) else 0,
                reason="EVDisconnected",
                id_tag=self.station.spec.id_tag,
            ),
            suppress=False,
        )
        self.station.record("tx_ended", str(transaction_id), float(meter_stop))

    async def status(self, charging: bool) -> None:
        now = iso(self.station.clock())
        await self.call(call16.StatusNotification(0, "NoError", "Available", timestamp=now), suppress=False)
        state = "Charging" if charging else "Available"
        await self.call(call16.StatusNotification(1, "NoError", state, timestamp=now), suppress=False)

    async def heartbeat(self) -> None:
        await self.call(call16.Heartbeat(), suppress=False)

    async def meter_values(self, sample: Any, reason: str) -> None:
        context = "Trigger" if reason == "Trigger" else "Sample.Periodic"
        values = sampled_values(sample, self.station.measurands, context, version16=True)
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
        if self.config[key][1] or not apply_setting(self.station, key, value):
            self.station.record("config", f"{key}={value} rejected")
            return result16.ChangeConfiguration(status="Rejected")
        self.config[key] = (value, False)
        self.station.record("config", f"{key}={value}")
        return result16.ChangeConfiguration(status="Accepted")

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        accepted = self.station.trigger(requested_message)
        return result16.TriggerMessage(status="Accepted" if accepted else "NotImplemented")


# -- OCPP 2.0.1 -----------------------------------------------------------------------------

_Key = tuple[str, str, str]  # component, variable, instance ("" when none)


class Client201(ChargePoint201):  # type: ignore[misc]
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
        station.record("tx_started", station.transaction_id)

    async def stop_transaction(self) -> None:
        await self._transaction_event("Ended", "EVDeparted", None)
        self.station.record("tx_ended", str(self.station.transaction_id))

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
        values = sampled_values(sample, self.station.measurands, context, version16=False)
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
        seq = station.next_tx_seq()
        charging = station.model.charging or event_type == "Started"
        info: dict[str, Any] = {
            "transaction_id": str(station.transaction_id),
            "charging_state": "Charging" if charging else "EVConnected",
        }
        if event_type == "Ended":
            info.update(charging_state="Idle", stopped_reason="EVDisconnected")
        await self.call(
            call201.TransactionEvent(
                event_type=event_type,
                timestamp=iso(station.clock()),
                trigger_reason=trigger,
                seq_no=seq,
                transaction_info=info,
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
                if self.variables[key][1] or not apply_setting(self.station, f"{key[0]}.{key[1]}", value):
                    status = "Rejected"
                else:
                    self.variables[key] = (value, False)
            self.station.record("config", f"{key[0]}.{key[1]}={item['attribute_value']} {status}")
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


def apply_setting(station: SimStation, name: str, value: str) -> bool:
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
            station.set_meter_interval(float(seconds))
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


def sampled_values(
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
