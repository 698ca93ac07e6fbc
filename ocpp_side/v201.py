"""OCPP 2.0.1: every rule in which this version differs from the others (pure).

The same names as ``v16.py``, checked by ``versions.VersionRules``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.core.model import OcppVersion
from ocpp_side.codec import ErrorKind, OcppViolation
from ocpp_side.observations import ConnectorStatus, MeterReading, Observation, TransactionUpdate
from ocpp_side.profiles import StationMax
from ocpp_side.station_setup import TAKEN, Discovered, MeteringPlan, Setting, discovered

Payload = dict[str, Any]

VERSION = OcppVersion.V201

# -- schemas and errors ------------------------------------------------------------

SCHEMA_DIR = "v201"  # in the ocpp package: ActionRequest.json, ActionResponse.json


def schema_file(action: str, request: bool) -> str:
    return f"{action}{'Request' if request else 'Response'}.json"


ERROR_CODES: dict[ErrorKind, str] = {
    ErrorKind.FORMAT: "FormatViolation",
    ErrorKind.PROTOCOL: "ProtocolError",
    ErrorKind.TYPE: "TypeConstraintViolation",
    ErrorKind.PROPERTY: "PropertyConstraintViolation",
    ErrorKind.OCCURRENCE: "OccurrenceConstraintViolation",
    ErrorKind.NOT_IMPLEMENTED: "NotImplemented",
    ErrorKind.NOT_SUPPORTED: "NotSupported",
    ErrorKind.INTERNAL: "InternalError",
    ErrorKind.GENERIC: "GenericError",
    ErrorKind.RPC_FRAMEWORK: "RpcFrameworkError",
    ErrorKind.MESSAGE_TYPE: "MessageTypeNotSupported",
}

# -- standalone answers (answers.py answers Heartbeat and BootNotification alike) --

# Notifications a central system acknowledges with an empty payload.
EMPTY_ANSWERS = frozenset(
    {
        "StatusNotification",
        "FirmwareStatusNotification",
        "PublishFirmwareStatusNotification",
        "LogStatusNotification",
        "SecurityEventNotification",
        "MeterValues",
        "NotifyReport",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyChargingLimit",
        "ClearedChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "ReportChargingProfiles",
        "ReservationStatusUpdate",
    }
)

# Requests a standalone controller cannot serve: a proper negative answer.
FIXED_ANSWERS: dict[str, Payload] = {
    "DataTransfer": {"status": "UnknownVendorId"},
    "SignCertificate": {"status": "Rejected"},
    "Get15118EVCertificate": {"status": "Failed", "exiResponse": ""},
    "GetCertificateStatus": {"status": "Failed"},
    "NotifyEVChargingNeeds": {"status": "Rejected"},  # no schedule to offer the EV
    "NotifyEVChargingSchedule": {"status": "Accepted"},
}

COMPUTED_ANSWERS = frozenset({"Authorize", "TransactionEvent"})


def answer(
    action: str, payload: Payload, authorize: Callable[[str], str], new_transaction_id: Callable[[], int]
) -> Payload:
    """The answer to one of ``COMPUTED_ANSWERS``; ``authorize`` judges an id token.
    (2.0.1 stations number their transactions themselves: ``new_transaction_id`` is unused.)"""
    if action == "Authorize":
        return {"idTokenInfo": {"status": authorize(payload["idToken"]["idToken"])}}
    if action == "TransactionEvent":
        token = payload.get("idToken")
        return {} if token is None else {"idTokenInfo": {"status": authorize(token["idToken"])}}
    raise OcppViolation(ErrorKind.NOT_SUPPORTED, f"{action} is not served by this central system")


# -- station setup: discovery and metering -----------------------------------------

CTRLR = "SmartChargingCtrlr"
RATE_UNIT_VARIABLE = "RateUnit"
MAX_STACK_VARIABLE = "ProfileStackLevel"


def discovery_request() -> tuple[str, Payload]:
    return "GetVariables", {
        "getVariableData": [
            {"component": {"name": CTRLR}, "variable": {"name": RATE_UNIT_VARIABLE}},
            {"component": {"name": CTRLR}, "variable": {"name": MAX_STACK_VARIABLE}},
        ]
    }


def parse_discovery(response: Payload) -> Discovered:
    values = {
        item["variable"]["name"]: item["attributeValue"]
        for item in response.get("getVariableResult", ())
        if item.get("attributeStatus") == "Accepted" and "attributeValue" in item
    }
    return discovered(values.get(RATE_UNIT_VARIABLE), values.get(MAX_STACK_VARIABLE))


def metering_settings(plan: MeteringPlan, measurands: tuple[str, ...]) -> list[Setting]:
    csv = ",".join(measurands)
    return [
        Setting("SampledDataCtrlr", "TxUpdatedInterval", str(plan.sample_interval_s)),
        Setting("SampledDataCtrlr", "TxUpdatedMeasurands", csv, measurands=True),
        Setting("AlignedDataCtrlr", "Interval", str(plan.aligned_interval_s)),
        Setting("AlignedDataCtrlr", "Measurands", csv, measurands=True),
    ]


def setting_requests(settings: list[Setting]) -> list[tuple[str, Payload]]:
    """One SetVariables for all."""
    data = [
        {"attributeValue": s.value, "component": {"name": s.component}, "variable": {"name": s.name}}
        for s in settings
    ]
    return [("SetVariables", {"setVariableData": data})]


def accepted_settings(settings: list[Setting], responses: list[Payload]) -> list[bool]:
    """Which of ``settings`` the station took, from the responses to ``setting_requests``."""
    status = {
        (r["component"]["name"], r["variable"]["name"]): r.get("attributeStatus")
        for r in (responses[0].get("setVariableResult", ()) if responses else ())
    }
    return [status.get((s.component, s.name)) in TAKEN for s in settings]


# -- charging profiles -------------------------------------------------------------

MAX_PURPOSE = "ChargingStationMaxProfile"


def set_charging_profile(parts: StationMax) -> Payload:
    """The SetChargingProfile request installing ``parts``: ChargingStationMaxProfile on EVSE 0."""
    schedule = {**parts.schedule, "id": parts.profile_id}
    profile: Payload = {
        "id": parts.profile_id,
        "stackLevel": parts.stack_level,
        "chargingProfilePurpose": MAX_PURPOSE,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [schedule],
    }
    if parts.valid_to is not None:
        profile["validTo"] = parts.valid_to
    return {"evseId": 0, "chargingProfile": profile}


def profile_of(set_profile: Payload) -> Payload:
    """The charging profile a SetChargingProfile request carries."""
    profile: Payload = set_profile["chargingProfile"]
    return profile


def profile_id(profile: Payload) -> int:
    return int(profile["id"])


def schedules_of(profile: Payload) -> list[Payload]:
    """The profile's charging schedules (2.0.1: a list)."""
    schedules: list[Payload] = profile["chargingSchedule"]
    return schedules


