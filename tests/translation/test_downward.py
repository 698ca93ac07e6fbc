"""The downward translation: a 2.0.1 CSMS's calls for a 1.6 station (pure, no sockets).

Every 1.6 call is checked against the ocpp library's 1.6 request schema, every 2.0.1
answer and follow-up against the 2.0.1 schemas, with the station's answers and without.
"""

from __future__ import annotations

import ast
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ocpp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.model import OcppVersion
from ocpp_side.codec import OcppViolation
from ocpp_side.csms_guard import judge
from ocpp_side.schemas import known_actions, validate
from ocpp_side.translation import config_keys
from ocpp_side.translation.api import Answers, Payload, Refused, Translated, TranslationState
from ocpp_side.translation.charging_profiles import (
    ProfileError,
    composite_to_201,
    profile_to_16,
    profile_to_201,
)
from ocpp_side.translation.downward import ANSWER_STATUSES, HANDLERS, NO_COUNTERPART, translate
from ocpp_side.versions import rules_for

NOW = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
V16, V201 = OcppVersion.V16, OcppVersion.V201
STATION = "CP-16"

# What a station sends the CSMS (the rest of 2.0.1's actions are the CSMS's to send).
STATION_INITIATED = frozenset(
    {
        "Authorize",
        "BootNotification",
        "ClearedChargingLimit",
        "FirmwareStatusNotification",
        "Get15118EVCertificate",
        "GetCertificateStatus",
        "Heartbeat",
        "LogStatusNotification",
        "MeterValues",
        "NotifyChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyReport",
        "PublishFirmwareStatusNotification",
        "ReportChargingProfiles",
        "ReservationStatusUpdate",
        "SecurityEventNotification",
        "SignCertificate",
        "StatusNotification",
        "TransactionEvent",
    }
)
CSMS_ACTIONS = known_actions(V201) - STATION_INITIATED


def a_state() -> TranslationState:
    """A station with one transaction ongoing: 1.6 id 7 on connector 2, 2.0.1 id "tx-7"."""
    state = TranslationState()
    state.tx201_of = {5: "tx-5", 7: "tx-7"}  # tx-5 ended
    state.tx_connector = {7: 2}
    return state


class Run:
    """One translated CSMS call, checked against the schemas at every step."""

    def __init__(self, action: str, payload: Payload, state: TranslationState | None = None) -> None:
        validate(V201, action, payload, request=True)  # the test's own input is valid
        self.action = action
        self.state = state if state is not None else a_state()
        # Whatever the station says, or if it says nothing, the CSMS gets a valid answer
        # (checked on a copy: an answer may change the state).
        self.translated = self._translate(copy.deepcopy(self.state), payload)
        self.answer_with([None] * len(self.translated.calls))
        self.translated = self._translate(self.state, payload)

    def _translate(self, state: TranslationState, payload: Payload) -> Translated:
        result = translate(state, STATION, self.action, payload, NOW)
        assert isinstance(result, Translated), result
        for call in result.calls:
            validate(V16, call.action, call.payload, request=True)
        return result

    @property
    def calls(self) -> list[tuple[str, Payload]]:
        return [(c.action, c.payload) for c in self.translated.calls]

    def answer_with(self, answers: Answers) -> Payload:
        assert len(answers) == len(self.translated.calls)
        for call, answer in zip(self.translated.calls, answers, strict=True):
            if answer is not None:
                validate(V16, call.action, answer, request=False)
        answer = self.translated.answer(answers)
        validate(V201, self.action, answer, request=False)
        for out in self.translated.follow_up(answers):
            validate(V201, out.action, out.payload, request=True)
        return answer

    def follow_up(self, answers: Answers) -> list[tuple[str, Payload]]:
        return [(o.action, o.payload) for o in self.translated.follow_up(answers)]


def refused(action: str, payload: Payload, state: TranslationState | None = None) -> Refused:
    validate(V201, action, payload, request=True)
    result = translate(state or a_state(), STATION, action, payload, NOW)
    assert isinstance(result, Refused)
    return result


def token(tag: str = "TAG-1") -> Payload:
    return {"idToken": tag, "type": "ISO14443"}


def profile_201(purpose: str = "TxProfile", **extra: Any) -> Payload:
    profile = {
        "id": 42,
        "stackLevel": 3,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 9,
                "startSchedule": "2026-11-30T10:00:00Z",
                "duration": 3600,
                "chargingRateUnit": "A",
                "minChargingRate": 6.04,
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
                    {"startPeriod": 900, "limit": 10.37, "numberPhases": 1, "phaseToUse": 2},
                ],
            }
        ],
    }
    profile.update(extra)
    return profile


# -- transactions -----------------------------------------------------------------------


def test_request_start_becomes_remote_start_and_records_the_remote_start_id() -> None:
    run = Run(
        "RequestStartTransaction",
        {"idToken": token(), "remoteStartId": 77, "evseId": 2, "chargingProfile": profile_201()},
    )
    [(action, call)] = run.calls
    assert action == "RemoteStartTransaction"
    assert call["idTag"] == "TAG-1" and call["connectorId"] == 2
    profile = call["chargingProfile"]
    assert profile["chargingProfilePurpose"] == "TxProfile" and "transactionId" not in profile
    assert [p["limit"] for p in profile["chargingSchedule"]["chargingSchedulePeriod"]] == [16.0, 10.3]
    assert run.state.remote_start == {"TAG-1": 77}
    assert run.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}
    assert run.state.remote_start == {"TAG-1": 77}  # for the upward side's StartTransaction


