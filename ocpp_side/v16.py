"""OCPP 1.6J: every rule in which this version differs from the others, in one place (pure).

Each version module exposes the same names, checked by ``versions.VersionRules``; a
station connection picks its module once, from the negotiated subprotocol. A new OCPP
version is one new module like this one, listed in ``versions.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.core.model import OcppVersion
from ocpp_side.codec import ErrorKind, OcppViolation
from ocpp_side.observations import ConnectorStatus, MeterReading, Observation, TransactionUpdate
from ocpp_side.profiles import StationMax
from ocpp_side.station_setup import TAKEN, Discovered, MeteringPlan, Setting, discovered

Payload = dict[str, Any]

VERSION = OcppVersion.V16

# -- schemas and errors ------------------------------------------------------------

SCHEMA_DIR = "v16"  # in the ocpp package: Action.json, ActionResponse.json


def schema_file(action: str, request: bool) -> str:
    return f"{action}.json" if request else f"{action}Response.json"


ERROR_CODES: dict[ErrorKind, str] = {
    ErrorKind.FORMAT: "FormationViolation",  # the 1.6 spelling
    ErrorKind.PROTOCOL: "ProtocolError",
    ErrorKind.TYPE: "TypeConstraintViolation",
    ErrorKind.PROPERTY: "PropertyConstraintViolation",
    ErrorKind.OCCURRENCE: "OccurenceConstraintViolation",  # sic, as in OCPP-J 1.6
    ErrorKind.NOT_IMPLEMENTED: "NotImplemented",
    ErrorKind.NOT_SUPPORTED: "NotSupported",
    ErrorKind.INTERNAL: "InternalError",
    ErrorKind.GENERIC: "GenericError",
    ErrorKind.RPC_FRAMEWORK: "FormationViolation",  # 1.6 has no RpcFrameworkError
    ErrorKind.MESSAGE_TYPE: "ProtocolError",  # nor MessageTypeNotSupported
}

# -- standalone answers (answers.py answers Heartbeat and BootNotification alike) --

# Notifications a central system acknowledges with an empty payload.
EMPTY_ANSWERS = frozenset(
    {
        "StatusNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "SignedFirmwareStatusNotification",
        "LogStatusNotification",
        "SecurityEventNotification",
        "MeterValues",
    }
)

# Requests a standalone controller cannot serve: a proper negative answer.
FIXED_ANSWERS: dict[str, Payload] = {
    "DataTransfer": {"status": "UnknownVendorId"},
    "SignCertificate": {"status": "Rejected"},  # no certificate authority here
}

COMPUTED_ANSWERS = frozenset({"Authorize", "StartTransaction", "StopTransaction"})


def answer(
    action: str, payload: Payload, authorize: Callable[[str], str], new_transaction_id: Callable[[], int]
) -> Payload:
    """The answer to one of ``COMPUTED_ANSWERS``; ``authorize`` judges an id tag."""
    if action == "Authorize":
        return {"idTagInfo": {"status": authorize(payload["idTag"])}}
    if action == "StartTransaction":
        # The id is ours to give; 1.6 wants an integer (32-bit signed on most stations).
        transaction_id = new_transaction_id() & 0x7FFFFFFF
        return {"transactionId": transaction_id, "idTagInfo": {"status": authorize(payload["idTag"])}}
    if action == "StopTransaction":
        id_tag = payload.get("idTag")
        return {} if id_tag is None else {"idTagInfo": {"status": authorize(id_tag)}}
    raise OcppViolation(ErrorKind.NOT_SUPPORTED, f"{action} is not served by this central system")


# -- station setup: discovery and metering -----------------------------------------

RATE_UNIT_KEY = "ChargingScheduleAllowedChargingRateUnit"
MAX_STACK_KEY = "ChargeProfileMaxStackLevel"


def discovery_request() -> tuple[str, Payload]:
    return "GetConfiguration", {"key": [RATE_UNIT_KEY, MAX_STACK_KEY]}


def parse_discovery(response: Payload) -> Discovered:
    values = {item["key"]: item["value"] for item in response.get("configurationKey", ()) if "value" in item}
    return discovered(values.get(RATE_UNIT_KEY), values.get(MAX_STACK_KEY))


def metering_settings(plan: MeteringPlan, measurands: tuple[str, ...]) -> list[Setting]:
    csv = ",".join(measurands)
    return [
        Setting(None, "MeterValueSampleInterval", str(plan.sample_interval_s)),
        Setting(None, "MeterValuesSampledData", csv, measurands=True),
        Setting(None, "ClockAlignedDataInterval", str(plan.aligned_interval_s)),
        Setting(None, "MeterValuesAlignedData", csv, measurands=True),
    ]


def setting_requests(settings: list[Setting]) -> list[tuple[str, Payload]]:
    """One ChangeConfiguration per key."""
    return [("ChangeConfiguration", {"key": s.name, "value": s.value}) for s in settings]


def accepted_settings(settings: list[Setting], responses: list[Payload]) -> list[bool]:
    """Which of ``settings`` the station took, from the responses to ``setting_requests``."""
    return [r.get("status") in TAKEN for r in responses]


# -- charging profiles -------------------------------------------------------------

MAX_PURPOSE = "ChargePointMaxProfile"


def set_charging_profile(parts: StationMax) -> Payload:
    """The SetChargingProfile request installing ``parts``: ChargePointMaxProfile on connector 0."""
    profile: Payload = {
        "chargingProfileId": parts.profile_id,
        "stackLevel": parts.stack_level,
        "chargingProfilePurpose": MAX_PURPOSE,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": parts.schedule,
    }
    if parts.valid_to is not None:
        profile["validTo"] = parts.valid_to
    return {"connectorId": 0, "csChargingProfiles": profile}


def profile_of(set_profile: Payload) -> Payload:
    """The charging profile a SetChargingProfile request carries."""
    profile: Payload = set_profile["csChargingProfiles"]
    return profile


def profile_id(profile: Payload) -> int:
    return int(profile["chargingProfileId"])


def schedules_of(profile: Payload) -> list[Payload]:
    """The profile's charging schedules (1.6: exactly one)."""
    return [profile["chargingSchedule"]]


