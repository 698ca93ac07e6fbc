"""session.py without sockets: frames and explicit time in, frames, events and deadlines out.

Like h11's tests: each test plays the station's end by hand (``Station`` below) against
one ``StationSession``; nothing here opens a socket, starts a task or reads a clock.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core.decisions import ApplyStationLimit
from gateway.core.events import MeterSampled, ProfileResult, StationActivity
from gateway.core.model import LimitSource, OcppVersion, ProfileOutcome
from ocpp_side.answers import StandaloneAnswers
from ocpp_side.codec import Call
from ocpp_side.limit_slot import ProfileBook
from ocpp_side.peer_log import PeerLog
from ocpp_side.profiles import ProfileSettings, RateUnit, StationCaps
from ocpp_side.session import (
    GATEWAY_ID_PREFIX,
    CallFailure,
    RelayedAnswered,
    SessionContext,
    SessionEvent,
    StationCalled,
    StationSession,
)
from ocpp_side.station_setup import Discovered, MeteringPlan
from ocpp_side.versions import rules_for

NOW = 1_790_000_000.0
V16, V201 = OcppVersion.V16, OcppVersion.V201
TS = "2026-09-21T14:13:20Z"
LIVE_ID, FALLBACK_ID = 809002, 809001
PLAN = MeteringPlan(60, 900, ("Energy.Active.Import.Register", "Power.Active.Import"))
BOOT = {
    V16: {"chargePointVendor": "V", "chargePointModel": "M"},
    V201: {"reason": "PowerUp", "chargingStation": {"vendorName": "V", "model": "M"}},
}
DISCOVERED_W = {
    V16: {
        "configurationKey": [
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Power"}
        ]
    },
    V201: {
        "getVariableResult": [
            {
                "attributeStatus": "Accepted",
                "attributeValue": "W",
                "component": {"name": "SmartChargingCtrlr"},
                "variable": {"name": "RateUnit"},
            }
        ]
    },
}


def caps_for(station_id: str, discovered: Discovered) -> StationCaps:
    return StationCaps(discovered.preferred_unit() or RateUnit.A, 3, 230.0, discovered.max_stack_level)


def context(metering: bool = False, known: dict[str, StationCaps] | None = None) -> SessionContext:
    return SessionContext(
        call_timeout_s=10.0,
        retry_base_s=1.0,
        boot_wait_s=5.0,
        configure_metering=metering,
        metering_plan=PLAN,
        caps_for=caps_for,
        known_caps={} if known is None else known,
        profiles=ProfileBook(ProfileSettings(LIVE_ID, FALLBACK_ID, 8, 7)),
        answers=StandaloneAnswers(300, None, first_transaction_id=100),
        peer_log=PeerLog(),
    )


def allocation(seq: int, limit_w: float = 11000.0, fallback_w: float = 4000.0) -> ApplyStationLimit:
    return ApplyStationLimit("CP1", limit_w, fallback_w, seq, LimitSource.DSO_SETPOINT, NOW + 600.0)


class Station:
    """The station's end of one session, by hand: it writes frames and reads what comes back."""

    def __init__(self, version: OcppVersion = V16, ctx: SessionContext | None = None) -> None:
        self.version = version
        self.ctx = ctx or context()
        self.now = NOW
        self.session = StationSession(self.ctx, rules_for(version), "CP1", NOW)
        self._ids = 0

    def send(self, frame: list[Any] | str | bytes) -> None:
        data = frame if isinstance(frame, str | bytes) else orjson.dumps(frame).decode()
        self.session.receive_frame(data, self.now)

    def read(self) -> list[list[Any]]:
        """Everything the session wants sent now, decoded."""
        return [orjson.loads(f) for f in self.session.frames_to_send(self.now)]

    def call(self, action: str, payload: dict[str, Any]) -> list[list[Any]]:
        self._ids += 1
        self.send([2, f"st-{self._ids}", action, payload])
        return self.read()

    def answer(self, call: list[Any], payload: dict[str, Any]) -> list[list[Any]]:
        self.send([3, call[1], payload])
        return self.read()

    def events(self) -> list[SessionEvent]:
        return list(self.session.events())

    def at(self, now: float) -> list[list[Any]]:
        """Time passes to ``now``: whatever fell due happens."""
        self.now = now
        self.session.handle_timeout(now)
        return self.read()

    def frames(self) -> list[bytes]:
        return list(self.session.frames_to_send(self.now))

    def booted(self, limit: ApplyStationLimit | None = None) -> list[Any]:
        """Boot and answer discovery (the station takes W); the call it then gets: with an
        allocation from the core, its live profile."""
        if limit is not None:
            self.session.set_limit(limit)
        result, discovery = self.call("BootNotification", BOOT[self.version])
        assert result[0] == 3 and result[2]["status"] == "Accepted"
        assert discovery[2] == ("GetConfiguration" if self.version is V16 else "GetVariables")
        after = self.answer(discovery, DISCOVERED_W[self.version])
        assert len(after) <= 1
        return after[0] if after else []