def test_a_refused_remote_start_forgets_its_remote_start_id() -> None:
    state = a_state()
    state.remote_start["TAG-1"] = 5  # an earlier request still waiting
    run = Run("RequestStartTransaction", {"idToken": token(), "remoteStartId": 78}, state)
    assert run.calls == [("RemoteStartTransaction", {"idTag": "TAG-1"})]
    assert state.remote_start == {"TAG-1": 78}
    assert run.answer_with([{"status": "Rejected"}]) == {"status": "Rejected"}
    assert state.remote_start == {"TAG-1": 5}


def test_request_start_with_a_token_1_6_cannot_carry_is_rejected_locally() -> None:
    run = Run("RequestStartTransaction", {"idToken": token("X" * 21), "remoteStartId": 1})
    assert run.calls == []
    assert run.answer_with([])["status"] == "Rejected"
    assert run.state.remote_start == {}


def test_request_stop_uses_the_stations_own_transaction_id() -> None:
    run = Run("RequestStopTransaction", {"transactionId": "tx-7"})
    assert run.calls == [("RemoteStopTransaction", {"transactionId": 7})]
    assert run.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}
    assert run.answer_with([None])["statusInfo"]["reasonCode"] == "Unspecified"


def test_request_stop_of_an_unknown_transaction_is_rejected_without_asking_the_station() -> None:
    run = Run("RequestStopTransaction", {"transactionId": "tx-unknown"})
    assert run.calls == []
    answer = run.answer_with([])
    assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == "UnknownTxId"


@pytest.mark.parametrize(("tx", "ongoing"), [("tx-7", True), ("tx-5", False), ("nope", False)])
def test_transaction_status_from_the_state(tx: str, ongoing: bool) -> None:
    run = Run("GetTransactionStatus", {"transactionId": tx})
    assert run.calls == []
    assert run.answer_with([]) == {"messagesInQueue": False, "ongoingIndicator": ongoing}
    assert Run("GetTransactionStatus", {}).answer_with([]) == {"messagesInQueue": False}


# -- station control --------------------------------------------------------------------


def test_reset_immediate_is_a_soft_reset_that_ends_transactions_gracefully() -> None:
    run = Run("Reset", {"type": "Immediate"})
    assert run.calls == [("Reset", {"type": "Soft"})]
    assert run.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}


def test_reset_on_idle_waits_for_no_transaction() -> None:
    assert Run("Reset", {"type": "OnIdle"}).calls == []  # a transaction is ongoing
    idle = Run("Reset", {"type": "OnIdle"}, TranslationState())
    assert idle.calls == [("Reset", {"type": "Soft"})]


def test_reset_of_one_evse_is_rejected() -> None:
    run = Run("Reset", {"type": "Immediate", "evseId": 1})
    assert run.calls == [] and run.answer_with([])["status"] == "Rejected"


@pytest.mark.parametrize(("evse", "connector"), [(None, 0), ({"id": 2}, 2), ({"id": 3, "connectorId": 1}, 3)])
def test_change_availability_on_station_or_evse(evse: Payload | None, connector: int) -> None:
    payload: Payload = {"operationalStatus": "Inoperative"}
    if evse is not None:
        payload["evse"] = evse
    run = Run("ChangeAvailability", payload)
    assert run.calls == [("ChangeAvailability", {"connectorId": connector, "type": "Inoperative"})]
    assert run.answer_with([{"status": "Scheduled"}]) == {"status": "Scheduled"}


def test_change_availability_of_a_second_connector_is_rejected() -> None:
    run = Run("ChangeAvailability", {"operationalStatus": "Operative", "evse": {"id": 1, "connectorId": 2}})
    assert run.calls == [] and run.answer_with([])["status"] == "Rejected"


def test_unlock_connector() -> None:
    run = Run("UnlockConnector", {"evseId": 1, "connectorId": 1})
    assert run.calls == [("UnlockConnector", {"connectorId": 1})]
    assert run.answer_with([{"status": "Unlocked"}]) == {"status": "Unlocked"}
    not_supported = run.answer_with([{"status": "NotSupported"}])
    assert not_supported["status"] == "UnlockFailed" and "statusInfo" in not_supported
    assert run.answer_with([None])["status"] == "UnlockFailed"


def test_unlock_keeps_a_charging_cable_locked_and_knows_its_connectors() -> None:
    assert Run("UnlockConnector", {"evseId": 2, "connectorId": 1}).answer_with([]) == {
        "status": "OngoingAuthorizedTransaction"
    }
    assert Run("UnlockConnector", {"evseId": 1, "connectorId": 2}).answer_with([]) == {
        "status": "UnknownConnector"
    }


@pytest.mark.parametrize(
    ("requested", "sent"),
    [
        ("BootNotification", "BootNotification"),
        ("LogStatusNotification", "DiagnosticsStatusNotification"),
        ("FirmwareStatusNotification", "FirmwareStatusNotification"),
        ("Heartbeat", "Heartbeat"),
        ("MeterValues", "MeterValues"),
        ("StatusNotification", "StatusNotification"),
        ("TransactionEvent", "MeterValues"),
    ],
)
def test_trigger_message_mapped(requested: str, sent: str) -> None:
    run = Run("TriggerMessage", {"requestedMessage": requested, "evse": {"id": 2}})
    assert run.calls == [("TriggerMessage", {"requestedMessage": sent, "connectorId": 2})]
    assert run.answer_with([{"status": "NotImplemented"}]) == {"status": "NotImplemented"}


@pytest.mark.parametrize(
    "requested",
    [
        "SignChargingStationCertificate",
        "SignV2GCertificate",
        "SignCombinedCertificate",
        "PublishFirmwareStatusNotification",
    ],
)
def test_trigger_without_counterpart_is_not_implemented(requested: str) -> None:
    run = Run("TriggerMessage", {"requestedMessage": requested})
    assert run.calls == [] and run.answer_with([])["status"] == "NotImplemented"


