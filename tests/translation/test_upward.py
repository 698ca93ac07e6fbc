"""translation/upward: a 1.6 station's calls as 2.0.1 calls, and the 1.6 answers (pure).

Every 2.0.1 call is checked against the strict 2.0.1 request schema (``ocpp_side.schemas``,
formats included) and by the ``ocpp`` library itself (its jsonschema validation and its
dataclasses); every 1.6 answer likewise against the 1.6 response schema.
"""

from __future__ import annotations

import ast
import copy
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ocpp
import ocpp.v16.call_result
import ocpp.v201.call
import ocpp.v201.enums as e201
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ocpp.charge_point import camel_to_snake_case
from ocpp.messages import Call as LibCall
from ocpp.messages import CallResult as LibCallResult
from ocpp.messages import _validate_payload

from gateway.core.model import OcppVersion
from ocpp_side.codec import OcppViolation
from ocpp_side.schemas import validate
from ocpp_side.translation import up_meter, up_status, up_tx, upward
from ocpp_side.translation.api import Out, Refused, Translated, TranslationState
from ocpp_side.translation.up_common import CLOSED, OFFLINE_INTERVAL_S, PROBLEMS
from tests.fuzz import ocpp_cases

Payload = dict[str, Any]
NOW = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
T0 = "2026-11-30T10:00:00Z"
T1 = "2026-11-30T10:15:00Z"
T2 = "2026-11-30T11:00:00Z"
STATION = "CS-0001"
V16_SCHEMAS = Path(ocpp.__file__).parent / "v16" / "schemas"


def check_call(call: Out) -> None:
    """A valid 2.0.1 request, for our validator and for the ocpp library."""
    validate(OcppVersion.V201, call.action, call.payload, request=True)
    _validate_payload(LibCall("1", call.action, copy.deepcopy(call.payload)), "2.0.1")
    getattr(ocpp.v201.call, call.action)(**camel_to_snake_case(call.payload))
    assert json.loads(json.dumps(call.payload, allow_nan=False)) == call.payload  # plain JSON, no NaN or inf


def check_answer(action: str, answer: Payload) -> None:
    """A valid 1.6 CALLRESULT payload, for our validator and for the ocpp library."""
    validate(OcppVersion.V16, action, answer, request=False)
    _validate_payload(LibCallResult("1", copy.deepcopy(answer), action), "1.6")
    getattr(ocpp.v16.call_result, action)(**camel_to_snake_case(answer))


def run(
    state: TranslationState,
    action: str,
    payload: Payload,
    answers: Sequence[Payload | None] | None = None,
    now: datetime = NOW,
    station: str = STATION,
) -> tuple[list[Out], Payload]:
    """Translate, check every call, answer (offline unless ``answers``), check the answer."""
    validate(OcppVersion.V16, action, payload, request=True)  # the tests feed valid 1.6 only
    result = upward.translate(state, station, action, payload, now)
    assert isinstance(result, Translated), result
    for call in result.calls:
        check_call(call)
    answer = result.answer([None] * len(result.calls) if answers is None else answers)
    check_answer(action, answer)
    return list(result.calls), answer


def only(calls: list[Out], action: str | None = None) -> Payload:
    assert len(calls) == 1, calls
    if action is not None:
        assert calls[0].action == action
    return calls[0].payload


def schema_enum(file: str, *path: str) -> set[str]:
    node: Any = json.loads((V16_SCHEMAS / file).read_text(encoding="utf-8-sig"))
    for key in path:
        node = node[key]
    return set(node["enum"])


def values(enum: Any) -> set[str]:
    return {member.value for member in enum}


def started(
    state: TranslationState, connector: int = 1, id_tag: str = "TAG-1", **extra: Any
) -> tuple[int, str]:
    """Start a transaction; (1.6 id, 2.0.1 id)."""
    payload = {"connectorId": connector, "idTag": id_tag, "meterStart": 1000, "timestamp": T0, **extra}
    calls, answer = run(state, "StartTransaction", payload)
    return answer["transactionId"], only(calls)["transactionInfo"]["transactionId"]


def status(connector: int, status: str, error: str = "NoError", **extra: Any) -> Payload:
    return {"connectorId": connector, "errorCode": error, "status": status, **extra}


# -- the tables cover the specs exactly -----------------------------------------------


def test_every_16_status_and_stop_reason_is_mapped_onto_201_values() -> None:
    assert set(up_status.CONNECTOR_STATUS) == schema_enum("StatusNotification.json", "properties", "status")
    assert set(up_status.CONNECTOR_STATUS.values()) <= values(e201.ConnectorStatusEnumType)
    reasons = schema_enum("StopTransaction.json", "properties", "reason")
    assert set(up_tx.STOP_REASONS) == reasons | {"Local"}
    assert {s for s, _ in up_tx.STOP_REASONS.values()} <= values(e201.ReasonEnumType)
    assert {t for _, t in up_tx.STOP_REASONS.values()} <= values(e201.TriggerReasonEnumType)
    assert set(up_tx.CHARGING_STATES.values()) <= values(e201.ChargingStateEnumType)
    assert set(upward.LOG_STATUS) == schema_enum("DiagnosticsStatusNotification.json", "properties", "status")
    assert set(upward.LOG_STATUS.values()) <= values(e201.UploadLogStatusEnumType)
    assert schema_enum("FirmwareStatusNotification.json", "properties", "status") <= values(
        e201.FirmwareStatusEnumType
    )


