"""codec.py and schemas.py: frames parsed and built, error codes per version, strict validation."""

from __future__ import annotations

import orjson
import pytest

from gateway.model import OcppVersion
from ocpp_side import codec, schemas
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, FrameError, OcppViolation


def test_parse_each_message_type() -> None:
    assert codec.parse_frame('[2,"a","Heartbeat",{}]') == Call("a", "Heartbeat", {})
    assert codec.parse_frame('[3,"a",{"x":1}]') == CallResult("a", {"x": 1})
    assert codec.parse_frame('[4,"a","NotSupported","no",{}]') == CallError("a", "NotSupported", "no", {})


@pytest.mark.parametrize(
    ("raw", "unique_id", "kind"),
    [
        ("{", "-1", ErrorKind.RPC_FRAMEWORK),
        ("[]", "-1", ErrorKind.RPC_FRAMEWORK),
        ('[2, 5, "Heartbeat", {}]', "-1", ErrorKind.RPC_FRAMEWORK),
        ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', "-1", ErrorKind.RPC_FRAMEWORK),
        ('[2, "a", 5, {}]', "a", ErrorKind.RPC_FRAMEWORK),
        ('[2, "a", "Heartbeat", "payload"]', "a", ErrorKind.FORMAT),
        ('[true, "a", "Heartbeat", {}]', "a", ErrorKind.MESSAGE_TYPE),
        ('[3, "a"]', "a", ErrorKind.RPC_FRAMEWORK),
        ('[4, "a", "Code", "text"]', "a", ErrorKind.RPC_FRAMEWORK),
    ],
)
def test_malformed_frames(raw: str, unique_id: str, kind: ErrorKind) -> None:
    frame = codec.parse_frame(raw)
    assert isinstance(frame, FrameError)
    assert (frame.unique_id, frame.kind) == (unique_id, kind)


def test_encoding_round_trip() -> None:
    payload = {"status": "Accepted", "limit": 21.4}
    assert orjson.loads(codec.encode_call("id1", "X", payload)) == [2, "id1", "X", payload]
    assert codec.encode_call_raw("id1", "X", orjson.dumps(payload)) == codec.encode_call("id1", "X", payload)
    assert orjson.loads(codec.encode_result("id1", payload)) == [3, "id1", payload]
    error = orjson.loads(codec.encode_error("id1", "GenericError", "x" * 400))
    assert error[:3] == [4, "id1", "GenericError"] and len(error[3]) == 255 and error[4] == {}


def test_error_codes_per_version() -> None:
    assert codec.error_code(OcppVersion.V16, ErrorKind.FORMAT) == "FormationViolation"
    assert codec.error_code(OcppVersion.V201, ErrorKind.FORMAT) == "FormatViolation"
    assert codec.error_code(OcppVersion.V16, ErrorKind.OCCURRENCE) == "OccurenceConstraintViolation"
    assert codec.error_code(OcppVersion.V201, ErrorKind.OCCURRENCE) == "OccurrenceConstraintViolation"
    for version in OcppVersion:
        assert all(codec.error_code(version, kind) for kind in ErrorKind)


def test_iso_utc_has_timezone() -> None:
    assert codec.iso_utc(0.0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("version", "action", "payload", "kind"),
    [
        (OcppVersion.V16, "Heartbeat", {"x": 1}, ErrorKind.FORMAT),
        (
            OcppVersion.V16,
            "StatusNotification",
            {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
            ErrorKind.TYPE,
        ),
        (
            OcppVersion.V16,
            "StatusNotification",
            {"connectorId": 1, "errorCode": "Nope", "status": "Available"},
            ErrorKind.PROPERTY,
        ),
        (OcppVersion.V16, "Authorize", {"idTag": "x" * 21}, ErrorKind.PROPERTY),
        (OcppVersion.V16, "Authorize", {}, ErrorKind.OCCURRENCE),
        (OcppVersion.V201, "Heartbeat", {"customData": {}}, ErrorKind.OCCURRENCE),
        (
            OcppVersion.V201,
            "StatusNotification",
            {"timestamp": "yesterday", "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
            ErrorKind.PROPERTY,
        ),
        (OcppVersion.V201, "NoSuchThing", {}, ErrorKind.NOT_IMPLEMENTED),
    ],
)
def test_validation_rejects(version: OcppVersion, action: str, payload: dict, kind: ErrorKind) -> None:  # type: ignore[type-arg]
    with pytest.raises(OcppViolation) as raised:
        schemas.validate(version, action, payload, request=True)
    assert raised.value.kind is kind


@pytest.mark.parametrize(
    ("version", "action", "payload"),
    [
        (
            OcppVersion.V16,
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
        ),
        (
            OcppVersion.V201,
            "StatusNotification",
            {
                "timestamp": "2026-01-01T00:00:00+01:00",
                "connectorStatus": "Available",
                "evseId": 1,
                "connectorId": 1,
            },
        ),
        (OcppVersion.V201, "Heartbeat", {"customData": {"vendorId": "v", "anything": [1, 2]}}),
    ],
)
def test_validation_accepts(version: OcppVersion, action: str, payload: dict) -> None:  # type: ignore[type-arg]
    schemas.validate(version, action, payload, request=True)


def test_one_decimal_limits_of_16_profiles() -> None:
    """1.6 limits are multipleOf 0.1: 21.4 passes (no float artefact), 21.45 does not."""

    def profile(limit: float) -> dict:  # type: ignore[type-arg]
        return {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 1,
                "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
                },
            },
        }

    schemas.validate(OcppVersion.V16, "SetChargingProfile", profile(21.4), request=True)
    with pytest.raises(OcppViolation):
        schemas.validate(OcppVersion.V16, "SetChargingProfile", profile(21.45), request=True)


def test_no_defaults_written_into_payloads() -> None:
    payload = {"getVariableData": [{"component": {"name": "C"}, "variable": {"name": "V"}}]}
    schemas.validate(OcppVersion.V201, "GetVariables", payload, request=True)
    assert "attributeType" not in payload["getVariableData"][0]
