"""The codec alone: bytes in, values out; cross-checked against bytes c104 really sent and parses."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import c104
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import PeerInputError
from iec104.codec import (
    Asdu,
    Cot,
    Cp56Time,
    IFrame,
    InfoObject,
    QualityFlag,
    SFrame,
    TypeId,
    UFrame,
    UFunction,
    decode_asdu,
    decode_cp56,
    decode_float32,
    decode_frame,
    encode_asdu,
    encode_cp56,
    encode_frame,
)

# Captured from c104 2.2.1 on loopback (see tests/iec104/test_setpoints.py for the live path).
C104_C_SE_TC_1 = bytes.fromhex("6819000000003f010600010065000000409c460086ac2c06d50b1a")
C104_GI_M_SP_TB_1_SEQUENCE = bytes.fromhex("1e81140001002c010081a2d62c06150b1a")


def test_u_frames_have_the_standard_octets() -> None:
    assert encode_frame(UFrame(UFunction.STARTDT_ACT)) == bytes.fromhex("680407000000")
    assert encode_frame(UFrame(UFunction.TESTFR_CON)) == bytes.fromhex("680483000000")
    assert decode_frame(bytes.fromhex("68040b000000")) == UFrame(UFunction.STARTDT_CON)
    assert c104.explain_bytes_dict(encode_frame(UFrame(UFunction.STOPDT_ACT))) == {
        "format": "U",
        "type": "STOPDT",
        "cot": "ACT",
    }


def test_s_and_i_frame_sequence_numbers_wrap_at_32768() -> None:
    assert decode_frame(encode_frame(SFrame(32767))) == SFrame(32767)
    frame = decode_frame(encode_frame(IFrame(32768 + 5, 7, b"\x64\x01\x06\x00\x01\x00\x00\x00\x00\x14")))
    assert frame == IFrame(5, 7, b"\x64\x01\x06\x00\x01\x00\x00\x00\x00\x14")


def test_decodes_a_time_tagged_setpoint_exactly_as_c104_sent_it() -> None:
    frame = decode_frame(C104_C_SE_TC_1)
    assert isinstance(frame, IFrame)
    asdu = decode_asdu(frame.asdu)
    assert (asdu.type_id, asdu.cot, asdu.common_address, asdu.negative) == (
        TypeId.C_SE_TC_1,
        Cot.ACTIVATION,
        1,
        False,
    )
    (obj,) = asdu.objects
    assert (obj.ioa, obj.value, obj.select) == (101, 20000.0, False)
    assert obj.time_tag is not None
    assert obj.time_tag.to_datetime() == datetime(2026, 11, 21, 6, 44, 44, 166000, tzinfo=UTC)


def test_our_setpoint_encoding_is_what_c104_parses() -> None:
    tag = datetime(2026, 11, 21, 6, 44, 44, 166000, tzinfo=UTC).timestamp()
    asdu = Asdu(TypeId.C_SE_TC_1, Cot.ACTIVATION, 1, (InfoObject(101, 20000.0, time_tag=Cp56Time(tag)),))
    apdu = encode_frame(IFrame(0, 0, encode_asdu(asdu)))
    assert apdu == C104_C_SE_TC_1
    explained = c104.explain_bytes_dict(apdu)
    assert explained["type"] == c104.Type.C_SE_TC_1
    assert explained["cot"] == c104.Cot.ACTIVATION
    assert explained["firstInformationObjectAddress"] == 101


def test_select_bit_and_negative_confirmation() -> None:
    asdu = Asdu(TypeId.C_SE_NC_1, Cot.ACTIVATION_CON, 1, (InfoObject(100, 5.0, select=True),), negative=True)
    again = decode_asdu(encode_asdu(asdu))
    assert again.negative and again.objects[0].select and again.objects[0].value == 5.0
    assert encode_asdu(asdu)[-1] == 0x80  # QOS: S/E set, QL 0 (c104 acts on it: test_select_before_operate)


def test_decodes_a_sequence_of_single_points_with_quality() -> None:
    asdu = decode_asdu(C104_GI_M_SP_TB_1_SEQUENCE)
    assert asdu.sequence and asdu.cot == Cot.INTERROGATED_BY_STATION
    (obj,) = asdu.objects
    assert (obj.ioa, obj.value, obj.quality) == (300, True, QualityFlag.IV)


@pytest.mark.parametrize(
    "quality", [QualityFlag(0), QualityFlag.NT, QualityFlag.IV, QualityFlag.NT | QualityFlag.IV]
)
def test_measured_value_round_trip_keeps_quality_and_time(quality: QualityFlag) -> None:
    tag = Cp56Time(1_800_000_000.25)
    asdu = Asdu(TypeId.M_ME_TF_1, Cot.SPONTANEOUS, 1, (InfoObject(200, 7200.0, quality, tag),))
    (obj,) = decode_asdu(encode_asdu(asdu)).objects
    assert (obj.value, obj.quality, obj.time_tag) == (7200.0, quality, tag)


def test_unknown_types_are_kept_raw_not_refused() -> None:
    raw = bytes.fromhex("0b01030001000a00000010270000")  # M_ME_NB_1 (scaled), not in our table
    asdu = decode_asdu(raw)
    assert asdu.type_id == 11 and asdu.objects == () and asdu.raw == raw


@pytest.mark.parametrize(
    "apdu",
    [
        b"",
        bytes.fromhex("6804070000"),
        bytes.fromhex("6905070000 00".replace(" ", "")),
        bytes.fromhex("680400000000ff"),
    ],
)
def test_malformed_apdus_are_peer_errors(apdu: bytes) -> None:
    with pytest.raises(PeerInputError):
        decode_frame(apdu)


def test_unknown_u_function_is_a_peer_error() -> None:
    with pytest.raises(PeerInputError):
        decode_frame(bytes.fromhex("680417000000"))


@pytest.mark.parametrize("asdu", [b"\x32\x01\x06", bytes.fromhex("320206000100640000000000c07f00")])
def test_malformed_asdus_are_peer_errors(asdu: bytes) -> None:
    with pytest.raises(PeerInputError):
        decode_asdu(asdu)


def test_cp56_fields_flags_and_weekday() -> None:
    ts = datetime(2026, 11, 21, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
    octets = encode_cp56(ts, invalid=True)
    assert octets[4] >> 5 == 6  # Saturday
    assert octets[2] & 0x80
    tag = decode_cp56(octets)
    assert tag.invalid and tag.timestamp_s == pytest.approx(ts)
    assert decode_cp56(bytes((0, 0, 0, 0x80 | 12, 1, 1, 26))).summer_time


def test_cp56_out_of_range_fields_decode_as_an_invalid_tag() -> None:
    tag = decode_cp56(bytes((0xFF, 0xFF, 0, 0, 1, 1, 26)))  # 65535 ms
    assert tag.invalid and math.isnan(tag.timestamp_s)
    with pytest.raises(PeerInputError):
        decode_cp56(b"\x00" * 6)


@given(st.floats(min_value=946684800, max_value=4102444799, allow_nan=False))
def test_cp56_round_trip_to_the_millisecond(ts: float) -> None:
    assert decode_cp56(encode_cp56(ts)).timestamp_s == pytest.approx(round(ts * 1000) / 1000, abs=1e-6)


@pytest.mark.parametrize("value", [5.9, 20000.0, 0.1, -7.25, 3.4e38])
def test_short_floats_read_back_as_the_decimal_that_was_sent(value: float) -> None:
    import struct

    assert decode_float32(struct.pack("<f", value)) == value
    assert math.isnan(decode_float32(struct.pack("<f", math.nan)))
    assert decode_float32(struct.pack("<f", math.inf)) == math.inf