def test_the_upward_modules_do_no_io() -> None:
    allowed = {
        "__future__",
        "collections",
        "dataclasses",
        "datetime",
        "typing",
        "hashlib",
        "json",
        "math",
        "re",
    }
    root = Path(upward.__file__).parent
    for path in [root / "upward.py", *root.glob("up_*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module.split(".")[0]} - {"ocpp_side"}
                if node.module.startswith("ocpp_side"):
                    assert node.module.startswith("ocpp_side.translation"), (path, node.module)
            else:
                continue
            assert names <= allowed, (path, names)


def test_an_action_no_charge_point_sends_is_refused() -> None:
    result = upward.translate(TranslationState(), STATION, "RemoteStartTransaction", {"idTag": "A"}, NOW)
    assert isinstance(result, Refused)
    assert result.error_code == "NotSupported"
    assert "RemoteStartTransaction" in result.description


# -- BootNotification, Heartbeat ---------------------------------------------------------


def test_boot_notification_becomes_a_201_boot_with_the_station_described() -> None:
    boot = {
        "chargePointVendor": "Voltex",
        "chargePointModel": "S4-ULTRA",
        "chargePointSerialNumber": "CP-SERIAL",
        "chargeBoxSerialNumber": "BOX-SERIAL",
        "firmwareVersion": "2016.3",
        "iccid": "8931440400012345678",
        "imsi": "262011234567890",
        "meterType": "EM340",
        "meterSerialNumber": "M-77",
    }
    calls, _ = run(TranslationState(), "BootNotification", boot)
    assert only(calls, "BootNotification") == {
        "reason": "PowerUp",
        "chargingStation": {
            "model": "S4-ULTRA",
            "vendorName": "Voltex",
            "serialNumber": "BOX-SERIAL",
            "firmwareVersion": "2016.3",
            "modem": {"iccid": "8931440400012345678", "imsi": "262011234567890"},
        },
        "customData": {"vendorId": "ocpp809", "meterType": "EM340", "meterSerialNumber": "M-77"},
    }


def test_boot_serial_falls_back_to_the_charge_point_serial_and_modem_is_only_sent_when_known() -> None:
    boot = {"chargePointVendor": "V", "chargePointModel": "M", "chargePointSerialNumber": "CP-1"}
    calls, _ = run(TranslationState(), "BootNotification", boot)
    assert only(calls)["chargingStation"] == {"model": "M", "vendorName": "V", "serialNumber": "CP-1"}
    calls, _ = run(
        TranslationState(), "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
    )
    assert only(calls) == {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}


@pytest.mark.parametrize("registration", ["Accepted", "Pending", "Rejected"])
def test_boot_answer_passes_the_csms_registration_through(registration: str) -> None:
    csms = {"status": registration, "currentTime": T1, "interval": 17, "statusInfo": {"reasonCode": "x"}}
    _, answer = run(
        TranslationState(), "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}, [csms]
    )
    assert answer == {"status": registration, "currentTime": T1, "interval": 17}


def test_boot_offline_is_accepted_by_the_gateway_at_now() -> None:
    _, answer = run(
        TranslationState(), "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
    )
    assert answer == {
        "status": "Accepted",
        "currentTime": "2026-11-30T10:00:00.000Z",
        "interval": OFFLINE_INTERVAL_S,
    }


def test_heartbeat_is_relayed_and_answered_with_the_csms_time_or_now() -> None:
    calls, answer = run(TranslationState(), "Heartbeat", {}, [{"currentTime": T1}])
    assert only(calls, "Heartbeat") == {}
    assert answer == {"currentTime": T1}
    _, answer = run(TranslationState(), "Heartbeat", {})
    assert answer == {"currentTime": "2026-11-30T10:00:00.000Z"}


# -- StatusNotification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status16", "status201"),
    [
        ("Available", "Available"),
        ("Preparing", "Occupied"),
        ("Charging", "Occupied"),
        ("SuspendedEV", "Occupied"),
        ("SuspendedEVSE", "Occupied"),
        ("Finishing", "Occupied"),
        ("Reserved", "Reserved"),
        ("Unavailable", "Unavailable"),
        ("Faulted", "Faulted"),
    ],
)
def test_connector_status_maps_onto_evse_n_connector_1(status16: str, status201: str) -> None:
    state = TranslationState()
    calls, answer = run(state, "StatusNotification", status(2, status16, timestamp=T1))
    assert only(calls, "StatusNotification") == {
        "timestamp": T1,
        "connectorStatus": status201,
        "evseId": 2,
        "connectorId": 1,
    }
    assert answer == {}
    assert state.connector_status == {2: status16}


def test_status_without_timestamp_is_stamped_now() -> None:
    calls, _ = run(TranslationState(), "StatusNotification", status(1, "Available"))
    assert only(calls)["timestamp"] == "2026-11-30T10:00:00.000Z"


def test_connector_0_is_the_charging_stations_availability_state_in_a_notify_event() -> None:
    calls, answer = run(TranslationState(), "StatusNotification", status(0, "Unavailable", timestamp=T1))
    event = only(calls, "NotifyEvent")
    assert event["seqNo"] == 0 and event["generatedAt"] == "2026-11-30T10:00:00.000Z"
    (data,) = event["eventData"]
    assert data["component"] == {"name": "ChargingStation"}
    assert data["variable"] == {"name": "AvailabilityState"}
    assert (data["actualValue"], data["timestamp"], data["trigger"]) == ("Unavailable", T1, "Delta")
    assert data["eventNotificationType"] == "HardWiredNotification"
    assert answer == {}


def test_an_error_code_is_a_problem_event_until_no_error_clears_it() -> None:
    state = TranslationState()
    faulted = status(
        1, "Faulted", "GroundFailure", info="RCD tripped", vendorId="Voltex", vendorErrorCode="E42"
    )
    calls, _ = run(state, "StatusNotification", faulted)
    assert [c.action for c in calls] == ["StatusNotification", "NotifyEvent"]
    (problem,) = calls[1].payload["eventData"]
    assert problem["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
    assert problem["variable"] == {"name": "Problem"}
    assert (problem["actualValue"], problem["techCode"]) == ("true", "GroundFailure")
    assert problem["techInfo"] == "RCD tripped; vendorId=Voltex; vendorErrorCode=E42"
    assert "cleared" not in problem
    assert state.extra[PROBLEMS] == {"1": "GroundFailure"}

    calls, _ = run(state, "StatusNotification", status(1, "Available"))
    assert [c.action for c in calls] == ["StatusNotification", "NotifyEvent"]
    (cleared,) = calls[1].payload["eventData"]
    assert (cleared["actualValue"], cleared["cleared"], cleared["techCode"]) == (
        "false",
        True,
        "GroundFailure",
    )
    assert cleared["eventId"] > problem["eventId"]

    calls, _ = run(state, "StatusNotification", status(1, "Available"))
    assert [c.action for c in calls] == ["StatusNotification"]  # nothing left to clear


def test_a_station_wide_error_is_a_problem_of_the_charging_station() -> None:
    calls, _ = run(TranslationState(), "StatusNotification", status(0, "Faulted", "PowerMeterFailure"))
    assert [c.action for c in calls] == ["NotifyEvent", "NotifyEvent"]
    (problem,) = calls[1].payload["eventData"]
    assert problem["component"] == {"name": "ChargingStation"} and problem["techCode"] == "PowerMeterFailure"
    assert "techInfo" not in problem


@pytest.mark.parametrize(
    ("status16", "charging_state"),
    [
        ("Charging", "Charging"),
        ("SuspendedEV", "SuspendedEV"),
        ("SuspendedEVSE", "SuspendedEVSE"),
        ("Preparing", "EVConnected"),
        ("Finishing", "EVConnected"),
        ("Available", "Idle"),
    ],
)
def test_a_status_change_during_a_transaction_is_a_charging_state_update(
    status16: str, charging_state: str
) -> None:
    state = TranslationState()
    _, tx201 = started(state, connector=1)
    calls, _ = run(state, "StatusNotification", status(1, status16, timestamp=T1))
    assert [c.action for c in calls] == ["StatusNotification", "TransactionEvent"]
    assert calls[1].payload == {
        "eventType": "Updated",
        "timestamp": T1,
        "triggerReason": "ChargingStateChanged",
        "seqNo": 1,
        "transactionInfo": {"transactionId": tx201, "chargingState": charging_state},
    }


def test_only_a_change_of_charging_state_on_the_transactions_connector_is_sent() -> None:
    state = TranslationState()
    _, tx201 = started(state, connector=1)
    updates = []
    for connector, status16 in [
        (1, "Charging"),
        (1, "Charging"),  # repeated: no change
        (2, "SuspendedEV"),  # another connector, no transaction there
        (1, "SuspendedEV"),
        (1, "Faulted"),  # says nothing about the charging state
        (1, "Charging"),
    ]:
        calls, _ = run(state, "StatusNotification", status(connector, status16))
        updates += [c.payload for c in calls if c.action == "TransactionEvent"]
    assert [u["transactionInfo"]["chargingState"] for u in updates] == ["Charging", "SuspendedEV", "Charging"]
    assert [u["seqNo"] for u in updates] == [1, 2, 3]
    assert {u["transactionInfo"]["transactionId"] for u in updates} == {tx201}


# -- Authorize -------------------------------------------------------------------------


def test_authorize_sends_the_id_tag_as_an_iso14443_token() -> None:
    calls, _ = run(TranslationState(), "Authorize", {"idTag": "04A2B3C4D5"})
    assert only(calls, "Authorize") == {"idToken": {"idToken": "04A2B3C4D5", "type": "ISO14443"}}


@pytest.mark.parametrize(
    ("status201", "status16"),
    [
        ("Accepted", "Accepted"),
        ("Blocked", "Blocked"),
        ("ConcurrentTx", "ConcurrentTx"),
        ("Expired", "Expired"),
        ("Invalid", "Invalid"),
        ("NoCredit", "Invalid"),
        ("NotAllowedTypeEVSE", "Invalid"),
        ("NotAtThisLocation", "Invalid"),
        ("NotAtThisTime", "Invalid"),
        ("Unknown", "Invalid"),
    ],
)
def test_authorize_answer_maps_the_status(status201: str, status16: str) -> None:
    _, answer = run(TranslationState(), "Authorize", {"idTag": "T"}, [{"idTokenInfo": {"status": status201}}])
    assert answer == {"idTagInfo": {"status": status16}}


def test_authorize_answer_keeps_expiry_and_group() -> None:
    info = {
        "status": "Accepted",
        "cacheExpiryDateTime": T2,
        "groupIdToken": {"idToken": "FLEET-7", "type": "Central"},
        "chargingPriority": 3,
        "language1": "de",
    }
    _, answer = run(TranslationState(), "Authorize", {"idTag": "T"}, [{"idTokenInfo": info}])
    assert answer == {"idTagInfo": {"status": "Accepted", "expiryDate": T2, "parentIdTag": "FLEET-7"}}
    # A group token longer than a 1.6 idTag is left out rather than cut into another tag.
    info["groupIdToken"] = {"idToken": "G" * 21, "type": "Central"}
    _, answer = run(TranslationState(), "Authorize", {"idTag": "T"}, [{"idTokenInfo": info}])
    assert answer == {"idTagInfo": {"status": "Accepted", "expiryDate": T2}}


def test_authorize_offline_is_accepted() -> None:
    _, answer = run(TranslationState(), "Authorize", {"idTag": "T"})
    assert answer == {"idTagInfo": {"status": "Accepted"}}


# -- StartTransaction ------------------------------------------------------------------


def test_start_transaction_becomes_transaction_event_started() -> None:
    state = TranslationState(next_tx16=41)
    start = {"connectorId": 2, "idTag": "TAG-9", "meterStart": 123456, "timestamp": T0, "reservationId": 7}
    calls, answer = run(state, "StartTransaction", start, [{"idTokenInfo": {"status": "Accepted"}}])
    event = only(calls, "TransactionEvent")
    tx201 = event["transactionInfo"]["transactionId"]
    assert event == {
        "eventType": "Started",
        "timestamp": T0,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": tx201},
        "evse": {"id": 2, "connectorId": 1},
        "idToken": {"idToken": "TAG-9", "type": "ISO14443"},
        "meterValue": [
            {
                "timestamp": T0,
                "sampledValue": [
                    {
                        "value": 123456,
                        "context": "Transaction.Begin",
                        "measurand": "Energy.Active.Import.Register",
                        "unitOfMeasure": {"unit": "Wh"},
                    }
                ],
            }
        ],
        "reservationId": 7,
    }
    assert answer == {"transactionId": 41, "idTagInfo": {"status": "Accepted"}}
    assert state.next_tx16 == 42
    assert state.tx201_of == {41: tx201} and state.tx_connector == {41: 2} and state.seq_no == {tx201: 0}


def test_201_transaction_ids_are_short_and_unique_per_station_and_time() -> None:
    ids = set()
    for station in ("CS-1", "CS-2"):
        for now in (NOW, NOW + timedelta(seconds=1)):
            state = TranslationState()
            for _ in range(3):
                payload = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": T0}
                calls, _ = run(state, "StartTransaction", payload, now=now, station=station)
                ids.add(only(calls)["transactionInfo"]["transactionId"])
    assert len(ids) == 12
    assert max(len(i) for i in ids) <= 36
    # The longest possible one still fits: a 10-digit 1.6 id, and an unseen station id.
    assert len(up_tx.new_tx201("x" * 500, 2**31 - 1, NOW)) <= 36
    assert len(up_tx.new_tx201("x", -(2**63), NOW, unseen=True)) <= 36


def test_the_16_transaction_id_wraps_and_skips_open_ones() -> None:
    state = TranslationState(next_tx16=up_tx.TX16_MAX)
    assert started(state)[0] == up_tx.TX16_MAX
    assert started(state)[0] == 1
    state = TranslationState(next_tx16=5)
    state.tx201_of[5] = "open-5"
    assert started(state)[0] == 6


def test_a_remote_start_is_started_with_its_remote_start_id() -> None:
    state = TranslationState(remote_start={"TAG-R": 9001, "TAG-OTHER": 5})
    calls, _ = run(
        state, "StartTransaction", {"connectorId": 1, "idTag": "TAG-R", "meterStart": 0, "timestamp": T0}
    )
    event = only(calls)
    assert event["triggerReason"] == "RemoteStart"
    assert event["transactionInfo"]["remoteStartId"] == 9001
    assert state.remote_start == {"TAG-OTHER": 5}  # used once


def test_start_carries_the_charging_state_its_connector_already_reported() -> None:
    state = TranslationState()
    run(state, "StatusNotification", status(1, "SuspendedEV"))
    calls, _ = run(
        state, "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": T0}
    )
    assert only(calls)["transactionInfo"]["chargingState"] == "SuspendedEV"
    calls, _ = run(state, "StatusNotification", status(1, "SuspendedEV"))
    assert [c.action for c in calls] == ["StatusNotification"]  # the CSMS knows already


@pytest.mark.parametrize(
    ("token_info", "expected"),
    [
        (None, {"status": "Accepted"}),
        ({"status": "Blocked"}, {"status": "Blocked"}),
        ({"status": "NoCredit", "cacheExpiryDateTime": T2}, {"status": "Invalid", "expiryDate": T2}),
    ],
)
def test_start_answer_takes_the_id_tag_info_from_the_csms(
    token_info: Payload | None, expected: Payload
) -> None:
    csms = {} if token_info is None else {"idTokenInfo": token_info}
    payload = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": T0}
    _, answer = run(TranslationState(), "StartTransaction", payload, [csms])
    assert answer == {"transactionId": 1, "idTagInfo": expected}


def test_start_offline_is_accepted_with_the_gateways_transaction_id() -> None:
    state = TranslationState(next_tx16=7)
    _, answer = run(
        state, "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": T0}
    )
    assert answer == {"transactionId": 7, "idTagInfo": {"status": "Accepted"}}