def cleared_profile(clear: Payload) -> tuple[Any, Any]:
    """(profile id, purpose) a ClearChargingProfile request names; None where it names none."""
    criteria = clear.get("chargingProfileCriteria") or {}
    return clear.get("chargingProfileId"), criteria.get("chargingProfilePurpose")


# -- what a station's calls say ----------------------------------------------------


def observe(action: str, payload: Payload, response: Payload) -> Observation | None:
    """Status, transaction or meter news in a station's answered call, if any."""
    if action == "StatusNotification":  # one key per (EVSE, connector)
        return ConnectorStatus(payload["evseId"] * 1000 + payload["connectorId"], payload["connectorStatus"])
    if action == "MeterValues":
        return MeterReading(payload["evseId"], payload["meterValue"])
    if action == "TransactionEvent":  # the station gives the id
        evse = payload.get("evse")
        return TransactionUpdate(
            payload["transactionInfo"]["transactionId"],
            payload["eventType"] != "Ended",
            None if evse is None else evse["id"],
            payload.get("meterValue", ()),
        )
    return None


# -- relaying to a CSMS ------------------------------------------------------------

# What must reach the CSMS even when it is away (replayed in order from the outbox).
DURABLE = frozenset({"TransactionEvent", "MeterValues", "StatusNotification"})
# The station numbers 2.0.1 transactions itself: no id ever needs mapping.
TX_REFERENCES: frozenset[str] = frozenset()
CSMS_TX_REFERENCES: frozenset[str] = frozenset()

# -- the gateway's own identity toward the CSMS -----------------------------------

# OCPP 2.0.1 Part 4 4.1.4: never an id twice for one identity, on any connection, retries included.
IDS_UNIQUE_ACROSS_CONNECTIONS = True
NOTIFIES_LIMIT = True  # NotifyChargingLimit / ClearedChargingLimit (K14)


def identity_boot(vendor: str, model: str) -> Payload:
    return {"reason": "PowerUp", "chargingStation": {"vendorName": vendor, "model": model}}


def limit_call(action: str, payload: Payload, vendor: str) -> tuple[str, Payload]:
    """A limit message goes as it is."""
    return action, payload