def test_trigger_transaction_event_needs_a_transaction_on_that_evse() -> None:
    run = Run("TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}})
    assert run.calls == [] and run.answer_with([])["status"] == "Rejected"


def test_clear_cache() -> None:
    run = Run("ClearCache", {})
    assert run.calls == [("ClearCache", {})]
    assert run.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}


@pytest.mark.parametrize(("data", "sent"), [("plain", "plain"), ({"a": [1, 2]}, '{"a":[1,2]}'), (5, "5")])
def test_data_transfer_carries_any_data_as_text(data: Any, sent: str) -> None:
    run = Run("DataTransfer", {"vendorId": "acme", "messageId": "m", "data": data})
    assert run.calls == [("DataTransfer", {"vendorId": "acme", "messageId": "m", "data": sent})]
    answer = run.answer_with([{"status": "Accepted", "data": "back"}])
    assert answer == {"status": "Accepted", "data": "back"}
    assert run.answer_with([{"status": "UnknownVendorId"}]) == {"status": "UnknownVendorId"}


# -- configuration ----------------------------------------------------------------------


def var(component: str, variable: str, instance: str | None = None, **extra: Any) -> Payload:
    item: Payload = {"component": {"name": component}, "variable": {"name": variable}}
    if instance is not None:
        item["variable"]["instance"] = instance
    item.update(extra)
    return item


@pytest.mark.parametrize(
    ("component", "variable", "instance", "key"),
    [
        ("OCPPCommCtrlr", "HeartbeatInterval", None, "HeartbeatInterval"),
        ("SampledDataCtrlr", "TxUpdatedInterval", None, "MeterValueSampleInterval"),
        ("SampledDataCtrlr", "TxUpdatedMeasurands", None, "MeterValuesSampledData"),
        ("AlignedDataCtrlr", "Interval", None, "ClockAlignedDataInterval"),
        ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent", "TransactionMessageAttempts"),
        ("LocalAuthListCtrlr", "Enabled", None, "LocalAuthListEnabled"),
        ("SmartChargingCtrlr", "ProfileStackLevel", None, "ChargeProfileMaxStackLevel"),
        ("OCPP16Configuration", "BlinkRepeat", None, "BlinkRepeat"),
    ],
)
def test_variables_name_the_standard_keys(
    component: str, variable: str, instance: str | None, key: str
) -> None:
    assert (
        config_keys.key_of(
            var(component, variable, instance)["component"], var(component, variable, instance)["variable"]
        )
        == key
    )


def test_the_key_table_is_one_to_one() -> None:
    assert len(config_keys.BY_KEY) == len(config_keys.KEYS) == len(config_keys.BY_NAME)
    for entry in config_keys.KEYS:
        component, variable, _ = config_keys.names_of(entry.key)
        assert config_keys.key_of(component, variable) == entry.key


