"""A small IEC 60870-5-104 codec: APCI frames (I/S/U) and the ASDU types ocpp809 uses.

Why our own and not ``scapy.contrib.scada.iec104``: scapy is a large dependency that is
not installed here, its IEC 104 layer decodes floats and CP56Time2a into generic fields
we would have to re-interpret anyway, and a test master must be small enough to read in
one sitting. The codec is pure (bytes in, values out), knows exactly the types below and
keeps anything else as raw bytes instead of failing:

    30 M_SP_TB_1  single point with CP56Time2a     50 C_SE_NC_1  setpoint, short float
    36 M_ME_TF_1  short float with CP56Time2a      63 C_SE_TC_1  setpoint, short float, CP56Time2a
    70 M_EI_NA_1  end of initialisation            100 C_IC_NA_1 general interrogation
                                                   103 C_CS_NA_1 clock synchronisation

Multi-byte fields are little-endian (IEC 60870-5-4); COT is two octets, CA two, IOA three.
"""

from __future__ import annotations

import calendar
import math
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, IntFlag

from gateway.errors import PeerInputError

START = 0x68
MAX_APDU_LENGTH = 253  # octets after the length octet


class TypeId(IntEnum):
    M_SP_NA_1 = 1
    M_SP_TB_1 = 30
    M_ME_NC_1 = 13
    M_ME_TF_1 = 36
    C_SE_NC_1 = 50
    C_SE_TC_1 = 63
    M_EI_NA_1 = 70
    C_IC_NA_1 = 100
    C_CS_NA_1 = 103


class Cot(IntEnum):
    PERIODIC = 1
    BACKGROUND = 2
    SPONTANEOUS = 3
    INITIALISED = 4
    REQUEST = 5
    ACTIVATION = 6
    ACTIVATION_CON = 7
    DEACTIVATION = 8
    DEACTIVATION_CON = 9
    ACTIVATION_TERMINATION = 10
    RETURN_INFO_REMOTE = 11
    INTERROGATED_BY_STATION = 20
    UNKNOWN_TYPE_ID = 44
    UNKNOWN_COT = 45
    UNKNOWN_CA = 46
    UNKNOWN_IOA = 47


class QualityFlag(IntFlag):
    """QDS / SIQ quality bits (IEC 60870-5-101 7.2.6.3/7.2.6.1); OV only exists in QDS."""

    OV = 0x01
    BL = 0x10
    SB = 0x20
    NT = 0x40
    IV = 0x80


NO_FLAGS = QualityFlag(0)


class UFunction(IntEnum):
    STARTDT_ACT = 0x07
    STARTDT_CON = 0x0B
    STOPDT_ACT = 0x13
    STOPDT_CON = 0x23
    TESTFR_ACT = 0x43
    TESTFR_CON = 0x83


# -- CP56Time2a -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cp56Time:
    """A CP56Time2a time tag. ocpp809 reads and writes it as UTC (c104 does the same)."""

    timestamp_s: float
    invalid: bool = False
    summer_time: bool = False

    def to_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_s, UTC)


