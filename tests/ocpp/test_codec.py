"""codec.py and schemas.py: frames parsed and built, error codes per version, strict validation."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.model import OcppVersion
from ocpp_side import codec, schemas, v16, v201
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, FrameError, OcppViolation
from ocpp_side.versions import rules_for


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
    assert v16.ERROR_CODES[ErrorKind.FORMAT] == "FormationViolation"
    assert v201.ERROR_CODES[ErrorKind.FORMAT] == "FormatViolation"
    assert v16.ERROR_CODES[ErrorKind.OCCURRENCE] == "OccurenceConstraintViolation"
    assert v201.ERROR_CODES[ErrorKind.OCCURRENCE] == "OccurrenceConstraintViolation"
    for version in OcppVersion:
        assert all(rules_for(version).ERROR_CODES[kind] for kind in ErrorKind)


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


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("raw", "unique_id"),
    [
        (_nested(1000), "-1"),  # RecursionError from repr() before: no answer at all
        (_nested(1024), "-1"),
        (_nested(2000), "-1"),  # beyond orjson's own limit
        ('[4, "a", "Code", ' + _nested(1000) + ", {}]", "a"),  # str() of the description recursed
        ('["' + "x" * 100_000 + '", ' + _nested(900) + "]", "-1"),
    ],
)
def test_deep_frames_are_answered_not_raised(raw: str, unique_id: str) -> None:
    frame = codec.parse_frame(raw)
    assert isinstance(frame, FrameError)
    assert frame.kind is ErrorKind.RPC_FRAMEWORK and frame.unique_id == unique_id
    assert len(frame.description) < 100
    assert v16.ERROR_CODES[frame.kind] == "FormationViolation"
    assert v201.ERROR_CODES[frame.kind] == "RpcFrameworkError"


def _data_transfer(nesting: int) -> str:
    """A CALL ``nesting`` levels deep in all: the frame, the payload, then arrays in ``data``."""
    return '[2, "d1", "DataTransfer", {"vendorId": "v", "data": ' + _nested(nesting - 2) + "}]"


def test_depth_limit_keeps_the_call_id() -> None:
    assert isinstance(codec.parse_frame(_data_transfer(codec.MAX_DEPTH)), Call)
    frame = codec.parse_frame(_data_transfer(codec.MAX_DEPTH + 1))
    assert isinstance(frame, FrameError)
    assert (frame.unique_id, frame.kind) == ("d1", ErrorKind.RPC_FRAMEWORK)


def test_many_brackets_but_shallow_is_fine() -> None:
    sampled = [{"value": str(i), "measurand": "Voltage", "phase": "L1"} for i in range(200)]
    raw = orjson.dumps([2, "m", "MeterValues", {"connectorId": 1, "meterValue": [{"sampledValue": sampled}]}])
    assert isinstance(codec.parse_frame(raw), Call)


def test_message_type_description_is_bounded() -> None:
    frame = codec.parse_frame('[{"' + "k" * 10_000 + '": ' + _nested(50) + '}, "a"]')
    assert isinstance(frame, FrameError) and frame.kind is ErrorKind.MESSAGE_TYPE
    assert frame.unique_id == "a" and len(frame.description) < 100


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _json,
        st.tuples(st.sampled_from([2, 3, 4, 5, "2"]), st.text(max_size=40), _json, _json, _json).map(list),
        st.integers(1, 1100).map(_nested),
    )
)
def test_any_json_is_a_frame_or_a_frame_error(value: object) -> None:
    raw = value if isinstance(value, str) and value.startswith("[[") else orjson.dumps(value)
    frame = codec.parse_frame(raw)
    assert isinstance(frame, (Call, CallResult, CallError, FrameError))
    if isinstance(frame, FrameError):
        assert len(frame.description) <= 255 and len(frame.unique_id) <= codec.MAX_ID_LEN