# -- MeterValues -----------------------------------------------------------------------


def sampled(value: str, **fields: str) -> Payload:
    return {"value": value, **fields}


def test_meter_values_of_an_open_transaction_are_an_update_with_every_field_kept() -> None:
    state = TranslationState()
    tx16, tx201 = started(state, connector=1)
    meter = {
        "connectorId": 1,
        "transactionId": tx16,
        "meterValue": [
            {
                "timestamp": T1,
                "sampledValue": [
                    sampled(
                        "1234.5",
                        context="Sample.Periodic",
                        measurand="Energy.Active.Import.Register",
                        unit="Wh",
                    ),
                    sampled("16", measurand="Current.Import", phase="L1", location="Outlet", unit="A"),
                    sampled("230.1", measurand="Voltage", phase="L1-N", unit="V"),
                    sampled("3.68", measurand="Power.Active.Import", unit="kW", location="Inlet"),
                    sampled("50", measurand="Frequency", unit="Hertz"),
                    sampled("81", measurand="SoC", unit="Percent", location="EV"),
                    sampled("7"),
                ],
            }
        ],
    }
    calls, answer = run(state, "MeterValues", meter)
    event = only(calls, "TransactionEvent")
    assert answer == {}
    assert (event["eventType"], event["triggerReason"], event["seqNo"]) == (
        "Updated",
        "MeterValuePeriodic",
        1,
    )
    assert (event["timestamp"], event["transactionInfo"]) == (T1, {"transactionId": tx201})
    assert event["meterValue"] == [
        {
            "timestamp": T1,
            "sampledValue": [
                {
                    "value": 1234.5,
                    "context": "Sample.Periodic",
                    "measurand": "Energy.Active.Import.Register",
                    "unitOfMeasure": {"unit": "Wh"},
                },
                {
                    "value": 16,
                    "measurand": "Current.Import",
                    "phase": "L1",
                    "location": "Outlet",
                    "unitOfMeasure": {"unit": "A"},
                },
                {"value": 230.1, "measurand": "Voltage", "phase": "L1-N", "unitOfMeasure": {"unit": "V"}},
                {
                    "value": 3.68,
                    "measurand": "Power.Active.Import",
                    "location": "Inlet",
                    "unitOfMeasure": {"unit": "kW"},
                },
                {"value": 50, "measurand": "Frequency", "unitOfMeasure": {"unit": "Hz"}},
                {"value": 81, "measurand": "SoC", "location": "EV", "unitOfMeasure": {"unit": "Percent"}},
                {"value": 7},
            ],
        }
    ]
    assert "customData" not in event