def profile_limit(call: list[Any]) -> float:
    payload = call[3]
    profile = payload.get("csChargingProfiles") or payload["chargingProfile"]
    schedule = profile["chargingSchedule"]
    schedule = schedule if isinstance(schedule, dict) else schedule[0]
    return float(schedule["chargingSchedulePeriod"][0]["limit"])


def profile_id(call: list[Any]) -> int:
    payload = call[3]
    profile = payload.get("csChargingProfiles") or payload["chargingProfile"]
    return int(profile.get("chargingProfileId") or profile["id"])


ACCEPTED = {"status": "Accepted"}
REJECTED = {"status": "Rejected"}


# -- opening ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V16, V201])
def test_boot_then_discovery_then_both_levels_then_accepted(version: OcppVersion) -> None:
    st = Station(version)
    st.session.set_limit(allocation(1))
    assert st.read() == []  # nothing before the station boots or speaks
    live = st.booted()
    assert live[2] == "SetChargingProfile" and profile_id(live) == LIVE_ID and profile_limit(live) == 11000.0
    assert live[1].startswith(GATEWAY_ID_PREFIX)
    (fallback,) = st.answer(live, ACCEPTED)
    assert profile_id(fallback) == FALLBACK_ID and profile_limit(fallback) == 4000.0
    assert st.events() == []  # not whole yet
    assert st.answer(fallback, ACCEPTED) == []
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.ACCEPTED)]
    assert st.session.next_deadline() is None


def test_a_station_that_never_boots_is_set_up_after_boot_wait() -> None:
    st = Station()
    assert st.session.next_deadline() == NOW + 5.0
    assert st.at(NOW + 4.9) == []
    (discovery,) = st.at(NOW + 5.0)
    assert discovery[2] == "GetConfiguration"


def test_any_first_message_opens_the_session_and_known_caps_skip_discovery() -> None:
    known = {"CP1": StationCaps(RateUnit.W)}
    st = Station(ctx=context(known=known))
    st.session.set_limit(allocation(1))
    result, live = st.call("Heartbeat", {})
    assert result[0] == 3 and "currentTime" in result[2]
    assert live[2] == "SetChargingProfile" and profile_limit(live) == 11000.0  # W, no discovery


def test_discovery_is_remembered_for_the_next_connection_but_not_after_a_boot() -> None:
    ctx = context()
    Station(ctx=ctx).booted(allocation(1))
    assert ctx.known_caps["CP1"].rate_unit is RateUnit.W
    again = Station(ctx=ctx)  # the station reconnects
    again.session.set_limit(allocation(2))
    _, live = again.call(
        "StatusNotification", {"connectorId": 0, "errorCode": "NoError", "status": "Available"}
    )
    assert live[2] == "SetChargingProfile"  # no discovery
    (result,) = again.call("BootNotification", BOOT[V16])  # one call in flight: the answer only
    assert result[0] == 3
    (fallback,) = again.answer(live, ACCEPTED)  # the limit slot goes before the setup's calls
    (discovery,) = again.answer(fallback, ACCEPTED)
    assert discovery[2] == "GetConfiguration"  # a boot: the station may have changed


# -- the limit slot ------------------------------------------------------------------------


