"""The Series 4 dialect normaliser, pure: frames in, frames and leniencies out, no socket."""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.model import OcppVersion
from ocpp_side import schemas
from ocpp_side.codec import OcppViolation
from ocpp_side.legacy.dialect import DialectSettings, Leniency, UnitDialect, normalise, schema
from scenarios.legacy_unit import loosen
from tests.legacy.strategies import STATION_CALLS, STATION_REPLIES, from_schema, json_values

V16 = OcppVersion.V16
UTC_ZONE = zoneinfo.ZoneInfo("UTC")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
SERIAL = "VX4-000123"


def _mend(action: str, payload: dict[str, Any], zone: Any = UTC_ZONE, request: bool = True) -> Any:
    return normalise(action, payload, request, DialectSettings(zone, SERIAL))


# -- each leniency -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loose", "valid"),
    [
        ({"connectorId": "1"}, {"connectorId": 1}),
        ({"connectorId": "+2"}, {"connectorId": 2}),
        ({"connectorId": "3.0"}, {"connectorId": 3}),  # a whole number written with a point
        ({"connectorId": "-1"}, {"connectorId": -1}),  # still a number; the schema has no minimum
    ],
)
def test_decimal_strings_become_integers(loose: dict[str, Any], valid: dict[str, Any]) -> None:
    payload = {"meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}
    mended, found = _mend("MeterValues", {**payload, **loose})
    assert mended == {**payload, **valid} and found == {Leniency.STRING_NUMBER}


@pytest.mark.parametrize("text", ["1.5", "1e3", "0x10", "", " 1", "1 ", "١٢", "NaN", "Infinity", "1" * 40])
def test_what_is_no_decimal_integer_stays_and_is_refused(text: str) -> None:
    payload = {"connectorId": text, "errorCode": "NoError", "status": "Available"}
    mended, found = _mend("StatusNotification", payload)
    assert mended == payload and not found
    with pytest.raises(OcppViolation):
        schemas.validate(V16, "StatusNotification", mended, request=True)


def test_decimal_strings_become_numbers_where_the_schema_wants_a_number() -> None:
    reply = {"status": "Accepted", "connectorId": "1", "scheduleStart": "2026-01-01T00:00:00Z"}
    schedule = {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": "0", "limit": "11000.5", "numberPhases": "3"}],
        "minChargingRate": ".5",
    }
    mended, found = _mend("GetCompositeSchedule", {**reply, "chargingSchedule": schedule}, request=False)
    assert mended["chargingSchedule"] == {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.5, "numberPhases": 3}],
        "minChargingRate": 0.5,
    }
    assert found == {Leniency.STRING_NUMBER}


def test_strings_where_the_schema_wants_strings_stay() -> None:
    payload = {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Available",
        "info": "42",
        "vendorErrorCode": "7",
    }
    assert _mend("StatusNotification", payload) == (payload, frozenset())


@pytest.mark.parametrize(
    ("local", "zone", "utc"),
    [
        ("2026-01-15T08:30:00", BERLIN, "2026-01-15T07:30:00Z"),  # CET
        ("2026-07-15T08:30:00", BERLIN, "2026-07-15T06:30:00Z"),  # CEST
        ("2026-07-15 08:30:00.250", BERLIN, "2026-07-15T06:30:00.250000Z"),
        ("2026-07-15T08:30", UTC_ZONE, "2026-07-15T08:30:00Z"),
        ("2026-03-29T02:30:00", BERLIN, "2026-03-29T01:30:00Z"),  # in the spring gap: read as CET
    ],
)
def test_naive_timestamps_are_read_in_the_zone_and_written_in_utc(local: str, zone: Any, utc: str) -> None:
    payload = {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": local}
    mended, found = _mend("StatusNotification", payload, zone)
    assert mended["timestamp"] == utc and found == {Leniency.NAIVE_TIMESTAMP}
    schemas.validate(V16, "StatusNotification", mended, request=True)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-15T08:30:00Z",
        "2026-01-15T08:30:00+01:00",
        "2026-01-15",
        "yesterday",
        "2026-02-30T00:00:00",
        "",
    ],
)
def test_timestamps_with_a_zone_or_no_time_at_all_stay(stamp: str) -> None:
    payload = {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": stamp}
    assert _mend("StatusNotification", payload, BERLIN) == (payload, frozenset())


def test_unknown_fields_are_dropped_at_every_level() -> None:
    payload = {
        "connectorId": 1,
        "s4Uptime": "12",
        "meterValue": [
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "s4Quality": "good",
                "sampledValue": [{"value": "1", "s4Raw": 17}],
            }
        ],
    }
    mended, found = _mend("MeterValues", payload)
    assert mended == {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}],
    }
    assert found == {Leniency.UNKNOWN_FIELD}


def test_boot_without_serial_gets_the_hellos() -> None:
    boot = {"chargePointVendor": "Voltex", "chargePointModel": "S4-ULTRA"}
    assert _mend("BootNotification", boot) == (
        {**boot, "chargePointSerialNumber": SERIAL},
        {Leniency.BOOT_WITHOUT_SERIAL},
    )
    own = {**boot, "chargePointSerialNumber": "OWN-1"}
    assert _mend("BootNotification", own) == (own, frozenset())  # its own serial is kept
    long = normalise("BootNotification", boot, True, DialectSettings(UTC_ZONE, "X" * 26))
    assert long == (boot, frozenset())  # a serial the schema cannot take is not added


def test_what_is_still_wrong_is_left_for_strict_validation() -> None:
    payload = {"connectorId": "1", "errorCode": "NoError", "status": "Sleeping"}
    mended, _ = _mend("StatusNotification", payload)
    with pytest.raises(OcppViolation, match="status"):
        schemas.validate(V16, "StatusNotification", mended, request=True)