def encode_cp56(timestamp_s: float, invalid: bool = False) -> bytes:
    ms_total = round(timestamp_s * 1000)
    dt = datetime.fromtimestamp(ms_total // 1000, UTC)
    ms = dt.second * 1000 + ms_total % 1000
    return bytes(
        (
            ms & 0xFF,
            ms >> 8,
            dt.minute | (0x80 if invalid else 0),
            dt.hour,
            dt.day | (dt.isoweekday() << 5),
            dt.month,
            dt.year % 100,
        )
    )


def decode_cp56(data: bytes) -> Cp56Time:
    if len(data) != 7:
        raise PeerInputError(f"CP56Time2a needs 7 octets, got {len(data)}")
    ms = data[0] | data[1] << 8
    minute, hour, day, month, year = (
        data[2] & 0x3F,
        data[3] & 0x1F,
        data[4] & 0x1F,
        data[5] & 0x0F,
        data[6] & 0x7F,
    )
    invalid = bool(data[2] & 0x80)
    summer = bool(data[3] & 0x80)
    if ms > 59999 or minute > 59 or hour > 23 or not 1 <= day <= 31 or not 1 <= month <= 12:
        # A malformed tag is still a tag: report it as invalid rather than refuse the frame.
        return Cp56Time(math.nan, invalid=True, summer_time=summer)
    try:
        seconds = calendar.timegm((2000 + year, month, day, hour, minute, 0, 0, 0, 0))
    except (ValueError, OverflowError):
        return Cp56Time(math.nan, invalid=True, summer_time=summer)
    return Cp56Time(seconds + ms / 1000, invalid=invalid, summer_time=summer)


# -- short floats ----------------------------------------------------------------


def decode_float32(data: bytes) -> float:
    """IEEE 754 short float as the shortest decimal that encodes to the same octets.

    The master typed 5.9, not 5.900000095367432: reading it back this way keeps kW -> W
    conversion and the audit log exact for every value a float32 can carry.
    """
    (value,) = struct.unpack("<f", data)
    if math.isfinite(value):
        for digits in range(6, 10):
            candidate = float(f"{value:.{digits}g}")
            if struct.pack("<f", candidate) == data:
                return candidate
    return float(value)


# -- ASDU -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InfoObject:
    """One information object. ``value`` is a float (measured / setpoint) or a bool (single point)."""

    ioa: int
    value: float | bool | int | None = None
    quality: QualityFlag = NO_FLAGS
    time_tag: Cp56Time | None = None
    select: bool = False  # S/E bit of a setpoint's QOS
    qualifier: int = 0  # QL of QOS, QOI of C_IC_NA_1


@dataclass(frozen=True, slots=True)
class Asdu:
    type_id: int
    cot: int
    common_address: int
    objects: tuple[InfoObject, ...] = ()
    negative: bool = False
    test: bool = False
    originator: int = 0
    sequence: bool = False
    raw: bytes = b""

    @property
    def type_name(self) -> str:
        try:
            return TypeId(self.type_id).name
        except ValueError:
            return f"type {self.type_id}"


def _encode_object(type_id: int, obj: InfoObject) -> bytes:
    ioa = obj.ioa.to_bytes(3, "little")
    match type_id:
        case TypeId.M_SP_TB_1:
            assert obj.time_tag is not None
            siq = int(obj.quality & ~QualityFlag.OV) | int(bool(obj.value))
            return ioa + bytes((siq,)) + encode_cp56(obj.time_tag.timestamp_s, obj.time_tag.invalid)
        case TypeId.M_ME_TF_1:
            assert obj.time_tag is not None
            return (
                ioa
                + struct.pack("<fB", 0.0 if obj.value is None else float(obj.value), int(obj.quality))
                + encode_cp56(obj.time_tag.timestamp_s, obj.time_tag.invalid)
            )
        case TypeId.C_SE_NC_1 | TypeId.C_SE_TC_1:
            qos = (obj.qualifier & 0x7F) | (0x80 if obj.select else 0)
            body = ioa + struct.pack("<fB", 0.0 if obj.value is None else float(obj.value), qos)
            if type_id == TypeId.C_SE_TC_1:
                assert obj.time_tag is not None
                body += encode_cp56(obj.time_tag.timestamp_s, obj.time_tag.invalid)
            return body
        case TypeId.C_IC_NA_1:
            return ioa + bytes((obj.qualifier,))
        case TypeId.C_CS_NA_1:
            assert obj.time_tag is not None
            return ioa + encode_cp56(obj.time_tag.timestamp_s, obj.time_tag.invalid)
    raise ValueError(f"cannot encode type {type_id}")


def encode_asdu(asdu: Asdu) -> bytes:
    if asdu.sequence:
        raise ValueError("sequence ASDUs (SQ=1) are not encoded by this codec")
    cause = (asdu.cot & 0x3F) | (0x40 if asdu.negative else 0) | (0x80 if asdu.test else 0)
    head = bytes((asdu.type_id, len(asdu.objects) & 0x7F, cause, asdu.originator & 0xFF))
    head += asdu.common_address.to_bytes(2, "little")
    return head + b"".join(_encode_object(asdu.type_id, obj) for obj in asdu.objects)


_ELEMENT_SIZE = {
    TypeId.M_SP_NA_1: 1,
    TypeId.M_SP_TB_1: 8,
    TypeId.M_ME_NC_1: 5,
    TypeId.M_ME_TF_1: 12,
    TypeId.C_SE_NC_1: 5,
    TypeId.C_SE_TC_1: 12,
    TypeId.M_EI_NA_1: 1,
    TypeId.C_IC_NA_1: 1,
    TypeId.C_CS_NA_1: 7,
}


def _decode_element(type_id: int, ioa: int, data: bytes) -> InfoObject:
    match type_id:
        case TypeId.M_SP_NA_1:
            return InfoObject(ioa, bool(data[0] & 1), QualityFlag(data[0] & 0xF0))
        case TypeId.M_SP_TB_1:
            return InfoObject(ioa, bool(data[0] & 1), QualityFlag(data[0] & 0xF0), decode_cp56(data[1:8]))
        case TypeId.M_ME_NC_1:
            value = decode_float32(data[:4])
            return InfoObject(ioa, value, QualityFlag(data[4] & 0xF1))
        case TypeId.M_ME_TF_1:
            value = decode_float32(data[:4])
            return InfoObject(ioa, value, QualityFlag(data[4] & 0xF1), decode_cp56(data[5:12]))
        case TypeId.C_SE_NC_1 | TypeId.C_SE_TC_1:
            value = decode_float32(data[:4])
            tag = decode_cp56(data[5:12]) if type_id == TypeId.C_SE_TC_1 else None
            return InfoObject(ioa, value, time_tag=tag, select=bool(data[4] & 0x80), qualifier=data[4] & 0x7F)
        case TypeId.M_EI_NA_1 | TypeId.C_IC_NA_1:
            return InfoObject(ioa, qualifier=data[0])
        case TypeId.C_CS_NA_1:
            return InfoObject(ioa, time_tag=decode_cp56(data[:7]))
    raise AssertionError(type_id)  # pragma: no cover - guarded by _ELEMENT_SIZE


def decode_asdu(data: bytes) -> Asdu:
    """Decode one ASDU; types outside the table keep their objects only as ``raw``."""
    if len(data) < 6:
        raise PeerInputError(f"an ASDU has at least 6 octets, got {len(data)}")
    type_id, vsq, cause, originator = data[0], data[1], data[2], data[3]
    common_address = int.from_bytes(data[4:6], "little")
    count, sequence = vsq & 0x7F, bool(vsq & 0x80)
    base = {
        "type_id": type_id,
        "cot": cause & 0x3F,
        "common_address": common_address,
        "negative": bool(cause & 0x40),
        "test": bool(cause & 0x80),
        "originator": originator,
        "sequence": sequence,
        "raw": bytes(data),
    }
    size = _ELEMENT_SIZE.get(type_id)  # type: ignore[call-overload]
    if size is None:
        return Asdu(**base)  # type: ignore[arg-type]
    body = data[6:]
    objects: list[InfoObject] = []
    if sequence:
        if len(body) != 3 + count * size:
            raise PeerInputError(f"{TypeId(type_id).name}: {len(body)} octets for a sequence of {count}")
        first = int.from_bytes(body[:3], "little")
        for i in range(count):
            chunk = body[3 + i * size : 3 + (i + 1) * size]
            objects.append(_decode_element(type_id, first + i, chunk))
    else:
        if len(body) != count * (3 + size):
            raise PeerInputError(f"{TypeId(type_id).name}: {len(body)} octets for {count} objects")
        for i in range(count):
            chunk = body[i * (3 + size) : (i + 1) * (3 + size)]
            objects.append(_decode_element(type_id, int.from_bytes(chunk[:3], "little"), chunk[3:]))
    return Asdu(**base, objects=tuple(objects))  # type: ignore[arg-type]


# -- APCI -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IFrame:
    send_seq: int
    recv_seq: int
    asdu: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SFrame:
    recv_seq: int


@dataclass(frozen=True, slots=True)
class UFrame:
    function: UFunction


Frame = IFrame | SFrame | UFrame


def encode_frame(frame: Frame) -> bytes:
    match frame:
        case IFrame(send_seq, recv_seq, asdu):
            if len(asdu) > MAX_APDU_LENGTH - 4:
                raise ValueError("ASDU too long")
            ns, nr = (send_seq & 0x7FFF) << 1, (recv_seq & 0x7FFF) << 1
            control = bytes((ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8))
            return bytes((START, 4 + len(asdu))) + control + asdu
        case SFrame(recv_seq):
            nr = (recv_seq & 0x7FFF) << 1
            return bytes((START, 4, 0x01, 0x00, nr & 0xFF, nr >> 8))
        case UFrame(function):
            return bytes((START, 4, int(function), 0, 0, 0))
    raise TypeError(frame)


def decode_frame(apdu: bytes) -> Frame:
    """Decode one whole APDU (start octet, length, control field, ASDU)."""
    if len(apdu) < 6 or apdu[0] != START or apdu[1] != len(apdu) - 2:
        raise PeerInputError(f"malformed APDU {apdu.hex()}")
    c = apdu[2:6]
    if not c[0] & 0x01:
        return IFrame((c[0] | c[1] << 8) >> 1, (c[2] | c[3] << 8) >> 1, bytes(apdu[6:]))
    if c[0] & 0x03 == 0x01:
        return SFrame((c[2] | c[3] << 8) >> 1)
    try:
        return UFrame(UFunction(c[0]))
    except ValueError:
        raise PeerInputError(f"unknown U-frame function 0x{c[0]:02x}") from None
