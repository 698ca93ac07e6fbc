"""IEC 104 fuzzing without sockets: the codec, ``translate_command`` and the core's decision.

Invariants (issue 13):

- the codec reads any octets into a frame/ASDU or refuses them with ``PeerInputError``,
  never another exception;
- it reads back exactly what a setpoint command carries (cause bits, addresses, value
  octets, QOS, time tag), and writes the same octets again;
- the command path the outstation runs (decode -> ``translate_command`` -> core) never
  decides a positive confirmation for a command the standard or the design calls
  invalid, always confirms a valid one, and applies nothing with the T bit set.
"""

from __future__ import annotations

import math
import struct

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.core.arbiter import Arbiter
from gateway.core.decisions import ConfirmSetpoint, RejectSetpoint
from gateway.core_build import arbiter_settings
from gateway.errors import PeerInputError
from iec104.codec import IFrame, decode_asdu, decode_frame, encode_asdu
from iec104.points import CommandIn, CommandRefused, SetpointTest, point_specs, translate_command
from iec104.settings import PointMap
from tests.fuzz.iec104_cases import (
    COMMON_ADDRESS,
    Command,
    Verdict,
    commands,
    near_valid_setpoints,
    valid_setpoints,
)
from tests.fuzz.raw104 import i_frame

NOW = 1_790_000_000.0
SPECS = point_specs(PointMap())
NEGATIVE_ZERO = struct.pack("<f", -0.0)
# Streams are not shrunk: a failure names the offending frame or command already, and
# shrinking a stream of big frames can outlast the test timeout.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def new_core() -> Arbiter:
    return Arbiter.start(arbiter_settings(parse_config({"metrics": {"enabled": False}})), None, NOW)


def command_in(asdu_octets: bytes) -> CommandIn | None:
    """What the outstation hands to ``translate_command`` (``Iec104Outstation._command_from``)."""
    try:
        asdu = decode_asdu(asdu_octets)
    except PeerInputError:
        return None
    if not asdu.objects:
        return None
    obj = asdu.objects[0]
    value = float(obj.value) if isinstance(obj.value, int | float) else math.nan
    return CommandIn(
        asdu.type_id,
        obj.ioa,
        asdu.common_address,
        asdu.cot,
        value,
        obj.time_tag,
        "fuzz",
        test=asdu.test,
        negative=asdu.negative,
    )


def decide(core: Arbiter, octets: bytes, now: float) -> tuple[bool, bool]:
    """(confirmed positively, applied) for one command, as the outstation decides it."""
    command = command_in(octets)
    if command is None:
        return False, False
    translated = translate_command(command, COMMON_ADDRESS, SPECS)
    if isinstance(translated, CommandRefused):
        return False, False
    if isinstance(translated, SetpointTest):
        return core.check_setpoint(translated.event, now) is None, False
    decisions = core.handle(translated, now)
    confirmed = any(isinstance(d, ConfirmSetpoint) for d in decisions)
    assert confirmed != any(isinstance(d, RejectSetpoint) for d in decisions), decisions
    return confirmed, confirmed


# -- the codec ------------------------------------------------------------------------------


@settings(FUZZ, max_examples=250)
@given(data=st.one_of(st.binary(max_size=300), commands().map(lambda c: c.asdu(NOW))))
def test_codec_refuses_only_with_peer_input_error(data: bytes) -> None:
    for octets, decode in ((data, decode_asdu), (i_frame(0, 0, data), decode_frame), (data, decode_frame)):
        try:
            decode(octets)
        except PeerInputError:
            pass


@settings(FUZZ, max_examples=200)
@given(
    command=st.one_of(valid_setpoints(), near_valid_setpoints()).filter(
        lambda c: c.single_setpoint is not None
    )
)
def test_codec_reads_a_setpoint_command_exactly(command: Command) -> None:
    octets = command.asdu(NOW)
    frame = decode_frame(i_frame(3, 7, octets))
    assert isinstance(frame, IFrame) and (frame.send_seq, frame.recv_seq, frame.asdu) == (3, 7, octets)
    asdu = decode_asdu(octets)
    sent = command.objects[0]
    assert (asdu.type_id, asdu.cot, asdu.test, asdu.negative) == (
        command.type_id,
        command.cot,
        command.test,
        command.negative,
    )
    assert (asdu.common_address, asdu.originator, asdu.sequence) == (
        command.common_address,
        command.originator,
        False,
    )
    (obj,) = asdu.objects
    assert obj.ioa == sent.ioa and obj.select == bool(sent.qos & 0x80) and obj.qualifier == sent.qos & 0x7F
    assert isinstance(obj.value, float)
    if math.isnan(sent.float_value):
        assert math.isnan(obj.value)
    else:
        assert struct.pack("<f", obj.value) == sent.value  # the very octets, -0 and subnormals included
    if sent.value == NEGATIVE_ZERO or math.isnan(sent.float_value):
        # -0.0: test_encode_asdu_keeps_negative_zero. NaN: a float32 NaN becomes a Python
        # float (a double), which quiets a signalling NaN; its octets cannot come back.
        return
    tag = sent.tag
    if command.type_id == 63 and tag is not None and tag.raw is None:
        assert obj.time_tag is not None and obj.time_tag.invalid == tag.iv
        assert abs(obj.time_tag.timestamp_s - (NOW + tag.offset_s)) < 0.0011
        if not tag.su and not tag.wrong_dow:
            assert encode_asdu(asdu) == octets
    elif command.type_id == 50:
        assert encode_asdu(asdu) == octets


def test_encode_asdu_keeps_negative_zero() -> None:
    """Found by the fuzz test above; harmless today (only the test master encodes, and
    -0 W is refused either way), but the codec should write the octets it read."""
    octets = bytes((50, 1, 6, 0, 1, 0, 100, 0, 0)) + NEGATIVE_ZERO + b"\x00"
    assert encode_asdu(decode_asdu(octets)) == octets


# -- the command path -------------------------------------------------------------------------


@settings(FUZZ, phases=NO_SHRINK, max_examples=250)
@given(stream=st.lists(commands(), min_size=1, max_size=12))
def test_command_path_confirms_exactly_the_valid_setpoints(stream: list[Command]) -> None:
    core = new_core()
    applied_octets: bytes | None = None  # the value octets of the last setpoint applied
    initial_w = core.limit_w
    now = NOW
    for command in stream:
        verdict = command.verdict(latency_s=0.0, wire=False)
        confirmed, applied = decide(core, command.asdu(now), now)
        if verdict is Verdict.INVALID:
            assert not confirmed, f"positive confirmation for an invalid command: {command}"
        elif verdict is Verdict.VALID:
            assert confirmed, f"valid setpoint refused: {command} ({command.objects[0].float_value!r})"
        if applied:
            assert not command.test, f"a test command was applied: {command}"
            applied_octets = command.objects[0].value
        # The limit in force is the value the master sent (read as the shortest decimal that
        # gives the same float32: 16384.6875 reads 16384.688), or the initial one.
        if applied_octets is None:
            assert core.limit_w == initial_w
        else:
            assert struct.pack("<f", core.limit_w) == applied_octets, (command, core.limit_w)
        now += 0.25