def test_meter_values_without_transaction_id_go_to_the_connectors_open_transaction() -> None:
    state = TranslationState()
    _, tx_a = started(state, connector=1)
    _, tx_b = started(state, connector=2)
    for connector, tx201 in ((2, tx_b), (1, tx_a), (2, tx_b)):
        meter = {"connectorId": connector, "meterValue": [{"timestamp": T1, "sampledValue": [sampled("5")]}]}
        calls, _ = run(state, "MeterValues", meter)
        assert only(calls, "TransactionEvent")["transactionInfo"]["transactionId"] == tx201
    assert state.seq_no == {tx_a: 1, tx_b: 2}


def test_meter_values_outside_a_transaction_are_201_meter_values_of_the_evse() -> None:
    state = TranslationState()
    for connector in (0, 3):
        meter = {
            "connectorId": connector,
            "meterValue": [
                {"timestamp": T1, "sampledValue": [sampled("230", measurand="Voltage", unit="V")]}
            ],
        }
        calls, _ = run(state, "MeterValues", meter)
        assert only(calls, "MeterValues") == {
            "evseId": connector,
            "meterValue": [
                {
                    "timestamp": T1,
                    "sampledValue": [{"value": 230, "measurand": "Voltage", "unitOfMeasure": {"unit": "V"}}],
                }
            ],
        }


