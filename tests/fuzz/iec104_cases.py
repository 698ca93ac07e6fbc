"""Hypothesis strategies for IEC 60870-5-104 commands a master may send, and their verdict.

A ``Command`` is one ASDU described field by field (type id, VSQ, cause with its T and P/N
bits, originator, common address, information objects, octets cut or appended), so a
strategy can build valid setpoints, near-valid ones (one or two fields wrong) and hostile
ASDUs alike, and the oracle can judge each from the standard and the design's rules,
without the project's codec:

- IEC 60870-5-101/104: a setpoint command is one object (VSQ 0x01) with cause activation
  (6); P/N belongs to confirmations, never to a command; T marks a test ASDU that must not
  act on the process (it may be confirmed, never applied); S/E = 1 is a select, which the
  gateway's default DIRECT command mode refuses;
- the design (``/work/shared/DESIGN.md``): IOA 100 takes C_SE_NC_1 and IOA 101 C_SE_TC_1 at
  common address 1; a value is valid when finite and within [min_limit_w, max_limit_w];
  a time tag must be valid (IV clear) and no older than ``max_command_age_s`` nor further
  ahead than ``future_tolerance_s``.

Verdicts are three-valued: ``VALID`` (must be confirmed positively), ``INVALID`` (must never
be confirmed positively) and ``EITHER`` where the standard leaves the choice to the
outstation (a qualifier QL other than 0, a day of week that does not match the date, a
system command c104 answers itself) or a time tag lies too close to an age limit to judge.
Time tags are kept as offsets from "now" and written when the frame is sent.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum

from hypothesis import strategies as st

C_SE_NC_1, C_SE_TC_1 = 50, 63
SETPOINT_IOA = {C_SE_NC_1: 100, C_SE_TC_1: 101}
COMMON_ADDRESS = 1
ACTIVATION = 6
MIN_W, MAX_W = 6000.0, 100000.0  # the defaults of gateway/config.py (limits)
MAX_AGE_S, FUTURE_S = 30.0, 5.0
SYSTEM_TYPES = range(100, 108)  # interrogation, clock sync, read, test, reset: c104 answers them itself
MAX_ASDU = 249  # the APDU length octet counts at most 253 = 4 (control field) + 249


class Verdict(Enum):
    VALID = "valid"
    INVALID = "invalid"
    EITHER = "either"


def _worst(*verdicts: Verdict) -> Verdict:
    if Verdict.INVALID in verdicts:
        return Verdict.INVALID
    if Verdict.EITHER in verdicts:
        return Verdict.EITHER
    return Verdict.VALID


# -- CP56Time2a (IEC 60870-5-4 / -101 7.2.6.18), written here, not with iec104.codec ----------


def cp56(timestamp_s: float, *, iv: bool = False, su: bool = False, dow: int | None = None) -> bytes:
    dt = datetime.fromtimestamp(timestamp_s, UTC)
    ms = dt.second * 1000 + dt.microsecond // 1000
    weekday = dt.isoweekday() if dow is None else dow
    return bytes(
        (
            ms & 0xFF,
            ms >> 8,
            dt.minute | (0x80 if iv else 0),
            dt.hour | (0x80 if su else 0),
            dt.day | (weekday << 5),
            dt.month,
            dt.year % 100,
        )
    )


@dataclass(frozen=True)
class TimeTag:
    """A time tag ``offset_s`` from the moment it is sent, or ``raw`` octets (a broken one)."""

    offset_s: float = 0.0
    iv: bool = False
    su: bool = False
    wrong_dow: bool = False
    raw: bytes | None = None

    def octets(self, now_s: float) -> bytes:
        if self.raw is not None:
            return self.raw
        at = now_s + self.offset_s
        dow = None
        if self.wrong_dow:
            dow = datetime.fromtimestamp(at, UTC).isoweekday() % 7 + 1
        return cp56(at, iv=self.iv, su=self.su, dow=dow)

    def verdict(self, latency_s: float) -> Verdict:
        """``latency_s``: how much older than ``offset_s`` says the tag may be when judged."""
        if self.raw is not None or self.iv:
            return Verdict.INVALID
        age_low, age_high = -self.offset_s, -self.offset_s + latency_s
        if age_low > MAX_AGE_S + 1 or -age_high > FUTURE_S + 1:
            return Verdict.INVALID
        if age_high < MAX_AGE_S - 1 and -age_low < FUTURE_S - 1:
            return Verdict.EITHER if self.wrong_dow else Verdict.VALID
        return Verdict.EITHER  # too close to a limit to tell


# -- a command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """One information object: IOA and element. Setpoints carry value octets, QOS and a tag."""

    ioa: int
    value: bytes = b"\x00\x00\x00\x00"  # IEEE 754 short float, little-endian
    qos: int = 0  # S/E (bit 7) and QL (bits 0-6)
    tag: TimeTag | None = None
    element: bytes | None = None  # raw element octets for other types (no value/qos/tag then)

    def octets(self, type_id: int, now_s: float) -> bytes:
        ioa = self.ioa.to_bytes(3, "little")
        if self.element is not None:
            return ioa + self.element
        body = ioa + self.value + bytes((self.qos,))
        if type_id == C_SE_TC_1 or self.tag is not None:
            body += (self.tag or TimeTag()).octets(now_s)
        return body

    @property
    def float_value(self) -> float:
        return float(struct.unpack("<f", self.value)[0])


@dataclass(frozen=True)
class Command:
    type_id: int
    objects: tuple[Obj, ...]
    cot: int = ACTIVATION
    test: bool = False
    negative: bool = False
    originator: int = 0
    common_address: int = COMMON_ADDRESS
    sequence: bool = False  # SQ bit of the VSQ
    count: int | None = None  # VSQ number of objects; None: len(objects)
    cut: int = 0  # octets cut off the end
    extra: bytes = b""  # octets appended

    def asdu(self, now_s: float, originator: int | None = None) -> bytes:
        count = len(self.objects) if self.count is None else self.count
        cause = (self.cot & 0x3F) | (0x40 if self.negative else 0) | (0x80 if self.test else 0)
        head = bytes(
            (
                self.type_id,
                (count & 0x7F) | (0x80 if self.sequence else 0),
                cause,
                (self.originator if originator is None else originator) & 0xFF,
            )
        )
        head += self.common_address.to_bytes(2, "little")
        body = b"".join(o.octets(self.type_id, now_s) for o in self.objects)
        data = head + body + self.extra
        return data[: len(data) - self.cut] if self.cut else data

    @property
    def is_setpoint(self) -> bool:
        return self.type_id in SETPOINT_IOA

    @property
    def single_setpoint(self) -> Obj | None:
        """The one setpoint object when the ASDU is framed as a command must be."""
        if (
            self.type_id not in SETPOINT_IOA
            or len(self.objects) != 1
            or self.count not in (None, 1)
            or self.sequence
            or self.cut != len(self.extra)  # octets cut or left over
            or self.objects[0].element is not None
        ):
            return None
        return self.objects[0]

    def verdict(self, latency_s: float = 5.0, *, wire: bool = True) -> Verdict:
        """Must a positive confirmation come (VALID), may it (EITHER), or never (INVALID)?

        ``wire=False`` judges the pure translation path, which by design leaves S/E and the
        one-object rule of a command to c104 (lib60870 drops a multi-object setpoint and
        refuses a select in DIRECT mode before the gateway sees it).
        """
        if self.type_id in SYSTEM_TYPES:
            return Verdict.EITHER
        if (
            self.type_id not in SETPOINT_IOA
            or not self.objects
            or any(o.element is not None for o in self.objects)
            or self.cut != len(self.extra)  # octets cut or left over (appended, then cut again: fine)
        ):
            return Verdict.INVALID
        framing = Verdict.VALID
        if len(self.objects) != 1 or self.count not in (None, 1) or self.sequence:
            if wire or self.count not in (None, len(self.objects)):
                return Verdict.INVALID
            framing = Verdict.EITHER  # the pure path reads the first object; c104 never passes these on
        obj = self.objects[0]
        if (
            self.common_address != COMMON_ADDRESS
            or obj.ioa != SETPOINT_IOA[self.type_id]
            or self.cot != ACTIVATION
            or self.negative
        ):
            return Verdict.INVALID
        value = obj.float_value
        value_ok = Verdict.VALID if math.isfinite(value) and MIN_W <= value <= MAX_W else Verdict.INVALID
        select = Verdict.VALID if not obj.qos & 0x80 else Verdict.INVALID if wire else Verdict.EITHER
        qualifier = Verdict.VALID if obj.qos & 0x7F == 0 else Verdict.EITHER
        tag = Verdict.VALID
        if self.type_id == C_SE_TC_1:
            tag = (obj.tag or TimeTag()).verdict(latency_s)
        return _worst(framing, value_ok, select, qualifier, tag)


# -- strategies ------------------------------------------------------------------------------


def _f32(value: float) -> bytes:
    return struct.pack("<f", value)


def _bits(bits: int) -> bytes:
    return struct.pack("<I", bits)


_F32_6000, _F32_100000 = struct.unpack("<I", _f32(MIN_W))[0], struct.unpack("<I", _f32(MAX_W))[0]
SPECIAL_VALUES = [
    _bits(0x00000000),  # +0
    _bits(0x80000000),  # -0
    _bits(0x7FC00000),  # quiet NaN
    _bits(0x7F800001),  # signalling NaN
    _bits(0xFFC00000),  # negative NaN
    _bits(0x7FC01234),  # NaN with a payload
    _bits(0x7F800000),  # +inf
    _bits(0xFF800000),  # -inf
    _bits(0x00000001),  # smallest subnormal
    _bits(0x007FFFFF),  # largest subnormal
    _bits(0x80000001),  # negative subnormal
    _bits(0x7F7FFFFF),  # largest finite
    _bits(_F32_6000 - 1),  # just below the minimum
    _f32(MIN_W),  # the minimum
    _f32(MAX_W),  # the maximum
    _bits(_F32_100000 + 1),  # just above the maximum
    _f32(-20000.0),
    _f32(20.0),  # 20 kW sent as kW to a point in W
]

valid_values = st.floats(MIN_W, MAX_W, width=32).map(lambda v: struct.pack("<f", v))
any_values = st.one_of(
    valid_values,
    st.sampled_from(SPECIAL_VALUES),
    st.floats(width=32, allow_nan=False).map(lambda v: struct.pack("<f", v)),
    st.floats(0.0, 200.0, width=32).map(lambda v: struct.pack("<f", v)),  # kW by mistake
    st.binary(min_size=4, max_size=4),
)
# Invalid values where a missing or off-by-some check would hide: just out of range, not
# finite (every kind of NaN, both infinities), zero, subnormal.
bad_values = st.one_of(
    st.floats(MAX_W, 4 * MAX_W, width=32, exclude_min=True).map(_f32),
    st.floats(-MIN_W, MIN_W, width=32, exclude_max=True).map(_f32),
    st.sampled_from([v for v in SPECIAL_VALUES if not MIN_W <= struct.unpack("<f", v)[0] <= MAX_W]),
)

valid_tags = st.builds(TimeTag, offset_s=st.floats(-10.0, 1.0), su=st.booleans())
any_tags = st.one_of(
    valid_tags,
    st.builds(TimeTag, offset_s=st.floats(-1e8, -120.0)),  # stale
    st.builds(TimeTag, offset_s=st.floats(60.0, 1e8)),  # from the future
    st.builds(TimeTag, offset_s=st.floats(-40.0, 10.0)),  # around the limits (EITHER near them)
    st.builds(TimeTag, offset_s=st.floats(-5.0, 0.0), iv=st.just(True)),  # IV bit
    st.builds(TimeTag, offset_s=st.floats(-5.0, 0.0), wrong_dow=st.just(True)),
    st.builds(
        TimeTag,
        raw=st.one_of(
            st.binary(min_size=7, max_size=7),
            st.sampled_from(
                [
                    bytes((0x70, 0xEA, 0, 0, 1, 1, 26)),  # 60,000 ms
                    bytes((0, 0, 60, 0, 1, 1, 26)),  # minute 60
                    bytes((0, 0, 0, 24, 1, 1, 26)),  # hour 24
                    bytes((0, 0, 0, 0, 0, 1, 26)),  # day 0
                    bytes((0, 0, 0, 0, 1, 13, 26)),  # month 13
                    bytes((0, 0, 0, 0, 31, 2, 26)),  # 31 February
                    bytes(7),
                    b"\xff" * 7,
                ]
            ),
        ),
    ),
)


@st.composite
def valid_setpoints(draw: st.DrawFn) -> Command:
    type_id = draw(st.sampled_from([C_SE_NC_1, C_SE_TC_1]))
    tag = draw(valid_tags) if type_id == C_SE_TC_1 else None
    obj = Obj(SETPOINT_IOA[type_id], draw(valid_values), 0, tag)
    return Command(type_id, (obj,))


_MUTATIONS = (
    "value",
    "value",
    "tag",
    "tag",
    "cot",
    "test",
    "negative",
    "ca",
    "ioa",
    "type",
    "select",
    "qualifier",
    "count",
    "sequence",
    "two_objects",
    "cut",
    "extra",
    "originator",
)


@st.composite
def near_valid_setpoints(draw: st.DrawFn) -> Command:
    """A valid setpoint with one or two fields changed."""
    command = draw(valid_setpoints())
    for _ in range(draw(st.integers(1, 2))):
        obj = command.objects[0]
        how = draw(st.sampled_from(_MUTATIONS))
        if how == "value":
            obj = replace(obj, value=draw(any_values))
        elif how == "tag":
            command = replace(command, type_id=C_SE_TC_1)
            obj = replace(obj, ioa=SETPOINT_IOA[C_SE_TC_1], tag=draw(any_tags))
        elif how == "cot":
            command = replace(command, cot=draw(st.integers(0, 63)))
        elif how == "test":
            command = replace(command, test=True)
        elif how == "negative":
            command = replace(command, negative=True)
        elif how == "ca":
            command = replace(command, common_address=draw(st.sampled_from([0, 2, 0xFFFF, 0x0100])))
        elif how == "ioa":
            obj = replace(
                obj, ioa=draw(st.sampled_from([0, 99, 101, 100, 200, 201, 300, 0xFFFFFF, 0x010064]))
            )
        elif how == "type":
            # Another command type, its element kept: a setpoint's octets under a foreign type id.
            command = replace(
                command, type_id=draw(st.sampled_from([45, 46, 47, 48, 49, 51, 58, 61, 62, 64]))
            )
        elif how == "select":
            obj = replace(obj, qos=obj.qos | 0x80)
        elif how == "qualifier":
            obj = replace(obj, qos=(obj.qos & 0x80) | draw(st.integers(1, 127)))
        elif how == "count":
            command = replace(command, count=draw(st.sampled_from([0, 2, 3, 127])))
        elif how == "sequence":
            command = replace(command, sequence=True)
        elif how == "two_objects":
            command = replace(command, objects=(obj, replace(obj, value=draw(any_values))))
        elif how == "cut":
            command = replace(command, cut=draw(st.integers(1, 8)))
        elif how == "extra":
            command = replace(command, extra=draw(st.binary(min_size=1, max_size=8)))
        else:
            command = replace(command, originator=draw(st.integers(1, 255)))
        command = replace(command, objects=(obj,) + command.objects[1:])
    return command


@st.composite
def hostile_asdus(draw: st.DrawFn) -> Command:
    """Any type id (setpoints and system commands weighted up), any cause, any octets."""
    type_id = draw(
        st.one_of(
            st.sampled_from([C_SE_NC_1, C_SE_TC_1]),
            st.integers(45, 64),
            st.sampled_from(list(SYSTEM_TYPES)),
            st.integers(0, 255),
        )
    )
    objects: list[Obj] = []
    for _ in range(draw(st.integers(0, 3))):
        ioa = draw(st.one_of(st.sampled_from([0, 100, 101, 200, 201, 300, 301]), st.integers(0, 2**24 - 1)))
        if type_id in SETPOINT_IOA and draw(st.booleans()):
            tag = draw(any_tags) if type_id == C_SE_TC_1 else None
            objects.append(Obj(ioa, draw(any_values), draw(st.integers(0, 255)), tag))
        else:
            objects.append(Obj(ioa, element=draw(st.binary(max_size=16))))
    return Command(
        type_id,
        tuple(objects),
        cot=draw(st.one_of(st.just(ACTIVATION), st.integers(0, 63))),
        test=draw(st.booleans()),
        negative=draw(st.booleans()),
        originator=draw(st.integers(0, 255)),
        common_address=draw(st.one_of(st.just(COMMON_ADDRESS), st.integers(0, 0xFFFF))),
        sequence=draw(st.booleans()),
        count=draw(st.one_of(st.none(), st.integers(0, 127))),
        cut=draw(st.integers(0, 4)),
        extra=draw(st.binary(max_size=6)),
    )


def commands() -> st.SearchStrategy[Command]:
    """Valid, near-valid and hostile commands, about a fifth each; valid ones with T set, and
    valid ones with a bad value (out of range, not finite), make the rest."""
    tests = valid_setpoints().map(lambda c: replace(c, test=True))
    out_of_range = st.tuples(valid_setpoints(), bad_values).map(
        lambda cv: replace(cv[0], objects=(replace(cv[0].objects[0], value=cv[1]),))
    )
    return st.one_of(valid_setpoints(), near_valid_setpoints(), hostile_asdus(), tests, out_of_range).filter(
        lambda c: 0 < len(c.asdu(0.0)) <= MAX_ASDU
    )


# -- what breaks the framing (each on a connection of its own) ----------------------------------


@dataclass(frozen=True)
class Breaker:
    """Octets that break IEC 104 framing or sequencing, written after STARTDT (or before)."""

    name: str
    octets: bytes
    before_startdt: bool = False


def _valid_i_frame(send_seq: int = 0, recv_seq: int = 0) -> bytes:
    asdu = bytes((C_SE_NC_1, 1, ACTIVATION, 0, 1, 0, 100, 0, 0)) + struct.pack("<f", 20000.0) + b"\x00"
    ns, nr = send_seq << 1, recv_seq << 1
    return bytes((0x68, 4 + len(asdu), ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8)) + asdu


breakers = st.one_of(
    st.builds(lambda n: Breaker("truncated", _valid_i_frame()[:n]), st.integers(1, 19)),
    st.builds(
        lambda length, body: Breaker("length says more", bytes((0x68, length)) + body),
        st.integers(5, 253),
        st.binary(max_size=4),
    ),
    st.builds(
        lambda length: Breaker("oversized", bytes((0x68, length)) + bytes(length)),
        st.sampled_from([254, 255]),
    ),
    st.builds(lambda length: Breaker("too short", bytes((0x68, length, 0, 0, 0, 0))), st.integers(0, 3)),
    st.builds(
        lambda start: Breaker("bad start", bytes((start,)) + _valid_i_frame()[1:]), st.integers(0, 0x67)
    ),
    st.builds(
        lambda f: Breaker("unknown U function", bytes((0x68, 4, f, 0, 0, 0))),
        st.sampled_from([0x03, 0x0F, 0x17, 0x33, 0xC3, 0xFF, 0x47]),
    ),
    st.builds(lambda ns: Breaker("wrong N(S)", _valid_i_frame(send_seq=ns)), st.integers(1, 32767)),
    st.builds(
        lambda nr: Breaker("S-frame ahead", bytes((0x68, 4, 1, 0, (nr << 1) & 0xFF, nr >> 7))),
        st.integers(5, 32767),
    ),
    st.just(Breaker("I-frame before STARTDT", _valid_i_frame(), before_startdt=True)),
    st.builds(lambda junk: Breaker("garbage", junk), st.binary(min_size=1, max_size=64)),
)