def test_allocations_coalesce_while_the_station_is_busy() -> None:
    st = Station()
    live1 = st.booted(allocation(1, 11000.0))
    st.session.set_limit(allocation(2, 9000.0))
    st.session.set_limit(allocation(3, 7000.0))
    assert st.read() == []  # one call in flight: nothing more goes out
    (live3,) = st.answer(live1, ACCEPTED)
    assert profile_id(live3) == LIVE_ID and profile_limit(live3) == 7000.0  # 2 never went out
    (fallback,) = st.answer(live3, ACCEPTED)
    assert st.answer(fallback, ACCEPTED) == []
    assert st.events() == [ProfileResult("CP1", 3, ProfileOutcome.ACCEPTED)]


def test_an_allocation_accepted_whole_is_reported_even_once_replaced() -> None:
    st = Station()
    live1 = st.booted(allocation(1, 11000.0, 4000.0))
    (fallback1,) = st.answer(live1, ACCEPTED)
    st.session.set_limit(allocation(2, 9000.0, 4000.0))  # same fallback share
    (live2,) = st.answer(fallback1, ACCEPTED)
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.ACCEPTED)]  # 1 is what binds it now
    assert profile_limit(live2) == 9000.0
    assert st.answer(live2, ACCEPTED) == []  # the fallback it holds is 2's too
    assert st.events() == [ProfileResult("CP1", 2, ProfileOutcome.ACCEPTED)]


def test_a_refused_profile_is_reported_once_and_retried_with_backoff() -> None:
    st = Station()
    live = st.booted(allocation(1))
    assert st.answer(live, REJECTED) == []
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.REJECTED)]
    assert st.session.next_deadline() == NOW + 1.0
    assert st.at(NOW + 0.9) == []
    (again,) = st.at(NOW + 1.0)
    assert profile_id(again) == LIVE_ID
    assert st.answer(again, REJECTED) == []
    assert st.events() == []  # the same outcome for the same allocation: told once
    assert st.session.next_deadline() == NOW + 3.0  # 1 s, then 2 s
    (third,) = st.at(NOW + 3.0)
    (fallback,) = st.answer(third, ACCEPTED)
    st.answer(fallback, ACCEPTED)
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.ACCEPTED)]


def test_a_new_allocation_cancels_the_retry_and_goes_at_once() -> None:
    st = Station()
    live = st.booted(allocation(1))
    st.answer(live, REJECTED)
    st.session.set_limit(allocation(2, 8000.0))
    assert st.session.next_deadline() is None
    (live2,) = st.read()
    assert profile_limit(live2) == 8000.0


def test_a_call_error_and_an_invalid_answer_count_as_refusals() -> None:
    st = Station()
    live = st.booted(allocation(1))
    st.send([4, live[1], "NotSupported", "no smart charging", {}])
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.CALL_ERROR)]
    (again,) = st.at(NOW + 1.0)
    assert st.answer(again, {"status": "Maybe"}) == []  # not in the schema
    assert st.events() == []  # CALL_ERROR again, already told


def test_an_unanswered_call_times_out() -> None:
    st = Station()
    live = st.booted(allocation(1))
    assert st.session.next_deadline() == NOW + 10.0
    assert st.at(NOW + 9.9) == [] and st.events() == []
    assert st.at(NOW + 10.0) == []
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.TIMEOUT)]
    st.send([3, live[1], ACCEPTED])  # too late: no call is pending
    assert st.events() == [] and st.read() == []
    (again,) = st.at(NOW + 11.0)  # retried after 1 s
    assert again[1] != live[1] and profile_id(again) == LIVE_ID


def test_one_call_in_flight_and_the_limit_slot_goes_before_queued_calls() -> None:
    st = Station()
    live = st.booted(allocation(1))
    st.session.call("ChangeConfiguration", {"key": "A", "value": "1"})
    st.session.call("ChangeConfiguration", {"key": "B", "value": "2"})
    assert st.read() == []
    (fallback,) = st.answer(live, ACCEPTED)
    assert fallback[2] == "SetChargingProfile"
    (first,) = st.answer(fallback, ACCEPTED)
    assert first[2:] == ["ChangeConfiguration", {"key": "A", "value": "1"}]
    st.session.set_limit(allocation(2, 5000.0))
    assert st.read() == []  # still one at a time
    (live2,) = st.answer(first, ACCEPTED)
    assert live2[2] == "SetChargingProfile"  # the new allocation before the queued call
    (second,) = st.answer(live2, ACCEPTED)
    assert second[3]["key"] == "B"
    ids = [live[1], fallback[1], first[1], live2[1], second[1]]
    assert len(set(ids)) == 5 and all(i.startswith(GATEWAY_ID_PREFIX) and len(i) <= 36 for i in ids)