def cleared_profile(clear: Payload) -> tuple[Any, Any]:
    """(profile id, purpose) a ClearChargingProfile request names; None where it names none."""
    return clear.get("id"), clear.get("chargingProfilePurpose")


# -- what a station's calls say ----------------------------------------------------


def observe(action: str, payload: Payload, response: Payload) -> Observation | None:
    """Status, transaction or meter news in a station's answered call, if any."""
    if action == "StatusNotification":
        return ConnectorStatus(payload["connectorId"], payload["status"])
    if action == "MeterValues":
        return MeterReading(payload["connectorId"], payload["meterValue"])
    if action == "StartTransaction":  # the central system gives the id
        return TransactionUpdate(response["transactionId"], True, payload["connectorId"], None)
    if action == "StopTransaction":
        return TransactionUpdate(payload["transactionId"], False, None, None)
    return None


# -- relaying to a CSMS ------------------------------------------------------------

# What must reach the CSMS even when it is away (replayed in order from the outbox).
DURABLE = frozenset({"StartTransaction", "StopTransaction", "MeterValues", "StatusNotification"})
# The central system numbers 1.6 transactions: ids the gateway gave during a CSMS outage
# are mapped to the CSMS's in these station calls, and back in these CSMS calls.
TX_REFERENCES = frozenset({"MeterValues", "StopTransaction"})
CSMS_TX_REFERENCES = frozenset({"RemoteStopTransaction"})

# -- the gateway's own identity toward the CSMS -----------------------------------

# OCPP-J 1.6: a message id is unique on its connection; a stored frame goes again as it was.
IDS_UNIQUE_ACROSS_CONNECTIONS = False
NOTIFIES_LIMIT = False  # no NotifyChargingLimit in 1.6: only in a DataTransfer, if configured


def identity_boot(vendor: str, model: str) -> Payload:
    return {"chargePointVendor": vendor, "chargePointModel": model}


def limit_call(action: str, payload: Payload, vendor: str) -> tuple[str, Payload]:
    """A 2.0.1 limit message as 1.6 can carry it: a vendor DataTransfer."""
    return "DataTransfer", {"vendorId": vendor, "messageId": action, "data": orjson.dumps(payload).decode()}
