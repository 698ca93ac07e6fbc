"""answers.py and the version modules' answer tables: every standalone answer is schema-valid for its version."""

from __future__ import annotations

import pytest

from gateway.core.model import OcppVersion
from ocpp_side import schemas
from ocpp_side.answers import StandaloneAnswers, served
from ocpp_side.codec import ErrorKind, OcppViolation
from ocpp_side.versions import rules_for

V16, V201 = OcppVersion.V16, OcppVersion.V201
TS = "2026-01-01T00:00:00Z"

REQUESTS = [
    (V16, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}),
    (V16, "Heartbeat", {}),
    (V16, "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
    (V16, "Authorize", {"idTag": "TAG1"}),
    (V16, "StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": TS}),
    (V16, "StopTransaction", {"meterStop": 5, "timestamp": TS, "transactionId": 1, "idTag": "TAG1"}),
    (V16, "StopTransaction", {"meterStop": 5, "timestamp": TS, "transactionId": 1}),
    (
        V16,
        "MeterValues",
        {"connectorId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [{"value": "1"}]}]},
    ),
    (V16, "DataTransfer", {"vendorId": "acme"}),
    (V16, "FirmwareStatusNotification", {"status": "Idle"}),
    (V16, "DiagnosticsStatusNotification", {"status": "Idle"}),
    (V16, "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": TS}),
    (V16, "LogStatusNotification", {"status": "Idle"}),
    (V16, "SignedFirmwareStatusNotification", {"status": "Idle"}),
    (V16, "SignCertificate", {"csr": "x"}),
    (V201, "BootNotification", {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}),
    (V201, "Heartbeat", {}),
    (
        V201,
        "StatusNotification",
        {"timestamp": TS, "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
    ),
    (V201, "Authorize", {"idToken": {"idToken": "TAG1", "type": "ISO14443"}}),
    (
        V201,
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": TS,
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": "t1"},
            "idToken": {"idToken": "TAG1", "type": "ISO14443"},
        },
    ),
    (
        V201,
        "TransactionEvent",
        {
            "eventType": "Updated",
            "timestamp": TS,
            "triggerReason": "MeterValuePeriodic",
            "seqNo": 1,
            "transactionInfo": {"transactionId": "t1"},
        },
    ),
    (V201, "MeterValues", {"evseId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [{"value": 1.0}]}]}),
    (V201, "DataTransfer", {"vendorId": "acme"}),
    (V201, "NotifyReport", {"requestId": 1, "generatedAt": TS, "seqNo": 0}),
    (
        V201,
        "NotifyEvent",
        {
            "generatedAt": TS,
            "seqNo": 0,
            "eventData": [
                {
                    "eventId": 1,
                    "timestamp": TS,
                    "trigger": "Alerting",
                    "actualValue": "1",
                    "eventNotificationType": "HardWiredNotification",
                    "component": {"name": "C"},
                    "variable": {"name": "V"},
                }
            ],
        },
    ),
    (V201, "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": TS}),
    (V201, "FirmwareStatusNotification", {"status": "Idle"}),
    (V201, "LogStatusNotification", {"status": "Idle"}),
    (V201, "SignCertificate", {"csr": "x"}),
    (V201, "Get15118EVCertificate", {"iso15118SchemaVersion": "x", "action": "Install", "exiRequest": "x"}),
    (
        V201,
        "NotifyEVChargingNeeds",
        {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"}},
    ),
    (V201, "PublishFirmwareStatusNotification", {"status": "Idle"}),
    (V201, "NotifyMonitoringReport", {"requestId": 1, "seqNo": 0, "generatedAt": TS}),
    (V201, "NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "EMS"}}),
    (V201, "ClearedChargingLimit", {"chargingLimitSource": "EMS"}),
    (V201, "NotifyCustomerInformation", {"data": "x", "seqNo": 0, "generatedAt": TS, "requestId": 1}),
    (V201, "NotifyDisplayMessages", {"requestId": 1}),
    (
        V201,
        "ReportChargingProfiles",
        {
            "requestId": 1,
            "chargingLimitSource": "CSO",
            "evseId": 0,
            "chargingProfile": [
                {
                    "id": 1,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": [
                        {
                            "id": 1,
                            "chargingRateUnit": "W",
                            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1.0}],
                        }
                    ],
                }
            ],
        },
    ),
    (V201, "ReservationStatusUpdate", {"reservationId": 1, "reservationUpdateStatus": "Expired"}),
    (
        V201,
        "GetCertificateStatus",
        {
            "ocspRequestData": {
                "hashAlgorithm": "SHA256",
                "issuerNameHash": "a",
                "issuerKeyHash": "b",
                "serialNumber": "c",
                "responderURL": "http://x",
            }
        },
    ),
    (
        V201,
        "NotifyEVChargingSchedule",
        {
            "timeBase": TS,
            "evseId": 1,
            "chargingSchedule": {
                "id": 1,
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1.0}],
            },
        },
    ),
]


NOW = 1_790_000_000.0


class _Answers:
    """StandaloneAnswers at a fixed time, asked by version."""

    def __init__(self, tags: tuple[str, ...] | None) -> None:
        self._answers = StandaloneAnswers(300, tags, first_transaction_id=41)

    def answer(self, version: OcppVersion, action: str, payload: dict) -> dict:  # type: ignore[type-arg]
        return self._answers.answer(rules_for(version), action, payload, NOW)


def _answers(tags: tuple[str, ...] | None = None) -> _Answers:
    return _Answers(tags)


@pytest.mark.parametrize(("version", "action", "payload"), REQUESTS)
def test_answer_is_valid(version: OcppVersion, action: str, payload: dict) -> None:  # type: ignore[type-arg]
    schemas.validate(version, action, payload, request=True)
    schemas.validate(version, action, _answers().answer(version, action, payload), request=False)


def test_boot_and_heartbeat_carry_utc_time() -> None:
    boot = _answers().answer(V16, "BootNotification", {})
    assert boot == {"status": "Accepted", "currentTime": "2026-09-21T14:13:20.000Z", "interval": 300}
    assert _answers().answer(V201, "Heartbeat", {})["currentTime"].endswith("Z")


def test_local_list_authorisation() -> None:
    answers = _answers(("GOOD",))
    assert answers.answer(V16, "Authorize", {"idTag": "GOOD"}) == {"idTagInfo": {"status": "Accepted"}}
    assert answers.answer(V16, "Authorize", {"idTag": "BAD"}) == {"idTagInfo": {"status": "Invalid"}}
    token = {"idToken": {"idToken": "BAD", "type": "ISO14443"}}
    assert answers.answer(V201, "Authorize", token) == {"idTokenInfo": {"status": "Invalid"}}
    assert _answers().answer(V16, "Authorize", {"idTag": "ANY"}) == {"idTagInfo": {"status": "Accepted"}}


def test_transaction_ids_are_distinct() -> None:
    answers = _answers()
    start = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": TS}
    ids = {answers.answer(V16, "StartTransaction", start)["transactionId"] for _ in range(3)}
    assert ids == {41, 42, 43}


def test_every_served_action_is_covered() -> None:
    for version in OcppVersion:
        actions = served(rules_for(version))
        assert actions <= schemas.known_actions(version)
        assert {a for v, a, _ in REQUESTS if v is version} == actions


def test_central_system_actions_are_not_supported() -> None:
    with pytest.raises(OcppViolation) as raised:
        _answers().answer(V16, "Reset", {"type": "Hard"})
    assert raised.value.kind is ErrorKind.NOT_SUPPORTED
    with pytest.raises(OcppViolation):
        _answers().answer(V201, "SetChargingProfile", {})