@pytest.mark.parametrize("version", [V16, V201])
def test_a_reboot_reapplies_both_levels_and_reports_again(version: OcppVersion) -> None:
    st = Station(version)
    live = st.booted(allocation(1))
    (fallback,) = st.answer(live, ACCEPTED)
    st.answer(fallback, ACCEPTED)
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.ACCEPTED)]
    again = st.booted()  # the same allocation: the station may have lost it all
    assert profile_id(again) == LIVE_ID
    (fallback,) = st.answer(again, ACCEPTED)
    assert profile_id(fallback) == FALLBACK_ID
    st.answer(fallback, ACCEPTED)
    assert st.events() == [ProfileResult("CP1", 1, ProfileOutcome.ACCEPTED)]


# -- the station's calls -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "data", "answer"),
    [
        (V16, "not json", [4, "-1", "FormationViolation"]),
        (V201, "not json", [4, "-1", "RpcFrameworkError"]),
        (V201, b"[2]", [4, "-1", "RpcFrameworkError"]),  # a binary frame
        (V201, '[2, "x1", "Heartbeat"]', [4, "x1", "RpcFrameworkError"]),
        (V201, '[9, "x2", {}]', [4, "x2", "MessageTypeNotSupported"]),
        (V16, '[2, "x3", "Reset", {"type": "Hard"}]', [4, "x3", "NotSupported"]),
        (V16, '[2, "x4", "Teleport", {}]', [4, "x4", "NotImplemented"]),
        (V16, '[2, "x5", "Heartbeat", {"x": 1}]', [4, "x5", "FormationViolation"]),
        (
            V201,
            '[2, "x6", "StatusNotification", {"evseId": "one"}]',
            [4, "x6", "OccurrenceConstraintViolation"],
        ),
    ],
)
def test_malformed_frames_are_answered_and_change_nothing(
    version: OcppVersion, data: str | bytes, answer: list[Any]
) -> None:
    st = Station(version)
    st.send(data)
    (error,) = st.read()
    assert error[:3] == answer and len(error) == 5
    assert st.events() == [] and not st.session.opened
    result, discovery = st.call("BootNotification", BOOT[version])  # the session goes on
    assert result[0] == 3 and discovery[0] == 2


def test_meter_values_and_statuses_become_core_events_v16() -> None:
    st = Station()
    st.booted()
    power = {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"}
    (ok,) = st.call(
        "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [power]}]}
    )
    assert ok[2] == {}
    assert st.events() == [MeterSampled("CP1", 7200.0)]
    st.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"})
    assert st.events() == [StationActivity("CP1", True)]
    (started,) = st.call(
        "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": TS}
    )
    tx = started[2]["transactionId"]
    assert st.events() == []  # already charging
    st.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Finishing"})
    assert st.events() == []  # the transaction still runs
    st.call("StopTransaction", {"meterStop": 10, "timestamp": TS, "transactionId": tx})
    assert st.events() == [StationActivity("CP1", False), MeterSampled("CP1", 0.0)]


def test_transaction_events_report_their_evse_v201() -> None:
    st = Station(V201)
    st.booted()
    power = {"value": 3.5, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}}
    event = {
        "eventType": "Started",
        "timestamp": TS,
        "triggerReason": "CablePluggedIn",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "T-1"},
        "evse": {"id": 2},
        "meterValue": [{"timestamp": TS, "sampledValue": [power]}],
    }
    st.call("TransactionEvent", event)
    assert st.events() == [StationActivity("CP1", True), MeterSampled("CP1", 3500.0)]
    ended = {**event, "eventType": "Ended", "seqNo": 1, "triggerReason": "EVDeparted"}
    del ended["evse"], ended["meterValue"]
    st.call("TransactionEvent", ended)
    assert st.events() == [StationActivity("CP1", False), MeterSampled("CP1", 0.0)]