def test_get_variables_is_one_get_configuration() -> None:
    items = [
        var("OCPPCommCtrlr", "HeartbeatInterval"),
        var("SmartChargingCtrlr", "RateUnit"),
        var("NoSuchCtrlr", "Enabled"),
        var("OCPPCommCtrlr", "NoSuchVariable"),
        var("AlignedDataCtrlr", "Interval"),
        var("OCPPCommCtrlr", "HeartbeatInterval", attributeType="Target"),
        var("OCPP16Configuration", "VendorKey"),
        var("OCPPCommCtrlr", "HeartbeatInterval", attributeType="Actual"),
    ]
    run = Run("GetVariables", {"getVariableData": items})
    keys = [
        "HeartbeatInterval",
        "ChargingScheduleAllowedChargingRateUnit",
        "ClockAlignedDataInterval",
        "VendorKey",
    ]
    assert run.calls == [("GetConfiguration", {"key": keys})]
    answer = run.answer_with(
        [
            {
                "configurationKey": [
                    {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
                    {
                        "key": "ChargingScheduleAllowedChargingRateUnit",
                        "readonly": True,
                        "value": "Current, Power",
                    },
                    {"key": "VendorKey", "readonly": True},
                ],
                "unknownKey": ["ClockAlignedDataInterval"],
            }
        ]
    )
    results = answer["getVariableResult"]
    assert [(r["attributeStatus"], r.get("attributeValue")) for r in results] == [
        ("Accepted", "300"),
        ("Accepted", "A,W"),
        ("UnknownComponent", None),
        ("UnknownVariable", None),
        ("UnknownVariable", None),
        ("NotSupportedAttributeType", None),
        ("Accepted", ""),
        ("Accepted", "300"),
    ]
    assert [r["component"] for r in results] == [i["component"] for i in items]
    assert [r.get("attributeType") for r in results][-3:] == ["Target", None, "Actual"]
    assert {r["attributeStatus"] for r in run.answer_with([None])["getVariableResult"][:2]} == {"Rejected"}


def test_get_variables_with_nothing_to_ask_does_not_ask() -> None:
    run = Run(
        "GetVariables",
        {
            "getVariableData": [
                {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}
            ]
        },
    )
    assert run.calls == []
    assert run.answer_with([])["getVariableResult"][0]["attributeStatus"] == "UnknownComponent"


def test_set_variables_is_one_change_configuration_per_variable() -> None:
    items = [
        {**var("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "120"},
        {**var("SmartChargingCtrlr", "RateUnit"), "attributeValue": "A,W"},
        {**var("Nope", "X"), "attributeValue": "1"},
        {**var("SampledDataCtrlr", "TxUpdatedMeasurands"), "attributeValue": "x" * 501},
        {**var("TxCtrlr", "StopTxOnInvalidId"), "attributeValue": "true"},
        {**var("OCPP16Configuration", "Vendor"), "attributeValue": "v"},
    ]
    run = Run("SetVariables", {"setVariableData": items})
    assert run.calls == [
        ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "120"}),
        ("ChangeConfiguration", {"key": "ChargingScheduleAllowedChargingRateUnit", "value": "Current,Power"}),
        ("ChangeConfiguration", {"key": "StopTransactionOnInvalidId", "value": "true"}),
        ("ChangeConfiguration", {"key": "Vendor", "value": "v"}),
    ]
    answer = run.answer_with(
        [
            {"status": "Accepted"},
            {"status": "Rejected"},
            {"status": "RebootRequired"},
            {"status": "NotSupported"},
        ]
    )
    statuses = [r["attributeStatus"] for r in answer["setVariableResult"]]
    assert statuses == [
        "Accepted",
        "Rejected",
        "UnknownComponent",
        "Rejected",
        "RebootRequired",
        "UnknownVariable",
    ]
    assert answer["setVariableResult"][3]["attributeStatusInfo"]["reasonCode"] == "ValueTooLong"


def test_base_report_from_get_configuration() -> None:
    run = Run("GetBaseReport", {"requestId": 12, "reportBase": "FullInventory"})
    assert run.calls == [("GetConfiguration", {})]
    station = {
        "configurationKey": [
            {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
            {"key": "TransactionMessageAttempts", "readonly": True, "value": "3"},
            {"key": "LocalPreAuthorize", "readonly": False, "value": "TRUE"},
            {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
        ]
    }
    assert run.answer_with([station]) == {"status": "Accepted"}
    [(action, report)] = run.follow_up([station])
    assert action == "NotifyReport"
    assert (report["requestId"], report["seqNo"], report["tbc"]) == (12, 0, False)
    assert report["generatedAt"] == "2026-11-30T10:00:00.000Z"
    rows = {(r["component"]["name"], r["variable"]["name"]): r for r in report["reportData"]}
    assert rows[("OCPPCommCtrlr", "HeartbeatInterval")]["variableAttribute"] == [
        {"type": "Actual", "mutability": "ReadWrite", "value": "300"}
    ]
    attempts = rows[("OCPPCommCtrlr", "MessageAttempts")]
    assert attempts["variable"]["instance"] == "TransactionEvent"
    assert attempts["variableAttribute"][0]["mutability"] == "ReadOnly"
    assert rows[("AuthCtrlr", "LocalPreAuthorize")]["variableAttribute"][0]["value"] == "true"
    assert (
        rows[("OCPP16Configuration", "NumberOfConnectors")]["variableCharacteristics"]["dataType"] == "string"
    )


def test_configuration_inventory_lists_writable_keys_only() -> None:
    run = Run("GetBaseReport", {"requestId": 1, "reportBase": "ConfigurationInventory"})
    station = {"configurationKey": [{"key": "NumberOfConnectors", "readonly": True, "value": "2"}]}
    assert run.answer_with([station]) == {"status": "EmptyResultSet"}
    assert run.follow_up([station]) == []
    assert run.answer_with([None])["status"] == "Rejected" and run.follow_up([None]) == []


def test_summary_inventory_is_not_supported() -> None:
    run = Run("GetBaseReport", {"requestId": 1, "reportBase": "SummaryInventory"})
    assert run.calls == [] and run.answer_with([])["status"] == "NotSupported"


# -- smart charging ---------------------------------------------------------------------


def test_set_charging_profile_converts_the_profile_and_maps_the_transaction() -> None:
    run = Run("SetChargingProfile", {"evseId": 2, "chargingProfile": profile_201(transactionId="tx-7")})
    [(action, call)] = run.calls
    assert action == "SetChargingProfile" and call["connectorId"] == 2
    profile = call["csChargingProfiles"]
    assert profile["transactionId"] == 7 and profile["chargingProfileId"] == 42
    schedule = profile["chargingSchedule"]
    assert schedule["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
        {"startPeriod": 900, "limit": 10.3, "numberPhases": 1},
    ]
    assert schedule["minChargingRate"] == 6.1 and schedule["duration"] == 3600
    assert run.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}
    assert run.answer_with([{"status": "NotSupported"}])["status"] == "Rejected"


def test_the_dso_guard_caps_the_translated_station_maximum() -> None:
    run = Run(
        "SetChargingProfile", {"evseId": 0, "chargingProfile": profile_201("ChargingStationMaxProfile")}
    )
    [(_, call)] = run.calls
    assert call["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
    verdict = judge(rules_for(V16), "SetChargingProfile", call, (), 230.0 * 3 * 8, None)
    assert verdict.payload is not None and verdict.max_profile_id == 42
    periods = verdict.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [8.0, 10.3]  # 1 phase at 10.3 A is under the 5.52 kW cap
    validate(V16, "SetChargingProfile", verdict.payload, request=True)


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        (profile_201(transactionId="tx-unknown"), "UnknownTxId"),
        (profile_201("ChargingStationExternalConstraints"), "UnsupportedParam"),
        ({**profile_201(), "chargingSchedule": profile_201()["chargingSchedule"] * 2}, "UnsupportedParam"),
    ],
)
def test_profiles_1_6_cannot_take_are_rejected_locally(profile: Payload, reason: str) -> None:
    run = Run("SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
    answer = run.answer_with([])
    assert run.calls == [] and answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == reason


def test_clear_charging_profile() -> None:
    payload = {
        "chargingProfileId": 3,
        "chargingProfileCriteria": {
            "evseId": 0,
            "chargingProfilePurpose": "ChargingStationMaxProfile",
            "stackLevel": 1,
        },
    }
    run = Run("ClearChargingProfile", payload)
    assert run.calls == [
        (
            "ClearChargingProfile",
            {"id": 3, "connectorId": 0, "chargingProfilePurpose": "ChargePointMaxProfile", "stackLevel": 1},
        )
    ]
    assert run.answer_with([{"status": "Unknown"}]) == {"status": "Unknown"}
    external = {"chargingProfileCriteria": {"chargingProfilePurpose": "ChargingStationExternalConstraints"}}
    assert Run("ClearChargingProfile", external).answer_with([]) == {"status": "Unknown"}


def test_composite_schedule_comes_back_with_its_evse() -> None:
    run = Run("GetCompositeSchedule", {"evseId": 1, "duration": 600, "chargingRateUnit": "W"})
    assert run.calls == [
        ("GetCompositeSchedule", {"connectorId": 1, "duration": 600, "chargingRateUnit": "W"})
    ]
    station = {
        "status": "Accepted",
        "connectorId": 1,
        "scheduleStart": "2026-11-30T10:00:00Z",
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 11000.0},
                {"startPeriod": 300, "limit": 7400.5},
            ],
        },
    }
    assert run.answer_with([station]) == {
        "status": "Accepted",
        "schedule": {
            "evseId": 1,
            "duration": 600,
            "scheduleStart": "2026-11-30T10:00:00Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 11000.0},
                {"startPeriod": 300, "limit": 7400.5},
            ],
        },
    }
    assert run.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}
    assert run.answer_with([{"status": "Rejected"}]) == {"status": "Rejected"}