@pytest.mark.parametrize(
    ("contexts", "trigger"),
    [
        (["Sample.Clock", "Sample.Clock"], "MeterValueClock"),
        (["Sample.Clock", None], "MeterValuePeriodic"),  # None: the 1.6 default, Sample.Periodic
        (["Trigger", "Sample.Clock"], "Trigger"),
        (["Interruption.Begin"], "MeterValuePeriodic"),
    ],
)
def test_the_update_trigger_follows_the_reading_context(contexts: list[str | None], trigger: str) -> None:
    state = TranslationState()
    tx16, _ = started(state)
    samples = [sampled("1") if c is None else sampled("1", context=c) for c in contexts]
    meter = {
        "connectorId": 1,
        "transactionId": tx16,
        "meterValue": [{"timestamp": T1, "sampledValue": samples}],
    }
    calls, _ = run(state, "MeterValues", meter)
    assert only(calls)["triggerReason"] == trigger


def test_celcius_is_celsius_but_temperature_has_no_201_measurand_and_travels_as_custom_data() -> None:
    state = TranslationState()
    tx16, _ = started(state)
    temperature = sampled("41.5", measurand="Temperature", unit="Celcius", location="Body")
    meter = {
        "connectorId": 1,
        "transactionId": tx16,
        "meterValue": [
            {"timestamp": T1, "sampledValue": [sampled("100"), temperature]},
            {"timestamp": T2, "sampledValue": [sampled("1500", measurand="RPM")]},
        ],
    }
    calls, _ = run(state, "MeterValues", meter)
    event = only(calls)
    assert event["meterValue"] == [{"timestamp": T1, "sampledValue": [{"value": 100}]}]
    assert event["customData"] == {
        "vendorId": "ocpp809",
        "untranslatedMeterValue": [
            {"timestamp": T1, "sampledValue": [temperature]},
            {"timestamp": T2, "sampledValue": [sampled("1500", measurand="RPM")]},
        ],
    }
    assert event["timestamp"] == T2  # the last reading's time
    # A unit alone is translated: Celcius -> Celsius (e.g. on a Voltage-less custom reading).
    assert up_meter.convert_entry({"timestamp": T1, "sampledValue": [sampled("3", unit="Celcius")]})[0] == [
        {"value": 3, "unitOfMeasure": {"unit": "Celsius"}}
    ]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("12", 12),
        ("-3", -3),
        (" 7 ", 7),
        ("0012", 12),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("12345678901234567890", 12345678901234567890.0),
        ("", None),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        ("1e400", None),
        ("0x10", None),
        ("1_000", None),
        ("١٢", None),  # Arabic-Indic digits: Python's int() would take them, JSON would not
        ("12 kWh", None),
    ],
)
def test_values_become_json_numbers_or_nothing(text: str, number: float | None) -> None:
    assert up_meter.number(text) == number
    if number is not None:
        assert type(up_meter.number(text)) is type(number)


def test_a_value_that_is_no_number_is_kept_as_custom_data_and_never_breaks_the_call() -> None:
    state = TranslationState()
    meter = {
        "connectorId": 1,
        "meterValue": [
            {"timestamp": T1, "sampledValue": [sampled("n/a"), sampled("NaN", measurand="Voltage")]}
        ],
    }
    calls, answer = run(state, "MeterValues", meter)
    assert calls == [] and answer == {}  # outside a transaction: no 2.0.1 MeterValues can carry it
    tx16, _ = started(state)
    calls, _ = run(state, "MeterValues", {**meter, "transactionId": tx16})
    event = only(calls, "TransactionEvent")
    assert "meterValue" not in event
    assert event["customData"]["untranslatedMeterValue"] == meter["meterValue"]


def test_signed_data_becomes_the_signed_meter_value_of_its_raw_twin() -> None:
    ocmf = 'OCMF|{"FV":"1.0"}|{"SD":"abc"}'
    entry = {
        "timestamp": T1,
        "sampledValue": [
            sampled("1000", context="Transaction.End", unit="Wh"),
            sampled(ocmf, context="Transaction.End", format="SignedData"),
            sampled("opaque", context="Sample.Periodic", format="SignedData"),  # no raw twin
        ],
    }
    kept, left = up_meter.convert_entry(entry)
    assert kept == [
        {
            "value": 1000,
            "context": "Transaction.End",
            "unitOfMeasure": {"unit": "Wh"},
            "signedMeterValue": {
                "signedMeterData": ocmf,
                "signingMethod": "",
                "encodingMethod": "OCMF",
                "publicKey": "",
            },
        }
    ]
    assert left == [entry["sampledValue"][2]]