def test_metering_is_set_up_and_a_refused_list_is_trimmed() -> None:
    st = Station(ctx=context(metering=True))
    call: list[Any] | None = st.booted()
    keys = []
    while call:
        keys.append((call[3]["key"], call[3]["value"]))
        refused = call[3]["value"] == ",".join(PLAN.measurands) or call[3]["value"] == PLAN.measurands[0]
        frames = st.answer(call, REJECTED if refused else ACCEPTED)
        call = frames[0] if frames else None
    assert keys[:4] == [
        ("MeterValueSampleInterval", "60"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import"),
        ("ClockAlignedDataInterval", "900"),
        ("MeterValuesAlignedData", "Energy.Active.Import.Register,Power.Active.Import"),
    ]
    # Each refused list again, one measurand at a time: only Power.Active.Import is taken.
    assert keys[4:] == [
        ("MeterValuesSampledData", "Energy.Active.Import.Register"),
        ("MeterValuesSampledData", "Power.Active.Import"),
        ("MeterValuesAlignedData", "Energy.Active.Import.Register"),
        ("MeterValuesAlignedData", "Power.Active.Import"),
    ]
    # What it took is reported (the log and the status page): intervals whole, lists trimmed.
    assert st.session.metering == (
        "MeterValueSampleInterval=60; MeterValuesSampledData=Power.Active.Import;"
        " ClockAlignedDataInterval=900; MeterValuesAlignedData=Power.Active.Import"
        " (refused: MeterValuesSampledData: Energy.Active.Import.Register;"
        " MeterValuesAlignedData: Energy.Active.Import.Register)"
    )


# -- the relay's side -----------------------------------------------------------------


def test_relayed_station_calls_go_to_the_relay_unanswered() -> None:
    st = Station()
    st.session.relayed = True
    text = '[2,"st-1","Heartbeat",{}]'
    st.send(text)
    assert st.read() == []
    (called,) = st.events()
    assert called == StationCalled(Call("st-1", "Heartbeat", {}), text)
    response = st.session.answer_locally(called.call, NOW)  # the CSMS is away
    assert response is not None
    result, discovery = st.read()  # it spoke: the session opens
    assert result[:2] == [3, "st-1"] and discovery[2] == "GetConfiguration"
    st.session.forward_reply('[3, "st-2", {"currentTime": "x"}]')  # a CSMS answer, verbatim
    assert st.frames() == [b'[3, "st-2", {"currentTime": "x"}]']


def test_a_relayed_csms_call_keeps_its_id_and_text_and_a_clear_reapplies_the_limit() -> None:
    st = Station()
    live = st.booted(allocation(1))
    (fallback,) = st.answer(live, ACCEPTED)
    st.answer(fallback, ACCEPTED)
    st.events()
    clear = Call("csms-42", "ClearChargingProfile", {})
    raw = b'[2,"csms-42","ClearChargingProfile",{ }]'
    st.session.send_relayed(clear, {}, raw, reapply=True)
    assert st.frames() == [raw]  # exactly as the CSMS wrote it
    reply = '[3,"csms-42",{"status":"Accepted"}]'
    st.send(reply)
    (answered,) = st.events()
    assert answered == RelayedAnswered(clear, answered.outcome) and answered.outcome.raw == reply
    (live_again,) = st.read()  # both DSO profiles again
    assert profile_id(live_again) == LIVE_ID
    (fallback_again,) = st.answer(live_again, ACCEPTED)
    assert profile_id(fallback_again) == FALLBACK_ID


def test_the_connection_lost_fails_what_is_pending() -> None:
    st = Station()
    live = st.booted(allocation(1))
    relayed = Call("csms-1", "GetConfiguration", {})
    st.session.send_relayed(relayed, {}, b'[2,"csms-1","GetConfiguration",{}]', reapply=False)
    st.session.connection_lost(NOW + 1.0)
    (answered,) = st.events()  # no core event: the core hears StationDisconnected instead
    assert isinstance(answered, RelayedAnswered) and answered.outcome.failure is CallFailure.CLOSED
    assert st.session.next_deadline() is None and st.read() == []
    st.session.set_limit(allocation(2))
    st.session.call("ChangeConfiguration", {"key": "A", "value": "1"})
    assert not st.session.wants_to_send() and st.read() == []
    assert live[0] == 2