def test_composite_start_falls_back_to_the_request_time() -> None:
    answer = {
        "status": "Accepted",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}],
        },
    }
    assert composite_to_201(answer, 2, 60, "2026-11-30T10:00:00.000Z") == {
        "evseId": 2,
        "duration": 60,
        "scheduleStart": "2026-11-30T10:00:00.000Z",
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}],
    }
    assert (
        composite_to_201(
            {
                "status": "Accepted",
                "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": []},
            },
            1,
            1,
            "x",
        )
        is None
    )


# -- local list and reservations --------------------------------------------------------


def test_send_local_list() -> None:
    entries = [
        {
            "idToken": token("A"),
            "idTokenInfo": {
                "status": "NotAtThisTime",
                "cacheExpiryDateTime": "2027-01-01T00:00:00Z",
                "groupIdToken": token("GROUP"),
                "language1": "de",
            },
        },
        {"idToken": token("B")},
    ]
    run = Run(
        "SendLocalList", {"versionNumber": 4, "updateType": "Differential", "localAuthorizationList": entries}
    )
    assert run.calls == [
        (
            "SendLocalList",
            {
                "listVersion": 4,
                "updateType": "Differential",
                "localAuthorizationList": [
                    {
                        "idTag": "A",
                        "idTagInfo": {
                            "status": "Invalid",
                            "expiryDate": "2027-01-01T00:00:00Z",
                            "parentIdTag": "GROUP",
                        },
                    },
                    {"idTag": "B"},
                ],
            },
        )
    ]
    assert run.answer_with([{"status": "VersionMismatch"}]) == {"status": "VersionMismatch"}
    assert run.answer_with([{"status": "NotSupported"}])["status"] == "Failed"
    assert run.answer_with([None])["status"] == "Failed"


@pytest.mark.parametrize(
    "entry",
    [
        {"idToken": token("X" * 21)},
        {"idToken": token(), "idTokenInfo": {"status": "Accepted", "evseId": [1]}},
    ],
)
def test_local_list_entries_1_6_cannot_hold_fail_the_list(entry: Payload) -> None:
    run = Run("SendLocalList", {"versionNumber": 1, "updateType": "Full", "localAuthorizationList": [entry]})
    assert run.calls == [] and run.answer_with([])["status"] == "Failed"


def test_local_list_version() -> None:
    run = Run("GetLocalListVersion", {})
    assert run.calls == [("GetLocalListVersion", {})]
    assert run.answer_with([{"listVersion": 9}]) == {"versionNumber": 9}
    assert run.answer_with([{"listVersion": -1}]) == {"versionNumber": 0}


def test_reserve_now_and_cancel() -> None:
    run = Run(
        "ReserveNow",
        {
            "id": 31,
            "expiryDateTime": "2026-11-30T11:00:00Z",
            "idToken": token(),
            "groupIdToken": token("G"),
            "evseId": 2,
        },
    )
    assert run.calls == [
        (
            "ReserveNow",
            {
                "connectorId": 2,
                "expiryDate": "2026-11-30T11:00:00Z",
                "idTag": "TAG-1",
                "reservationId": 31,
                "parentIdTag": "G",
            },
        )
    ]
    assert run.answer_with([{"status": "Occupied"}]) == {"status": "Occupied"}
    anywhere = Run("ReserveNow", {"id": 32, "expiryDateTime": "2026-11-30T11:00:00Z", "idToken": token()})
    assert anywhere.calls[0][1]["connectorId"] == 0
    cancel = Run("CancelReservation", {"reservationId": 31})
    assert cancel.calls == [("CancelReservation", {"reservationId": 31})]
    assert cancel.answer_with([{"status": "Accepted"}]) == {"status": "Accepted"}


# -- firmware and logs ------------------------------------------------------------------