# -- StopTransaction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "stopped", "trigger"),
    [
        (None, "Local", "StopAuthorized"),
        ("Local", "Local", "StopAuthorized"),
        ("Remote", "Remote", "RemoteStop"),
        ("DeAuthorized", "DeAuthorized", "Deauthorized"),
        ("EVDisconnected", "EVDisconnected", "EVCommunicationLost"),
        ("EmergencyStop", "EmergencyStop", "AbnormalCondition"),
        ("PowerLoss", "PowerLoss", "AbnormalCondition"),
        ("Reboot", "Reboot", "AbnormalCondition"),
        ("HardReset", "ImmediateReset", "ResetCommand"),
        ("SoftReset", "ImmediateReset", "ResetCommand"),
        ("UnlockCommand", "Remote", "UnlockCommand"),
        ("Other", "Other", "AbnormalCondition"),
    ],
)
def test_stop_reason_maps_onto_stopped_reason_and_trigger(
    reason: str | None, stopped: str, trigger: str
) -> None:
    state = TranslationState()
    tx16, tx201 = started(state)
    stop: Payload = {"transactionId": tx16, "meterStop": 5000, "timestamp": T2}
    if reason is not None:
        stop["reason"] = reason
    calls, answer = run(state, "StopTransaction", stop)
    event = only(calls, "TransactionEvent")
    assert event["transactionInfo"] == {"transactionId": tx201, "stoppedReason": stopped}
    assert (event["eventType"], event["triggerReason"], event["seqNo"]) == ("Ended", trigger, 1)
    assert answer == {}  # no idTag, no idTagInfo


def test_stop_keeps_the_transaction_data_and_the_meter_stop_and_closes_the_transaction() -> None:
    state = TranslationState()
    tx16, tx201 = started(state, connector=2)
    data = [
        {
            "timestamp": T1,
            "sampledValue": [
                sampled("2000", context="Sample.Periodic"),
                sampled("10", measurand="Current.Import", phase="L2", unit="A"),
            ],
        },
        {"timestamp": T2, "sampledValue": [sampled("3", measurand="Temperature", unit="Celsius")]},
    ]
    stop = {
        "transactionId": tx16,
        "idTag": "TAG-1",
        "meterStop": 4321,
        "timestamp": T2,
        "reason": "Local",
        "transactionData": data,
    }
    calls, answer = run(state, "StopTransaction", stop, [{"idTokenInfo": {"status": "Accepted"}}])
    event = only(calls)
    assert event["idToken"] == {"idToken": "TAG-1", "type": "ISO14443"}
    assert event["meterValue"] == [
        {
            "timestamp": T1,
            "sampledValue": [
                {"value": 2000, "context": "Sample.Periodic"},
                {"value": 10, "measurand": "Current.Import", "phase": "L2", "unitOfMeasure": {"unit": "A"}},
            ],
        },
        {
            "timestamp": T2,
            "sampledValue": [
                {
                    "value": 4321,
                    "context": "Transaction.End",
                    "measurand": "Energy.Active.Import.Register",
                    "unitOfMeasure": {"unit": "Wh"},
                }
            ],
        },
    ]
    assert event["customData"]["untranslatedMeterValue"] == [data[1]]
    assert answer == {"idTagInfo": {"status": "Accepted"}}
    assert state.tx201_of == {} and state.tx_connector == {} and state.seq_no == {}
    assert state.extra[CLOSED] == [[tx16, tx201]]
    # The connector has no transaction any more: its meter values are plain MeterValues again.
    meter = {"connectorId": 2, "meterValue": [{"timestamp": T2, "sampledValue": [sampled("1")]}]}
    assert only(run(state, "MeterValues", meter)[0], "MeterValues")["evseId"] == 2
    calls, _ = run(state, "MeterValues", {**meter, "transactionId": tx16})
    assert only(calls, "MeterValues")["evseId"] == 2


@pytest.mark.parametrize(
    ("csms", "expected"),
    [
        (None, {"idTagInfo": {"status": "Accepted"}}),
        ({}, {"idTagInfo": {"status": "Accepted"}}),
        ({"idTokenInfo": {"status": "NotAtThisTime"}}, {"idTagInfo": {"status": "Invalid"}}),
    ],
)
def test_stop_answer_with_an_id_tag(csms: Payload | None, expected: Payload) -> None:
    state = TranslationState()
    tx16, _ = started(state)
    stop = {"transactionId": tx16, "idTag": "TAG-1", "meterStop": 1, "timestamp": T2}
    assert run(state, "StopTransaction", stop, [csms])[1] == expected


def test_a_repeated_stop_is_answered_without_telling_the_csms_twice() -> None:
    state = TranslationState()
    tx16, _ = started(state)
    stop = {"transactionId": tx16, "idTag": "T", "meterStop": 1, "timestamp": T2}
    assert len(run(state, "StopTransaction", stop)[0]) == 1
    calls, answer = run(state, "StopTransaction", stop)
    assert calls == [] and answer == {"idTagInfo": {"status": "Accepted"}}


def test_a_stop_for_a_transaction_never_seen_starting_still_reaches_the_csms_started_then_ended() -> None:
    state = TranslationState()
    stop = {"transactionId": 987654, "idTag": "T", "meterStop": 777, "timestamp": T2, "reason": "PowerLoss"}
    calls, answer = run(state, "StopTransaction", stop, [None, {"idTokenInfo": {"status": "Blocked"}}])
    first, last = (c.payload for c in calls)
    tx201 = first["transactionInfo"]["transactionId"]
    assert (first["eventType"], first["seqNo"], first["triggerReason"]) == ("Started", 0, "AbnormalCondition")
    assert (last["eventType"], last["seqNo"], last["transactionInfo"]["transactionId"]) == ("Ended", 1, tx201)
    assert last["meterValue"][-1]["sampledValue"][0]["value"] == 777
    assert answer == {"idTagInfo": {"status": "Blocked"}}  # from the Ended's answer
    assert state.tx201_of == {} and state.seq_no == {}


def test_only_the_last_closed_transactions_are_remembered() -> None:
    state = TranslationState()
    for _ in range(up_tx.CLOSED_KEPT + 3):
        tx16, _ = started(state)
        run(state, "StopTransaction", {"transactionId": tx16, "meterStop": 1, "timestamp": T2})
    closed = state.extra[CLOSED]
    assert len(closed) == up_tx.CLOSED_KEPT
    assert closed[-1][0] == tx16 and closed[0][0] == 4


# -- DataTransfer and the notifications ------------------------------------------------