# -- frames ----------------------------------------------------------------------------------


def test_a_frame_without_leniencies_is_handed_on_as_sent() -> None:
    dialect = UnitDialect(DialectSettings(UTC_ZONE, SERIAL))
    for text in [
        '[2, "a", "Heartbeat", {}]',
        "not json",
        '[2,"b","Exterminate",{"x":"1"}]',
        '[3,"c",{"x":1}]',
    ]:
        assert dialect.received(text).data == text and not dialect.received(text).leniencies


@pytest.mark.parametrize(
    "action", ["../../../../etc/passwd", "Heartbeat/../MeterValues", "heartbeat", "A" * 300]
)
def test_an_action_not_in_16_names_no_schema(action: str) -> None:
    assert schema(action, True) is None and schema(action, False) is None
    assert _mend(action, {"connectorId": "1"}) == ({"connectorId": "1"}, frozenset())


def test_replies_are_mended_along_the_call_they_answer() -> None:
    dialect = UnitDialect(DialectSettings(UTC_ZONE, SERIAL))
    dialect.sent(b'[2,"ocpp809-1","SetChargingProfile",{"connectorId":0}]')
    dialect.sent(b'[3,"x",{}]')  # the gateway's answers are not calls
    loose = '[3,"ocpp809-1",{"status":"Accepted","s4Uptime":"7"}]'
    mended = dialect.received(loose)
    assert json.loads(mended.data) == [3, "ocpp809-1", {"status": "Accepted"}]
    assert mended.leniencies == {Leniency.UNKNOWN_FIELD}
    assert dialect.received(loose).data == loose  # answered once: a second reply is not mended


def test_the_calls_in_flight_are_bounded() -> None:
    dialect = UnitDialect(DialectSettings(UTC_ZONE, SERIAL))
    for n in range(100):  # a unit that never answers
        dialect.sent(f'[2,"id{n}","GetConfiguration",{{}}]'.encode())
    assert dialect.received('[3,"id0",{"x":1}]').data == '[3,"id0",{"x":1}]'
    assert dialect.received('[3,"id99",{"x":1}]').leniencies == {Leniency.UNKNOWN_FIELD}


# -- properties ------------------------------------------------------------------------------

ZONES = st.sampled_from([UTC_ZONE, zoneinfo.ZoneInfo("Asia/Kolkata"), zoneinfo.ZoneInfo("Etc/GMT+11")])


def _instant(value: Any) -> Any:
    """Timestamps compared as instants (the normaliser writes UTC with microseconds)."""
    if isinstance(value, dict):
        return {k: _instant(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_instant(v) for v in value]
    if isinstance(value, str) and value.endswith("Z"):
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return value  # a string that merely ends in Z
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), zone=ZONES)
def test_the_simulators_dialect_normalises_back_to_what_it_loosened(data: st.DataObject, zone: Any) -> None:
    """Any valid 1.6 frame a unit sends, loosened as ``sim stations --legacy`` does (every number
    a string, every timestamp local without a zone, an unknown field, no serial in a boot),
    comes out valid and equal to the original, each leniency named."""
    kind, action = data.draw(
        st.sampled_from([("call", a) for a in STATION_CALLS] + [("reply", a) for a in STATION_REPLIES])
    )
    request = kind == "call"
    payload = data.draw(from_schema(schema(action, request)))
    if action == "BootNotification":
        payload.pop("chargePointSerialNumber", None)
    frame = [2, "u1", action, payload] if request else [3, "u1", payload]
    dialect = UnitDialect(DialectSettings(zone, SERIAL))
    if not request:
        dialect.sent(json.dumps([2, "u1", action, {}]).encode())
    normalised = dialect.received(loosen(json.dumps(frame), zone))
    mended = json.loads(normalised.data)[-1]
    schemas.validate(V16, action, mended, request=request)
    expected = {**payload, "chargePointSerialNumber": SERIAL} if action == "BootNotification" else payload
    assert _instant(mended) == _instant(expected)
    assert Leniency.UNKNOWN_FIELD in normalised.leniencies


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.sampled_from(STATION_CALLS), payload=json_values(), zone=ZONES)
def test_whatever_a_unit_sends_comes_out_valid_or_is_refused(action: str, payload: Any, zone: Any) -> None:
    """Anything at all: the normaliser never raises; its output validates, or strict validation
    refuses it (the session answers a CALLERROR); normalising twice changes nothing more."""
    if not isinstance(payload, dict):
        payload = {"value": payload}
    settings_ = DialectSettings(zone, SERIAL)
    mended, _ = normalise(action, payload, True, settings_)
    try:
        schemas.validate(V16, action, mended, request=True)
    except OcppViolation:
        pass
    assert normalise(action, mended, True, settings_) == (mended, frozenset())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_16_goes_through_untouched(data: st.DataObject) -> None:
    action = data.draw(st.sampled_from(STATION_CALLS))
    payload = data.draw(from_schema(schema(action, True)))
    if action == "BootNotification":
        payload.setdefault("chargePointSerialNumber", "OWN-1")
    assert _mend(action, payload, BERLIN) == (payload, frozenset())


def test_a_relayed_csms_call_written_with_spaces_is_watched_too() -> None:
    dialect = UnitDialect(DialectSettings(UTC_ZONE, SERIAL))
    dialect.sent(b' [ 2 , "csms-7" , "GetConfiguration" , {} ]')
    assert dialect.received('[3,"csms-7",{"configurationKey":[],"s4Uptime":"1"}]').leniencies == {
        Leniency.UNKNOWN_FIELD
    }