def test_update_firmware_remembers_its_request_id() -> None:
    state = a_state()
    payload = {
        "requestId": 5,
        "retries": 2,
        "retryInterval": 30,
        "firmware": {"location": "https://fw.example/v2.bin", "retrieveDateTime": "2026-11-30T12:00:00Z"},
    }
    run = Run("UpdateFirmware", payload, state)
    assert run.calls == [
        (
            "UpdateFirmware",
            {
                "location": "https://fw.example/v2.bin",
                "retrieveDate": "2026-11-30T12:00:00Z",
                "retries": 2,
                "retryInterval": 30,
            },
        )
    ]
    assert state.firmware_request_id == 5
    assert run.answer_with([{}]) == {"status": "Accepted"}
    assert state.firmware_request_id == 5


def test_signed_firmware_goes_as_signed_update_firmware() -> None:
    firmware = {
        "location": "https://fw.example/v2.bin",
        "retrieveDateTime": "2026-11-30T12:00:00Z",
        "installDateTime": "2026-11-30T13:00:00Z",
        "signingCertificate": "-----BEGIN CERTIFICATE-----",
        "signature": "c2ln",
    }
    run = Run("UpdateFirmware", {"requestId": 6, "firmware": firmware})
    assert run.calls == [("SignedUpdateFirmware", {"requestId": 6, "firmware": firmware})]
    assert run.answer_with([{"status": "InvalidCertificate"}]) == {"status": "InvalidCertificate"}
    unsigned = {k: v for k, v in firmware.items() if k != "signature"}
    half = Run("UpdateFirmware", {"requestId": 7, "firmware": unsigned})
    assert half.calls == [] and half.answer_with([])["status"] == "Rejected"


def test_firmware_location_that_is_no_uri_is_rejected() -> None:
    run = Run(
        "UpdateFirmware",
        {"requestId": 1, "firmware": {"location": "fw.bin", "retrieveDateTime": "2026-11-30T12:00:00Z"}},
    )
    assert run.calls == [] and run.answer_with([])["statusInfo"]["reasonCode"] == "InvalidURL"


def test_get_log_is_get_diagnostics() -> None:
    state = a_state()
    log = {
        "remoteLocation": "ftp://logs.example/",
        "oldestTimestamp": "2026-11-29T00:00:00Z",
        "latestTimestamp": "2026-11-30T00:00:00Z",
    }
    run = Run("GetLog", {"logType": "DiagnosticsLog", "requestId": 3, "retries": 1, "log": log}, state)
    assert run.calls == [
        (
            "GetDiagnostics",
            {
                "location": "ftp://logs.example/",
                "retries": 1,
                "startTime": "2026-11-29T00:00:00Z",
                "stopTime": "2026-11-30T00:00:00Z",
            },
        )
    ]
    assert state.log_request_id == 3
    assert run.answer_with([{"fileName": "diag.zip"}]) == {"status": "Accepted", "filename": "diag.zip"}
    assert state.log_request_id == 3
    assert run.answer_with([{}])["status"] == "Rejected"  # nothing to upload
    assert state.log_request_id is None


def test_security_log_is_not_supported() -> None:
    result = refused(
        "GetLog", {"logType": "SecurityLog", "requestId": 1, "log": {"remoteLocation": "ftp://x/"}}
    )
    assert result.error_code == "NotSupported" and result.description


# -- coverage of the 2.0.1 actions ------------------------------------------------------


def test_every_csms_action_is_translated_or_refused_with_a_reason() -> None:
    assert set(HANDLERS) <= CSMS_ACTIONS
    assert set(NO_COUNTERPART) <= CSMS_ACTIONS
    assert set(HANDLERS) | set(NO_COUNTERPART) == CSMS_ACTIONS
    assert not set(HANDLERS) & set(NO_COUNTERPART)


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("GetReport", {"requestId": 1}),
        (
            "SetNetworkProfile",
            {
                "configurationSlot": 1,
                "connectionData": {
                    "ocppVersion": "OCPP20",
                    "ocppTransport": "JSON",
                    "ocppCsmsUrl": "wss://x",
                    "messageTimeout": 30,
                    "securityProfile": 1,
                    "ocppInterface": "Wired0",
                },
            },
        ),
        ("GetChargingProfiles", {"requestId": 1, "chargingProfile": {}}),
        ("ClearDisplayMessage", {"id": 1}),
        ("CustomerInformation", {"requestId": 1, "report": True, "clear": False}),
    ],
)
def test_actions_without_counterpart_are_refused_not_supported(action: str, payload: Payload) -> None:
    result = refused(action, payload)
    assert result.error_code == "NotSupported"
    assert NO_COUNTERPART[action] in result.description


def test_station_actions_from_the_csms_are_refused() -> None:
    assert refused("Heartbeat", {}).error_code == "NotSupported"


# -- properties -------------------------------------------------------------------------

tenths = st.integers(min_value=0, max_value=10**7).map(lambda n: n / 10)
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)).map(
    lambda d: d.replace(microsecond=0).isoformat() + "Z"
)


@st.composite
def profiles_201(draw: st.DrawFn, limits: st.SearchStrategy[float] = tenths) -> Payload:
    starts = sorted(draw(st.sets(st.integers(min_value=1, max_value=86400), max_size=6)))
    periods = []
    for start in [0, *starts]:
        period: Payload = {"startPeriod": start, "limit": draw(limits)}
        if draw(st.booleans()):
            period["numberPhases"] = draw(st.integers(min_value=1, max_value=3))
        periods.append(period)
    schedule: Payload = {
        "id": draw(st.integers(min_value=0, max_value=1000)),
        "chargingRateUnit": draw(st.sampled_from(["A", "W"])),
        "chargingSchedulePeriod": periods,
    }
    for name, strategy in (
        ("duration", st.integers(min_value=0, max_value=10**6)),
        ("startSchedule", instants),
        ("minChargingRate", tenths),
    ):
        if draw(st.booleans()):
            schedule[name] = draw(strategy)
    kind = draw(st.sampled_from(["Absolute", "Recurring", "Relative"]))
    profile: Payload = {
        "id": draw(st.integers(min_value=0, max_value=2**31 - 1)),
        "stackLevel": draw(st.integers(min_value=0, max_value=100)),
        "chargingProfilePurpose": draw(
            st.sampled_from(["ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile"])
        ),
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
    }
    if kind == "Recurring":
        profile["recurrencyKind"] = draw(st.sampled_from(["Daily", "Weekly"]))
    for name in ("validFrom", "validTo"):
        if draw(st.booleans()):
            profile[name] = draw(instants)
    if profile["chargingProfilePurpose"] == "TxProfile" and draw(st.booleans()):
        profile["transactionId"] = "tx-7"
    return profile