def test_data_transfer_is_relayed_and_its_answer_data_becomes_a_string() -> None:
    request = {"vendorId": "com.voltex", "messageId": "tariff", "data": '{"a":1}'}
    calls, answer = run(
        TranslationState(), "DataTransfer", request, [{"status": "Accepted", "data": {"price": 0.3}}]
    )
    assert only(calls, "DataTransfer") == request
    assert answer == {"status": "Accepted", "data": '{"price":0.3}'}
    _, answer = run(
        TranslationState(), "DataTransfer", {"vendorId": "v"}, [{"status": "Rejected", "data": "x"}]
    )
    assert answer == {"status": "Rejected", "data": "x"}
    _, answer = run(TranslationState(), "DataTransfer", {"vendorId": "v"})
    assert answer == {"status": "UnknownVendorId"}


@pytest.mark.parametrize(
    ("status16", "status201"),
    [
        ("Idle", "Idle"),
        ("Uploaded", "Uploaded"),
        ("UploadFailed", "UploadFailure"),
        ("Uploading", "Uploading"),
    ],
)
def test_diagnostics_status_is_a_log_status_with_the_csms_request_id(status16: str, status201: str) -> None:
    calls, answer = run(
        TranslationState(log_request_id=12), "DiagnosticsStatusNotification", {"status": status16}
    )
    expected = {"status": status201} if status16 == "Idle" else {"status": status201, "requestId": 12}
    assert only(calls, "LogStatusNotification") == expected
    assert answer == {}
    calls, _ = run(TranslationState(), "DiagnosticsStatusNotification", {"status": status16})
    assert only(calls) == {"status": status201}


@pytest.mark.parametrize(
    "status16",
    ["Downloaded", "DownloadFailed", "Downloading", "Idle", "InstallationFailed", "Installing", "Installed"],
)
def test_firmware_status_keeps_its_status_with_the_csms_request_id(status16: str) -> None:
    calls, answer = run(
        TranslationState(firmware_request_id=3), "FirmwareStatusNotification", {"status": status16}
    )
    expected = {"status": status16} if status16 == "Idle" else {"status": status16, "requestId": 3}
    assert only(calls, "FirmwareStatusNotification") == expected
    assert answer == {}


def test_the_security_whitepaper_calls_are_relayed() -> None:
    state = TranslationState(log_request_id=4, firmware_request_id=5)
    calls, _ = run(state, "LogStatusNotification", {"status": "Uploading", "requestId": 40})
    assert only(calls, "LogStatusNotification") == {"status": "Uploading", "requestId": 40}
    calls, _ = run(state, "LogStatusNotification", {"status": "Uploaded"})
    assert only(calls) == {"status": "Uploaded", "requestId": 4}
    calls, _ = run(state, "SignedFirmwareStatusNotification", {"status": "InvalidSignature", "requestId": 50})
    assert only(calls, "FirmwareStatusNotification") == {"status": "InvalidSignature", "requestId": 50}
    event = {"type": "FirmwareUpdated", "timestamp": T1, "techInfo": "v2"}
    assert only(run(state, "SecurityEventNotification", event)[0], "SecurityEventNotification") == event
    calls, answer = run(state, "SignCertificate", {"csr": "-----BEGIN CSR-----"}, [{"status": "Accepted"}])
    assert only(calls, "SignCertificate") == {
        "csr": "-----BEGIN CSR-----",
        "certificateType": "ChargingStationCertificate",
    }
    assert answer == {"status": "Accepted"}
    assert run(state, "SignCertificate", {"csr": "x"})[1] == {"status": "Rejected"}


# -- properties: random sessions on several connectors -----------------------------------


@dataclass
class Station:
    """A 1.6 station as the CSMS sees it through the translation: its calls and the results."""

    open_tx: dict[int, int] = field(default_factory=dict)  # connector -> 1.6 id it was given
    closed_tx: list[int] = field(default_factory=list)
    tx201_of: dict[int, str] = field(default_factory=dict)  # 1.6 id -> 2.0.1 id seen in Started
    events: list[Payload] = field(default_factory=list)  # every TransactionEvent, in order


CONNECTORS = st.integers(min_value=1, max_value=3)
STATUSES = st.sampled_from(sorted(up_status.CONNECTOR_STATUS))
REASONS = st.sampled_from([None, *sorted(up_tx.STOP_REASONS)])
VALUES = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "n/a", "1e400", " 42 "]),
)
OPS = st.one_of(
    st.tuples(st.just("start"), CONNECTORS, st.sampled_from(["A", "B", "REMOTE"])),
    st.tuples(st.just("meter"), CONNECTORS, st.sampled_from(["tx", "connector", "closed"]), VALUES),
    st.tuples(
        st.just("status"),
        st.integers(0, 3),
        STATUSES,
        st.sampled_from(["NoError", "NoError", "GroundFailure"]),
    ),
    st.tuples(st.just("stop"), CONNECTORS, REASONS, st.sampled_from(["open", "open", "unknown", "again"])),
    st.tuples(st.just("answer_online"), st.booleans()),
)


def _call(station: Station, op: tuple[Any, ...], at: datetime) -> tuple[str, Payload] | None:
    ts = at.isoformat().replace("+00:00", "Z")
    kind = op[0]
    if kind == "start":
        _, connector, tag = op
        return "StartTransaction", {"connectorId": connector, "idTag": tag, "meterStart": 10, "timestamp": ts}
    if kind == "meter":
        _, connector, how, value = op
        body: Payload = {
            "connectorId": connector,
            "meterValue": [
                {
                    "timestamp": ts,
                    "sampledValue": [
                        {"value": value},
                        {"value": "230", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
                    ],
                }
            ],
        }
        if how == "tx" and connector in station.open_tx:
            body["transactionId"] = station.open_tx[connector]
        elif how == "closed" and station.closed_tx:
            body["transactionId"] = station.closed_tx[-1]
        return "MeterValues", body
    if kind == "status":
        _, connector, status16, error = op
        if connector == 0 and status16 not in ("Available", "Unavailable", "Faulted"):
            status16 = "Available"
        return "StatusNotification", {
            "connectorId": connector,
            "errorCode": error,
            "status": status16,
            "timestamp": ts,
        }
    if kind == "stop":
        _, connector, reason, which = op
        if which == "open" and connector in station.open_tx:
            tx16 = station.open_tx[connector]
        elif which == "again" and station.closed_tx:
            tx16 = station.closed_tx[-1]
        else:
            tx16 = 10**6 + int(at.timestamp()) % 1000  # an id the gateway never gave
        stop: Payload = {"transactionId": tx16, "meterStop": 99, "timestamp": ts, "idTag": "A"}
        if reason is not None:
            stop["reason"] = reason
        return "StopTransaction", stop
    return None


def _csms_answer(call: Out) -> Payload:
    if call.action == "TransactionEvent":
        return {"idTokenInfo": {"status": "Accepted"}} if "idToken" in call.payload else {}
    return {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=40), st.lists(st.booleans(), min_size=40, max_size=40))
