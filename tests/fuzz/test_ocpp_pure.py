"""OCPP-J fuzzing without sockets: the codec and ``StationSession`` against generated frames.

Invariants (issue 13):

- ``parse_frame`` reads anything (text or bytes, any depth or size) into a frame or a
  ``FrameError``: it never raises;
- a ``StationSession`` never raises, answers every frame that is not a well-formed reply
  exactly once, in order, with the id OCPP-J wants; every malformed CALL gets a
  CALLERROR (with the code OCPP fixes where it fixes one), every valid CALL of a served
  action a schema-valid CALLRESULT; replies to nothing and duplicate ids change nothing;
- whatever the meter readings say, the core's site total stays finite and plausible.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.core.arbiter import Arbiter
from gateway.core.decisions import PublishTotalPower
from gateway.core.events import MeterSampled, StationConnected
from gateway.core.model import OcppVersion
from gateway.core_build import arbiter_settings
from ocpp_side.answers import StandaloneAnswers
from ocpp_side.codec import Call, CallError, CallResult, FrameError, parse_frame
from ocpp_side.limit_slot import ProfileBook
from ocpp_side.peer_log import PeerLog
from ocpp_side.profiles import ProfileSettings, RateUnit, StationCaps
from ocpp_side.session import SessionContext, StationSession
from ocpp_side.station_id import _ID_FORBIDDEN, parse_station_id
from ocpp_side.station_setup import Discovered, MeteringPlan
from ocpp_side.versions import rules_for
from tests.fuzz.ocpp_cases import (
    V16,
    V201,
    Frame,
    check_answer,
    expect,
    frames,
    response_valid,
    schema_valid,
    station_actions,
    valid_calls,
)

NOW = 1_790_000_000.0
STATION_MAX_W = 22000.0
# Streams are not shrunk: a failure names the offending frame or command already, and
# shrinking a stream of big frames can outlast the test timeout.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
VERSIONS = st.sampled_from([V16, V201])


def _caps_for(station_id: str, discovered: Discovered) -> StationCaps:
    return StationCaps(discovered.preferred_unit() or RateUnit.A, 3, 230.0, discovered.max_stack_level)


def new_session(version: OcppVersion) -> StationSession:
    ctx = SessionContext(
        call_timeout_s=10.0,
        retry_base_s=1.0,
        boot_wait_s=5.0,
        configure_metering=True,
        metering_plan=MeteringPlan(60, 900, ("Energy.Active.Import.Register", "Power.Active.Import")),
        caps_for=_caps_for,
        known_caps={},
        profiles=ProfileBook(ProfileSettings(809002, 809001, 8, 7)),
        answers=StandaloneAnswers(300, None, first_transaction_id=100),
        peer_log=PeerLog(),
    )
    return StationSession(ctx, rules_for(version), "CP1", NOW)


def new_core() -> Arbiter:
    """A core with CP1 connected, so its meter readings count toward the site total."""
    arbiter = Arbiter.start(arbiter_settings(parse_config({"metrics": {"enabled": False}})), None, NOW)
    arbiter.handle(StationConnected("CP1", OcppVersion.V16, STATION_MAX_W, 4140.0), NOW)
    return arbiter


# -- the codec alone ------------------------------------------------------------------------


_ANY_TEXT = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(0, 5000).map(lambda n: "[" * n + "]" * n),
    # Lone surrogates: no websocket delivers them (it checks UTF-8), a str may still hold them.
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3).map(
        lambda s: '[2,"a","Heartbeat",{"x":"' + s + '"}]'
    ),
    st.integers(0, 5000).map(lambda n: '[2,"a","Heartbeat",' + '{"a":' * n + "1" + "}" * n + "]"),
)


@settings(FUZZ, max_examples=200)
@given(data=st.one_of(_ANY_TEXT, VERSIONS.flatmap(frames).map(lambda f: f.data)))
def test_parse_frame_reads_anything(data: str | bytes) -> None:
    frame = parse_frame(data)
    assert isinstance(frame, Call | CallResult | CallError | FrameError)
    if isinstance(frame, FrameError):
        assert isinstance(frame.unique_id, str) and len(frame.unique_id) <= 36


@settings(FUZZ, max_examples=25)
@given(version=VERSIONS, data=st.data())
def test_generated_valid_calls_are_schema_valid(version: OcppVersion, data: st.DataObject) -> None:
    """The generator itself: its "valid" calls mostly are (else the suite tests little)."""
    drawn = [data.draw(valid_calls(version)) for _ in range(5)]
    verdicts = [expect(version, frame.data).answer for frame in drawn]
    assert verdicts.count("result") >= 3, [f.data[:200] for f in drawn]


# -- a session ------------------------------------------------------------------------------


def _reply_for(version: OcppVersion, call: list[Any], how: str) -> str | None:
    """The station's reply to one of the gateway's own calls: none, an error, garbage or a guess."""
    if how == "silent":
        return None
    if how == "error":
        return orjson.dumps([4, call[1], "NotSupported", "", {}]).decode()
    if how == "garbage":
        return orjson.dumps([3, call[1], {"bogus": [[["x"]]]}]).decode()
    return orjson.dumps([3, call[1], {"status": "Accepted"}]).decode()


class Harness:
    """One station by hand: frames in, every answer checked against the oracle at once."""

    def __init__(self, version: OcppVersion) -> None:
        self.version = version
        self.session = new_session(version)
        self.core = new_core()
        self.now = NOW
        self.pending_calls: list[list[Any]] = []  # the gateway's calls, not yet answered
        self.problems: list[str] = []
        self.totals: list[float] = []

    def send(self, frame: Frame) -> None:
        expected = expect(self.version, frame.data)
        self.session.receive_frame(frame.data, self.now)
        answers = self._read()
        if expected.answer is None:
            if answers:
                self.problems.append(f"{frame!r} is a reply: answered with {str(answers)[:300]}")
        elif len(answers) != 1:
            self.problems.append(f"{frame!r} ({expected.why}): {len(answers)} answers {str(answers)[:300]}")
        else:
            problem = check_answer(self.version, frame, expected, answers[0])
            if problem is not None:
                self.problems.append(problem)
            elif answers[0][0] == 3:
                action = orjson.loads(frame.data)[2]
                # Our own answer must be schema-valid for the station too.
                response_ok = response_valid(self.version, action, answers[0][2])
                if not response_ok:
                    self.problems.append(f"{frame!r}: answer {answers[0]!r:.300} breaks the response schema")
        self._feed_core()
        self.now += 0.5

    def reply_to_gateway(self, how: str) -> None:
        if not self.pending_calls:
            return
        call = self.pending_calls.pop(0)
        reply = _reply_for(self.version, call, how)
        if reply is not None:
            self.session.receive_frame(reply, self.now)
            if self._read():
                self.problems.append(f"a reply to the gateway's {call[2]} was answered")
            self._feed_core()

    def _read(self) -> list[Any]:
        answers = []
        for raw in self.session.frames_to_send(self.now):
            frame = orjson.loads(raw)
            if frame[0] == 2:
                self.pending_calls.append(frame)
            else:
                answers.append(frame)
        return answers

    def _feed_core(self) -> None:
        for event in self.session.events():
            if isinstance(event, MeterSampled):
                for decision in self.core.handle(event, self.now):
                    if isinstance(decision, PublishTotalPower):
                        self.totals.append(decision.power_w)


@settings(FUZZ, phases=NO_SHRINK, max_examples=100)
@given(version=VERSIONS, data=st.data())
def test_session_answers_every_frame_as_ocpp_j_requires(version: OcppVersion, data: st.DataObject) -> None:
    harness = Harness(version)
    stream = data.draw(st.lists(frames(version), min_size=1, max_size=15), label="stream")
    for frame in stream:
        harness.send(frame)
        harness.reply_to_gateway(data.draw(st.sampled_from(["silent", "error", "garbage", "accepted"])))
    assert not harness.problems, "\n".join(harness.problems)
    bound_w = 1.5 * STATION_MAX_W
    assert all(math.isfinite(w) and 0.0 <= w <= bound_w for w in harness.totals), harness.totals


# A station whose meter lies: the session reads it, the core never publishes it.
_METER_VALUES = {
    V16: lambda value, unit: {
        "connectorId": 0,
        "meterValue": [
            {
                "timestamp": "2026-09-21T14:13:20Z",
                "sampledValue": [{"value": value, "measurand": "Power.Active.Import", "unit": unit}],
            }
        ],
    },
    V201: lambda value, unit: {
        "evseId": 0,
        "meterValue": [
            {
                "timestamp": "2026-09-21T14:13:20Z",
                "sampledValue": [
                    {
                        "value": value,
                        "measurand": "Power.Active.Import",
                        "unitOfMeasure": {"unit": unit[0], "multiplier": unit[1]},
                    }
                ],
            }
        ],
    },
}


@settings(FUZZ, max_examples=100)
@given(
    version=VERSIONS,
    readings=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(
                    ["7200", "1e39", "inf", "nan", "-1e39", "1e400", "1e-320", "0", "33000", "32999"]
                ),
                st.floats(allow_nan=False, allow_infinity=False).map(repr),
            ),
            st.sampled_from(["W", "kW"]),
            st.one_of(st.integers(-400, 400), st.sampled_from([0, 0, 3, 308, 309, 2**31 - 1, -(2**31)])),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_no_reading_poisons_the_site_total(
    version: OcppVersion, readings: list[tuple[str, str, int]]
) -> None:
    harness = Harness(version)
    for index, (text, unit, multiplier) in enumerate(readings):
        if version is V16:
            payload = _METER_VALUES[V16](text, unit)
        else:
            payload = _METER_VALUES[V201](
                float(text) if math.isfinite(float(text)) else 1e308, (unit, multiplier)
            )
        frame = Frame(orjson.dumps([2, f"m{index}", "MeterValues", payload]).decode(), "valid")
        if schema_valid(version, "MeterValues", payload):
            harness.send(frame)
    assert not harness.problems, "\n".join(harness.problems)
    assert all(math.isfinite(w) and 0.0 <= w <= 1.5 * STATION_MAX_W for w in harness.totals), harness.totals


# -- station ids at the handshake --------------------------------------------------------------

_ID_CHARS = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in _ID_FORBIDDEN)


@settings(FUZZ, max_examples=200)
@given(
    path=st.one_of(
        st.text(max_size=80),
        st.text(max_size=60).map(lambda s: "/" + quote(s, safe="")),
        st.text(max_size=60).map(lambda s: "/ocpp/" + quote(s, safe="/%")),
        st.sampled_from(["/CP1%0D%0A2026 INFO forged", "/CP%00", "/..%2F..%2Fetc", "/%2E%2E", "/", ""]),
    )
)
def test_a_station_id_is_printable_without_separators_or_refused(path: str) -> None:
    """Issue 13: ids that forge log lines (CR LF), NUL or path tricks are refused at the
    handshake; whatever is taken fits in a log line, a path and a URL."""
    station_id = parse_station_id(path)
    if isinstance(station_id, str):
        assert 1 <= len(station_id) <= 48 and all(c in _ID_CHARS for c in station_id), station_id
        assert station_id not in (".", ".."), station_id


@settings(FUZZ, max_examples=100)
@given(station_id=st.text(alphabet=_ID_CHARS, min_size=1, max_size=48).filter(lambda s: s not in (".", "..")))
def test_every_acceptable_station_id_is_taken(station_id: str) -> None:
    assert parse_station_id("/" + quote(station_id, safe="")) == station_id


@pytest.mark.parametrize("version", [V16, V201])
def test_every_station_action_is_in_the_generator(version: OcppVersion) -> None:
    assert "MeterValues" in station_actions(version) and "BootNotification" in station_actions(version)