def _without_schedule_ids(profile: Payload) -> Payload:
    return {
        **profile,
        "chargingSchedule": [{k: v for k, v in s.items() if k != "id"} for s in profile["chargingSchedule"]],
    }


@settings(max_examples=300)
@given(profiles_201())
def test_a_profile_survives_1_6_and_back(profile: Payload) -> None:
    validate(V201, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile}, request=True)
    state = a_state()
    p16 = profile_to_16(profile, lambda tx: next((k for k, v in state.tx201_of.items() if v == tx), None))
    validate(V16, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": p16}, request=True)
    back = profile_to_201(p16, state.tx201_of)
    assert _without_schedule_ids(back) == _without_schedule_ids(profile)


@settings(max_examples=300)
@given(profiles_201(limits=st.floats(min_value=0, max_value=1e9, allow_nan=False)))
def test_limits_are_rounded_down_to_what_1_6_takes(profile: Payload) -> None:
    p16 = profile_to_16(profile, lambda tx: 7)
    validate(V16, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": p16}, request=True)
    before = profile["chargingSchedule"][0]["chargingSchedulePeriod"]
    after = p16["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["startPeriod"] for p in after] == [p["startPeriod"] for p in before]
    for old, new in zip(before, after, strict=True):
        assert old["limit"] - 0.1 - 1e-6 * max(1.0, old["limit"]) <= new["limit"] <= old["limit"]


def test_limits_out_of_range_are_refused() -> None:
    with pytest.raises(ProfileError):
        profile_to_16(
            profile_201(
                chargingSchedule=[
                    {
                        "id": 1,
                        "chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1e300}],
                    }
                ]
            ),
            lambda tx: None,
        )


variable_items = st.one_of(
    st.sampled_from([var(e.component, e.variable, e.instance) for e in config_keys.KEYS]),
    st.builds(lambda name: var("OCPP16Configuration", name), st.text("ABCxyz", min_size=1, max_size=50)),
    st.builds(
        lambda c, v: var(c, v),
        st.text("QRSxyz", min_size=1, max_size=50),
        st.text("ab", min_size=1, max_size=50),
    ),
    st.sampled_from(
        [var("OCPPCommCtrlr", "Nope"), var("OCPPCommCtrlr", "HeartbeatInterval", attributeType="MaxSet")]
    ),
)
set_statuses = st.one_of(
    st.none(),
    st.sampled_from(["Accepted", "Rejected", "RebootRequired", "NotSupported"]).map(lambda s: {"status": s}),
)


@settings(max_examples=200)
@given(st.lists(st.tuples(variable_items, st.text(max_size=600)), min_size=1, max_size=12), st.data())
def test_every_set_variable_gets_exactly_one_result_in_order(
    items: list[tuple[Payload, str]], data: st.DataObject
) -> None:
    request = [{**item, "attributeValue": value} for item, value in items]
    run = Run("SetVariables", {"setVariableData": request})
    answers = [data.draw(set_statuses) for _ in run.calls]
    results = run.answer_with(answers)["setVariableResult"]
    assert [(r["component"], r["variable"]) for r in results] == [
        (i["component"], i["variable"]) for i in request
    ]
    asked = [
        n
        for n, i in enumerate(request)
        if i.get("attributeType", "Actual") == "Actual"
        and len(i["attributeValue"]) <= 500
        and not isinstance(config_keys.key_of(i["component"], i["variable"]), config_keys.Unknown)
    ]
    assert len(run.calls) == len(asked)
    expected = {"Accepted": "Accepted", "Rejected": "Rejected", "RebootRequired": "RebootRequired"}
    for n, answer in zip(asked, answers, strict=True):
        status = "Rejected" if answer is None else expected.get(answer["status"], "UnknownVariable")
        assert results[n]["attributeStatus"] == status


@settings(max_examples=200)
@given(st.lists(variable_items, min_size=1, max_size=12), st.data())
def test_every_get_variable_gets_exactly_one_result_in_order(
    items: list[Payload], data: st.DataObject
) -> None:
    run = Run("GetVariables", {"getVariableData": items})
    answers: list[Payload | None] = []
    if run.calls:
        keys = run.calls[0][1]["key"]
        known = data.draw(st.lists(st.sampled_from(keys), unique=True))
        answers = [
            {
                "configurationKey": [{"key": k, "readonly": False, "value": "1"} for k in known],
                "unknownKey": [k for k in keys if k not in known],
            }
        ]
    results = run.answer_with(answers)["getVariableResult"]
    assert [(r["component"], r["variable"]) for r in results] == [
        (i["component"], i["variable"]) for i in items
    ]


config_entries = st.lists(
    st.builds(
        lambda key, readonly, value: {
            "key": key,
            "readonly": readonly,
            **({} if value is None else {"value": value}),
        },
        st.one_of(st.sampled_from(sorted(config_keys.BY_KEY)), st.text("KLMnop", min_size=1, max_size=50)),
        st.booleans(),
        st.one_of(st.none(), st.text(max_size=500)),
    ),
    max_size=180,
    unique_by=lambda e: e["key"],
)


@settings(max_examples=100)
@given(config_entries, st.sampled_from(["FullInventory", "ConfigurationInventory"]))
def test_a_base_report_reports_every_key_once_in_numbered_parts(entries: list[Payload], base: str) -> None:
    run = Run("GetBaseReport", {"requestId": 4, "reportBase": base})
    station = {"configurationKey": entries}
    status = run.answer_with([station])["status"]
    reports = [payload for _, payload in run.follow_up([station])]
    expected = [e for e in entries if base == "FullInventory" or not e["readonly"]]
    assert status == ("Accepted" if expected else "EmptyResultSet")
    assert [r["seqNo"] for r in reports] == list(range(len(reports)))
    assert [r["tbc"] for r in reports] == [True] * (len(reports) - 1) + [False] * bool(reports)
    reported = [
        (d["component"]["name"], d["variable"]["name"], d["variable"].get("instance"))
        for r in reports
        for d in r["reportData"]
    ]
    names = [config_keys.names_of(e["key"]) for e in expected]
    assert reported == [(c["name"], v["name"], v.get("instance")) for c, v, _ in names]


def test_violations_are_what_the_schema_checks_raise() -> None:
    # The harness above relies on validate() raising for a bad 1.6 call.
    with pytest.raises(OcppViolation):
        validate(V16, "RemoteStopTransaction", {"transactionId": "tx-7"}, request=True)


# One request per translated action (each valid 2.0.1).
SAMPLES: list[tuple[str, Payload]] = [
    ("RequestStartTransaction", {"idToken": token(), "remoteStartId": 1, "evseId": 1}),
    ("RequestStopTransaction", {"transactionId": "tx-7"}),
    ("GetTransactionStatus", {"transactionId": "tx-7"}),
    ("Reset", {"type": "Immediate"}),
    ("ChangeAvailability", {"operationalStatus": "Operative"}),
    ("UnlockConnector", {"evseId": 1, "connectorId": 1}),
    ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "acme"}),
    ("GetVariables", {"getVariableData": [var("OCPPCommCtrlr", "HeartbeatInterval")]}),
    (
        "SetVariables",
        {"setVariableData": [{**var("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "60"}]},
    ),
    ("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}),
    ("SetChargingProfile", {"evseId": 1, "chargingProfile": profile_201()}),
    ("ClearChargingProfile", {}),
    ("GetCompositeSchedule", {"evseId": 1, "duration": 60}),
    ("SendLocalList", {"versionNumber": 1, "updateType": "Full"}),
    ("GetLocalListVersion", {}),
    ("ReserveNow", {"id": 1, "expiryDateTime": "2026-11-30T11:00:00Z", "idToken": token()}),
    ("CancelReservation", {"reservationId": 1}),
    (
        "UpdateFirmware",
        {"requestId": 1, "firmware": {"location": "https://x/f", "retrieveDateTime": "2026-11-30T11:00:00Z"}},
    ),
    ("GetLog", {"logType": "DiagnosticsLog", "requestId": 1, "log": {"remoteLocation": "https://x/"}}),
]


def test_the_samples_cover_every_translated_action() -> None:
    assert {action for action, _ in SAMPLES} == set(HANDLERS)


@pytest.mark.parametrize(("action", "payload"), SAMPLES, ids=[a for a, _ in SAMPLES])
@pytest.mark.parametrize("garbage", [{}, {"status": None}, {"configurationKey": [{}]}, {"listVersion": "x"}])
def test_an_unreadable_station_answer_counts_as_none(action: str, payload: Payload, garbage: Payload) -> None:
    run = Run(action, payload)
    translated = run.translated
    answers = [garbage] * len(translated.calls)
    answer = translated.answer(answers)
    validate(V201, action, answer, request=False)
    for out in translated.follow_up(answers):
        validate(V201, out.action, out.payload, request=True)


def _schema_enum(action: str) -> set[str]:
    schema = json.loads(
        (Path(ocpp.__file__).parent / "v201/schemas" / f"{action}Response.json").read_text("utf-8-sig")
    )
    status = schema["properties"]["status"]
    ref = status["$ref"].split("/")[-1]
    return set(schema["definitions"][ref]["enum"])


@pytest.mark.parametrize("action", sorted(ANSWER_STATUSES))
def test_the_answer_statuses_are_the_schemas(action: str) -> None:
    assert ANSWER_STATUSES[action] == _schema_enum(action)


def test_a_connector_charging_by_its_status_counts_as_busy() -> None:
    state = TranslationState(connector_status={1: "Charging"})
    assert Run("UnlockConnector", {"evseId": 1, "connectorId": 1}, state).answer_with([]) == {
        "status": "OngoingAuthorizedTransaction"
    }
    assert Run("Reset", {"type": "OnIdle"}, state).calls == []


# -- purity ----------------------------------------------------------------------------

IO = {"asyncio", "socket", "websockets", "ocpp", "time", "os", "threading", "subprocess", "random", "sqlite3"}
TRANSLATION = Path(__file__).resolve().parents[2] / "ocpp_side" / "translation"


@pytest.mark.parametrize("module", ["downward", "config_keys", "charging_profiles"])
def test_the_downward_core_does_no_io_and_reads_no_clock(module: str) -> None:
    source = (TRANSLATION / f"{module}.py").read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name.split(".")[0] for name in imported} & IO
    assert {name for name in imported if name.startswith("ocpp_side")} <= {
        "ocpp_side.translation",
        "ocpp_side.translation.api",
        "ocpp_side.translation.charging_profiles",
    }
    assert ".now(" not in source and "utcnow" not in source