def test_random_sessions_keep_transactions_whole_and_survive_a_json_round_trip(
    ops: list[tuple[Any, ...]], round_trip_before: list[bool]
) -> None:
    state = TranslationState(remote_start={"REMOTE": 77})
    twin = TranslationState.from_json(state.to_json())  # round-tripped before the chosen steps
    station = Station()
    online = False
    at = NOW
    for step, op in enumerate(ops):
        at += timedelta(seconds=1)
        if op[0] == "answer_online":
            online = op[1]
            continue
        call = _call(station, op, at)
        assert call is not None
        action, payload = call
        if round_trip_before[step]:
            twin = TranslationState.from_json(twin.to_json())
        result = upward.translate(state, STATION, action, payload, at)
        twin_result = upward.translate(twin, STATION, action, copy.deepcopy(payload), at)
        assert isinstance(result, Translated) and isinstance(twin_result, Translated)
        assert result.calls == twin_result.calls
        assert state.to_json() == twin.to_json()
        answers = [_csms_answer(c) if online else None for c in result.calls]
        answer = result.answer(answers)
        assert answer == twin_result.answer(answers)
        validate(OcppVersion.V16, action, answer, request=False)
        for out in result.calls:
            validate(OcppVersion.V201, out.action, out.payload, request=True)
            if out.action == "TransactionEvent":
                station.events.append(out.payload)
        # The station's side of it.
        if action == "StartTransaction":
            tx16 = answer["transactionId"]
            assert tx16 not in station.tx201_of, "a 1.6 id given twice"
            station.tx201_of[tx16] = only(list(result.calls))["transactionInfo"]["transactionId"]
            station.open_tx[payload["connectorId"]] = tx16  # a newer one replaces it on the station
        elif action == "StopTransaction":
            tx16 = payload["transactionId"]
            if tx16 in station.tx201_of and result.calls:
                assert result.calls[-1].payload["transactionInfo"]["transactionId"] == station.tx201_of[tx16]
            station.open_tx = {c: t for c, t in station.open_tx.items() if t != tx16}
            station.closed_tx.append(tx16)
        elif action in ("MeterValues", "StatusNotification"):
            # A reading or status names its transaction, or else the newest one on its connector.
            tx16 = payload.get("transactionId", station.open_tx.get(payload["connectorId"]))
            for out in result.calls:
                if out.action == "TransactionEvent" and tx16 in station.tx201_of:
                    assert out.payload["transactionInfo"]["transactionId"] == station.tx201_of[tx16]

    # Per 2.0.1 transaction: Started first (seqNo 0), seqNo strictly increasing, nothing after Ended.
    by_tx: dict[str, list[Payload]] = {}
    for event in station.events:
        by_tx.setdefault(event["transactionInfo"]["transactionId"], []).append(event)
    for tx201, events in by_tx.items():
        assert events[0]["eventType"] == "Started" and events[0]["seqNo"] == 0, tx201
        assert [e["eventType"] for e in events[1:]].count("Started") == 0, tx201
        seqs = [e["seqNo"] for e in events]
        assert all(a < b for a, b in itertools.pairwise(seqs)), (tx201, seqs)
        ended = [i for i, e in enumerate(events) if e["eventType"] == "Ended"]
        assert ended in ([], [len(events) - 1]), (tx201, ended)
        assert len(tx201) <= 36
    # One 2.0.1 transaction per 1.6 transaction.
    assert len(set(station.tx201_of.values())) == len(station.tx201_of)


# -- properties: any schema-valid 1.6 call -----------------------------------------------


def _valid(version: OcppVersion, action: str, payload: Any, request: bool) -> bool:
    try:
        validate(version, action, payload, request=request)
    except OcppViolation:
        return False
    return True


def _csms_answers(action: str) -> st.SearchStrategy[Any]:
    path = Path(ocpp.__file__).parent / "v201" / "schemas" / f"{action}Response.json"
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    return ocpp_cases._from_schema(schema, schema)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(st.data())
def test_any_valid_16_call_gives_valid_201_calls_and_a_valid_16_answer(data: st.DataObject) -> None:
    """Never raises, never touches its input, and whatever the CSMS answers (or not), the
    station gets a schema-valid answer; the state stays JSON-clean."""
    action = data.draw(st.sampled_from(ocpp_cases.station_actions(OcppVersion.V16)), label="action")
    payload = data.draw(ocpp_cases.payloads(OcppVersion.V16, action), label="payload")
    assume(_valid(OcppVersion.V16, action, payload, request=True))
    state = TranslationState()
    if data.draw(st.booleans(), label="a transaction open"):
        tx16 = payload.get("transactionId", 1)
        state.tx201_of[tx16], state.tx_connector[tx16] = "open-before", payload.get("connectorId", 1)
        state.seq_no["open-before"] = 3
    original = copy.deepcopy(payload)
    result = upward.translate(state, STATION, action, payload, NOW)
    assert payload == original
    assert isinstance(result, Translated)
    for call in result.calls:
        check_call(call)
    check_answer(action, result.answer([None] * len(result.calls)))
    answers = [data.draw(_csms_answers(c.action), label=f"{c.action} answer") for c in result.calls]
    # The shell hands over only schema-valid CSMS answers (None for the others).
    answers = [
        a if _valid(OcppVersion.V201, c.action, a, request=False) else None
        for c, a in zip(result.calls, answers, strict=True)
    ]
    check_answer(action, result.answer(answers))
    assert TranslationState.from_json(state.to_json()).to_json() == state.to_json()
