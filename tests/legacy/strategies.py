"""Hypothesis strategies for OCPP 1.6 payloads, drawn from the official JSON schemas."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

# What a 1.6 charge point sends: its own calls, and its replies to the central system's.
STATION_CALLS = (
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
)
STATION_REPLIES = (
    "CancelReservation",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetLocalListVersion",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
)

_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_STAMPS = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)).map(
    lambda d: (
        d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
)


def from_schema(
    node: Mapping[str, Any] | None, root: Mapping[str, Any] | None = None
) -> st.SearchStrategy[Any]:
    """Valid values of a (draft-04, OCPP 1.6) schema node."""
    assert node is not None
    root = node if root is None else root
    ref = node.get("$ref")
    if isinstance(ref, str):
        node = root["definitions"][ref.removeprefix("#/definitions/")]
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        required = set(node.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, root) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, root) for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(node["items"], root), min_size=node.get("minItems", 0), max_size=3)
    if kind == "string":
        if node.get("format") == "date-time":
            return _STAMPS
        if node.get("format") == "uri":
            return st.just("https://example.com/s4")
        return _TEXT.map(lambda s: s[: node.get("maxLength", 12)])
    if kind == "integer":
        return st.integers(-(10**9), 10**9)
    if kind == "number":
        if "multipleOf" in node:  # 0.1: whole numbers are multiples for certain
            return st.integers(-(10**6), 10**6).map(float)
        return st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3))
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"schema node not covered: {node}")


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON a unit could send, biased toward what the dialect mends."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
        st.from_regex(r"[+-]?\d{1,5}(\.\d{0,3})?", fullmatch=True),
        st.from_regex(r"20\d\d-[01]\d-[0-3]\d[T ][0-2]\d:[0-5]\d(:[0-5]\d)?", fullmatch=True),
    )
    keys = st.one_of(
        st.sampled_from(
            [
                "connectorId",
                "timestamp",
                "meterValue",
                "sampledValue",
                "value",
                "idTag",
                "status",
                "meterStart",
                "transactionId",
                "errorCode",
            ]
        ),
        st.text(max_size=6),
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=12,
    )
