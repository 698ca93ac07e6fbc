"""The OCPP 1.6 configuration keys a 2.0.1 CSMS sees as device-model variables (pure).

One table, ``KEYS``: each standard 1.6 key of the Core, Smart Charging, Local Auth List,
Reservation and Firmware Management profiles that has a 2.0.1 counterpart, with the
standardised component and variable (names as in the OCPP 2.0.1 Part 2 appendix, spelt
as EVerest's ``config/v2/component_config/standardized``). All of them are station-wide:
a component named with an ``evse`` or an ``instance`` is not one of them.

Keys without a counterpart (BlinkRepeat, NumberOfConnectors, MinimumStatusDuration, the
``…MaxLength`` keys, vendor keys …) appear under ``VENDOR_COMPONENT`` with the 1.6 key as
the variable name; a CSMS reads and writes them there as they are.

Values: 1.6 and 2.0.1 spell most values alike (integers, ``true``/``false``, comma
separated measurand lists); the rate units are the exception (``Current,Power`` in 1.6,
``A,W`` in 2.0.1), and 1.6 booleans are normalised to lower case for 2.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

VENDOR_COMPONENT = "OCPP16Configuration"  # every 1.6 key, under its own name


class Kind(StrEnum):
    """The 2.0.1 ``dataType`` of a variable (NotifyReport ``variableCharacteristics``)."""

    INTEGER = "integer"
    BOOLEAN = "boolean"
    MEMBER_LIST = "MemberList"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class Variable:
    key: str  # the 1.6 configuration key
    component: str
    variable: str
    kind: Kind
    instance: str | None = None  # the variable's instance, where the standard names one


_I, _B, _M = Kind.INTEGER, Kind.BOOLEAN, Kind.MEMBER_LIST

KEYS: tuple[Variable, ...] = (
    # -- Core
    Variable("AllowOfflineTxForUnknownId", "AuthCtrlr", "OfflineTxForUnknownIdEnabled", _B),
    Variable("AuthorizationCacheEnabled", "AuthCacheCtrlr", "Enabled", _B),
    Variable("AuthorizeRemoteTxRequests", "AuthCtrlr", "AuthorizeRemoteStart", _B),
    Variable("ClockAlignedDataInterval", "AlignedDataCtrlr", "Interval", _I),
    Variable("ConnectionTimeOut", "TxCtrlr", "EVConnectionTimeOut", _I),
    Variable("GetConfigurationMaxKeys", "DeviceDataCtrlr", "ItemsPerMessage", _I, "GetVariables"),
    Variable("HeartbeatInterval", "OCPPCommCtrlr", "HeartbeatInterval", _I),
    Variable("LocalAuthorizeOffline", "AuthCtrlr", "LocalAuthorizeOffline", _B),
    Variable("LocalPreAuthorize", "AuthCtrlr", "LocalPreAuthorize", _B),
    Variable("MaxEnergyOnInvalidId", "TxCtrlr", "MaxEnergyOnInvalidId", _I),
    Variable("MeterValuesAlignedData", "AlignedDataCtrlr", "Measurands", _M),
    Variable("MeterValuesSampledData", "SampledDataCtrlr", "TxUpdatedMeasurands", _M),
    Variable("MeterValueSampleInterval", "SampledDataCtrlr", "TxUpdatedInterval", _I),
    Variable("ResetRetries", "OCPPCommCtrlr", "ResetRetries", _I),
    Variable("StopTransactionOnEVSideDisconnect", "TxCtrlr", "StopTxOnEVSideDisconnect", _B),
    Variable("StopTransactionOnInvalidId", "TxCtrlr", "StopTxOnInvalidId", _B),
    Variable("StopTxnAlignedData", "AlignedDataCtrlr", "TxEndedMeasurands", _M),
    Variable("StopTxnSampledData", "SampledDataCtrlr", "TxEndedMeasurands", _M),
    Variable("TransactionMessageAttempts", "OCPPCommCtrlr", "MessageAttempts", _I, "TransactionEvent"),
    Variable(
        "TransactionMessageRetryInterval", "OCPPCommCtrlr", "MessageAttemptInterval", _I, "TransactionEvent"
    ),
    Variable("UnlockConnectorOnEVSideDisconnect", "OCPPCommCtrlr", "UnlockOnEVSideDisconnect", _B),
    Variable("WebSocketPingInterval", "OCPPCommCtrlr", "WebSocketPingInterval", _I),
    # -- Local Auth List Management
    Variable("LocalAuthListEnabled", "LocalAuthListCtrlr", "Enabled", _B),
    Variable("SendLocalListMaxLength", "LocalAuthListCtrlr", "ItemsPerMessage", _I),
    # -- Smart Charging
    Variable("ChargeProfileMaxStackLevel", "SmartChargingCtrlr", "ProfileStackLevel", _I),
    Variable("ChargingScheduleAllowedChargingRateUnit", "SmartChargingCtrlr", "RateUnit", _M),
    Variable("ChargingScheduleMaxPeriods", "SmartChargingCtrlr", "PeriodsPerSchedule", _I),
    Variable("ConnectorSwitch3to1PhaseSupported", "SmartChargingCtrlr", "Phases3to1", _B),
    # -- Reservation
    Variable("ReserveConnectorZeroSupported", "ReservationCtrlr", "NonEvseSpecific", _B),
    # -- Firmware Management
    Variable("SupportedFileTransferProtocols", "OCPPCommCtrlr", "FileTransferProtocols", _M),
)

BY_KEY: dict[str, Variable] = {v.key: v for v in KEYS}
BY_NAME: dict[tuple[str, str, str | None], Variable] = {
    (v.component, v.variable, v.instance): v for v in KEYS
}
COMPONENTS: frozenset[str] = frozenset(v.component for v in KEYS) | {VENDOR_COMPONENT}


class Unknown(StrEnum):
    """Why a 2.0.1 component/variable names no 1.6 key (a GetVariables/SetVariables status)."""

    COMPONENT = "UnknownComponent"
    VARIABLE = "UnknownVariable"


def key_of(component: dict[str, Any], variable: dict[str, Any]) -> str | Unknown:
    """The 1.6 key a 2.0.1 ``component``/``variable`` pair (ComponentType/VariableType) names."""
    name = component["name"]
    if name not in COMPONENTS or "evse" in component or "instance" in component:
        return Unknown.COMPONENT
    if name == VENDOR_COMPONENT:
        return Unknown.VARIABLE if "instance" in variable else str(variable["name"])
    found = BY_NAME.get((name, variable["name"], variable.get("instance")))
    return Unknown.VARIABLE if found is None else found.key


def names_of(key: str) -> tuple[dict[str, Any], dict[str, Any], Kind]:
    """The 2.0.1 (component, variable, dataType) a 1.6 key is reported under."""
    found = BY_KEY.get(key)
    if found is None:
        return {"name": VENDOR_COMPONENT}, {"name": key}, Kind.STRING
    variable = {"name": found.variable}
    if found.instance is not None:
        variable["instance"] = found.instance
    return {"name": found.component}, variable, found.kind


_UNIT_TO_201 = {"Current": "A", "Power": "W"}
_UNIT_TO_16 = {v: k for k, v in _UNIT_TO_201.items()}


def _csv_map(value: str, table: dict[str, str]) -> str:
    return ",".join(table.get(w.strip(), w.strip()) for w in value.split(","))


def value_to_201(key: str, value: str) -> str:
    """A 1.6 key's value as its 2.0.1 variable spells it."""
    found = BY_KEY.get(key)
    if found is None:
        return value
    if found.key == "ChargingScheduleAllowedChargingRateUnit":
        return _csv_map(value, _UNIT_TO_201)
    if found.kind is Kind.BOOLEAN and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    return value


def value_to_16(key: str, value: str) -> str:
    """A 2.0.1 variable's value as the 1.6 key spells it."""
    if key == "ChargingScheduleAllowedChargingRateUnit":
        return _csv_map(value, _UNIT_TO_16)
    return value
