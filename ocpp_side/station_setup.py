"""The calls the gateway makes to set a station up (pure builders and parsers).

Discovery: what rate unit and how many stack levels the station's smart charging takes
(1.6 GetConfiguration, 2.0.1 GetVariables on SmartChargingCtrlr).
Metering: MID-style sampling, periodic during transactions and clock-aligned for idle
periods (1.6 ChangeConfiguration, 2.0.1 SetVariables on SampledDataCtrlr/AlignedDataCtrlr).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.model import OcppVersion
from ocpp_side.profiles import RateUnit

V16_RATE_UNIT = "ChargingScheduleAllowedChargingRateUnit"
V16_MAX_STACK = "ChargeProfileMaxStackLevel"
V201_CTRLR = "SmartChargingCtrlr"
V201_RATE_UNIT = "RateUnit"
V201_MAX_STACK = "ProfileStackLevel"


@dataclass(frozen=True, slots=True)
class Discovered:
    """What discovery learnt; None where the station did not say."""

    rate_units: frozenset[RateUnit] | None = None
    max_stack_level: int | None = None

    def preferred_unit(self) -> RateUnit | None:
        if self.rate_units is None:
            return None
        if RateUnit.W in self.rate_units:
            return RateUnit.W  # exact: no assumption about phases or voltage
        if RateUnit.A in self.rate_units:
            return RateUnit.A
        return None


def discovery_request(version: OcppVersion) -> tuple[str, dict[str, Any]]:
    if version is OcppVersion.V16:
        return "GetConfiguration", {"key": [V16_RATE_UNIT, V16_MAX_STACK]}
    return "GetVariables", {
        "getVariableData": [
            {"component": {"name": V201_CTRLR}, "variable": {"name": V201_RATE_UNIT}},
            {"component": {"name": V201_CTRLR}, "variable": {"name": V201_MAX_STACK}},
        ]
    }


def _units(csv: str) -> frozenset[RateUnit]:
    words = {w.strip() for w in csv.split(",")}
    units = set()
    if words & {"Power", "W"}:
        units.add(RateUnit.W)
    if words & {"Current", "A"}:
        units.add(RateUnit.A)
    return frozenset(units)


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def parse_discovery(version: OcppVersion, response: dict[str, Any]) -> Discovered:
    values: dict[str, str] = {}
    if version is OcppVersion.V16:
        for item in response.get("configurationKey", ()):
            if "value" in item:
                values[item["key"]] = item["value"]
        units, stack = values.get(V16_RATE_UNIT), values.get(V16_MAX_STACK)
    else:
        for item in response.get("getVariableResult", ()):
            if item.get("attributeStatus") == "Accepted" and "attributeValue" in item:
                values[item["variable"]["name"]] = item["attributeValue"]
        units, stack = values.get(V201_RATE_UNIT), values.get(V201_MAX_STACK)
    return Discovered(None if units is None else _units(units) or None, _int(stack))


@dataclass(frozen=True, slots=True)
class MeteringPlan:
    sample_interval_s: int
    aligned_interval_s: int
    measurands: tuple[str, ...]


# One setting the gateway wants on the station: (component, variable) in 2.0.1,
# (None, key) in 1.6; ``measurands`` marks the list-valued settings a station may trim.
@dataclass(frozen=True, slots=True)
class Setting:
    component: str | None
    name: str
    value: str
    measurands: bool = False


def metering_settings(version: OcppVersion, plan: MeteringPlan, measurands: tuple[str, ...]) -> list[Setting]:
    csv = ",".join(measurands)
    if version is OcppVersion.V16:
        return [
            Setting(None, "MeterValueSampleInterval", str(plan.sample_interval_s)),
            Setting(None, "MeterValuesSampledData", csv, measurands=True),
            Setting(None, "ClockAlignedDataInterval", str(plan.aligned_interval_s)),
            Setting(None, "MeterValuesAlignedData", csv, measurands=True),
        ]
    return [
        Setting("SampledDataCtrlr", "TxUpdatedInterval", str(plan.sample_interval_s)),
        Setting("SampledDataCtrlr", "TxUpdatedMeasurands", csv, measurands=True),
        Setting("AlignedDataCtrlr", "Interval", str(plan.aligned_interval_s)),
        Setting("AlignedDataCtrlr", "Measurands", csv, measurands=True),
    ]


def setting_requests(version: OcppVersion, settings: list[Setting]) -> list[tuple[str, dict[str, Any]]]:
    """1.6 takes one ChangeConfiguration per key; 2.0.1 one SetVariables for all."""
    if version is OcppVersion.V16:
        return [("ChangeConfiguration", {"key": s.name, "value": s.value}) for s in settings]
    data = [
        {"attributeValue": s.value, "component": {"name": s.component}, "variable": {"name": s.name}}
        for s in settings
    ]
    return [("SetVariables", {"setVariableData": data})]


def accepted_settings(
    version: OcppVersion, settings: list[Setting], responses: list[dict[str, Any]]
) -> list[bool]:
    """Which of ``settings`` the station took, from the responses to ``setting_requests``."""
    if version is OcppVersion.V16:
        # RebootRequired: stored, effective after the station's next reboot.
        return [r.get("status") in ("Accepted", "RebootRequired") for r in responses]
    status = {
        (r["component"]["name"], r["variable"]["name"]): r.get("attributeStatus")
        for r in (responses[0].get("setVariableResult", ()) if responses else ())
    }
    return [status.get((s.component, s.name)) in ("Accepted", "RebootRequired") for s in settings]
