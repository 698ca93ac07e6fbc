"""The APDU guard's pure part: what may reach c104 (issue 13), driven with bytes alone.

The oracle below is written from the standard's field sizes (IEC 60870-5-101 7.2.6 and
7.3, with 104's COT of two octets, CA two, IOA three), not from ``SHAPES``: each type is
the sum of its fields, so a wrong number in the guard's table shows up as a disagreement.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iec104.apdu_guard import SHAPES, ApduFilter, Refusal, check_apdu
from iec104.codec import (
    Asdu,
    Cp56Time,
    IFrame,
    InfoObject,
    SFrame,
    TypeId,
    UFrame,
    UFunction,
    decode_asdu,
    decode_frame,
    encode_asdu,
    encode_frame,
)

# -- the oracle: element sizes from the fields of each type ------------------------------------

SIQ = DIQ = QDS = VTI = SCO = DCO = RCO = QOI = QCC = QRP = COI = QPM = QPA = QOS = SEP = QDP = 1
SPE = OCI = FRQ = SRQ = SCQ = LSQ = CHS = AFQ = NOS = SOF = 1
NVA = SVA = CP16 = NOF = TSC = 2
LOF = 3
BSI = FLOAT = 4
BCR = 5
CP56 = 7

TIME_LESS_MONITOR = {
    1: SIQ,
    3: DIQ,
    5: VTI + QDS,
    7: BSI + QDS,
    9: NVA + QDS,
    11: SVA + QDS,
    13: FLOAT + QDS,
    15: BCR,
    20: 4 + QDS,  # SCD: 32 status bits
    21: NVA,
}
TIMED_MONITOR = {
    30: SIQ + CP56,
    31: DIQ + CP56,
    32: VTI + QDS + CP56,
    33: BSI + QDS + CP56,
    34: NVA + QDS + CP56,
    35: SVA + QDS + CP56,
    36: FLOAT + QDS + CP56,
    37: BCR + CP56,
    38: SEP + CP16 + CP56,
    39: SPE + QDP + CP16 + CP56,
    40: OCI + QDP + CP16 + CP56,
}
ONE_OBJECT = {
    45: SCO,
    46: DCO,
    47: RCO,
    48: NVA + QOS,
    49: SVA + QOS,
    50: FLOAT + QOS,
    51: BSI,
    58: SCO + CP56,
    59: DCO + CP56,
    60: RCO + CP56,
    61: NVA + QOS + CP56,
    62: SVA + QOS + CP56,
    63: FLOAT + QOS + CP56,
    64: BSI + CP56,
    70: COI,
    100: QOI,
    101: QCC,
    102: 0,
    103: CP56,
    105: QRP,
    107: TSC + CP56,
    110: NVA + QPM,
    111: SVA + QPM,
    112: FLOAT + QPM,
    113: QPA,
    120: NOF + LOF + FRQ,
    121: NOF + NOS + LOF + SRQ,
    122: NOF + NOS + SCQ,
    123: NOF + NOS + LSQ + CHS,
    124: NOF + NOS + AFQ,
    127: NOF + CP56 + CP56,
}
F_SG_NA_1, F_DR_TA_1 = 125, 126


def oracle_asdu_ok(asdu: bytes) -> bool:
    """Whether ``asdu`` is built as the standard builds its type (the guard's contract)."""
    if len(asdu) < 6:
        return False
    type_id, count, sequence, body = asdu[0], asdu[1] & 0x7F, bool(asdu[1] & 0x80), asdu[6:]
    if count == 0:
        return False
    if type_id == F_SG_NA_1:
        return not sequence and count == 1 and len(body) >= 3 + 4 and len(body) == 3 + 4 + body[6]
    if type_id in ONE_OBJECT:
        return not sequence and count == 1 and len(body) == 3 + ONE_OBJECT[type_id]
    if type_id in TIMED_MONITOR:
        return not sequence and len(body) == count * (3 + TIMED_MONITOR[type_id])
    size = TIME_LESS_MONITOR.get(type_id, NOF + LOF + SOF + CP56 if type_id == F_DR_TA_1 else None)
    if size is None:
        return False
    return len(body) == (3 + count * size if sequence else count * (3 + size))


def oracle_apdu_ok(apdu: bytes) -> bool:
    if len(apdu) < 6 or apdu[0] != 0x68 or apdu[1] != len(apdu) - 2 or not 4 <= apdu[1] <= 253:
        return False
    c = apdu[2:6]
    if c[0] & 1 == 0:
        return c[2] & 1 == 0 and oracle_asdu_ok(apdu[6:])
    if apdu[1] != 4:
        return False
    if c[0] & 3 == 1:
        return c[0] == 1 and c[1] == 0 and c[2] & 1 == 0
    return c[0] in {f.value for f in UFunction} and c[1:] == b"\0\0\0"


def test_the_table_is_the_oracle_s() -> None:
    defined = set(TIME_LESS_MONITOR) | set(TIMED_MONITOR) | set(ONE_OBJECT) | {F_SG_NA_1, F_DR_TA_1}
    assert set(SHAPES) == defined


# -- strategies --------------------------------------------------------------------------------


def i_frame(asdu: bytes, send_seq: int = 0, recv_seq: int = 0) -> bytes:
    ns, nr = (send_seq & 0x7FFF) << 1, (recv_seq & 0x7FFF) << 1
    return bytes((0x68, (4 + len(asdu)) & 0xFF, ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8)) + asdu


def element_size(type_id: int) -> int:
    return {**TIME_LESS_MONITOR, **TIMED_MONITOR, **ONE_OBJECT, F_DR_TA_1: 13}[type_id]


@st.composite
def well_formed_asdus(draw: st.DrawFn) -> bytes:
    """An ASDU of any type the standard defines, built field by field (values are random)."""
    type_id = draw(st.sampled_from(sorted(SHAPES)))
    head = bytes((draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(0, 255))))
    ca = draw(st.binary(min_size=2, max_size=2))
    if type_id == F_SG_NA_1:
        segment = draw(st.binary(max_size=200))
        element = draw(st.binary(min_size=3, max_size=3)) + bytes((len(segment),)) + segment
        return bytes((type_id, 1)) + head[:2] + ca + draw(st.binary(min_size=3, max_size=3)) + element
    size = element_size(type_id)
    single = type_id in ONE_OBJECT
    sequence = not single and type_id not in TIMED_MONITOR and draw(st.booleans())
    per_object = size if sequence else 3 + size
    most = 1 if single else max(1, min(127, (249 - 6 - 3) // max(per_object, 1)))
    count = draw(st.integers(1, most))
    body = draw(st.binary(min_size=3, max_size=3)) if sequence else b""
    body += draw(st.binary(min_size=count * per_object, max_size=count * per_object))
    vsq = count | (0x80 if sequence else 0)
    return bytes((type_id, vsq)) + head[:2] + ca + body


control_frames = st.one_of(
    st.builds(lambda nr: encode_frame(SFrame(nr)), st.integers(0, 32767)),
    st.builds(lambda f: encode_frame(UFrame(f)), st.sampled_from(list(UFunction))),
)
well_formed_apdus = st.one_of(
    control_frames,
    st.builds(i_frame, well_formed_asdus(), st.integers(0, 32767), st.integers(0, 32767)),
)


@st.composite
def mangled_apdus(draw: st.DrawFn) -> bytes:
    """A well-formed APDU with one thing broken, or random octets."""
    frame = bytearray(draw(well_formed_apdus))
    how = draw(st.sampled_from(["octet", "cut", "extend", "vsq", "type", "random"]))
    if how == "octet":
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    elif how == "cut" and len(frame) > 6:
        del frame[len(frame) - draw(st.integers(1, len(frame) - 6)) :]
        frame[1] = len(frame) - 2
    elif how == "extend" and len(frame) < 255:
        frame += draw(st.binary(min_size=1, max_size=255 - len(frame)))
        frame[1] = len(frame) - 2
    elif how == "vsq" and len(frame) > 7:
        frame[7] = draw(st.integers(0, 255))
    elif how == "type" and len(frame) > 6:
        frame[6] = draw(st.integers(0, 255))
    elif how == "random":
        return draw(st.binary(max_size=300))
    return bytes(frame)


# -- properties --------------------------------------------------------------------------------


@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20))
def test_random_octets_in_any_pieces_never_crash_the_filter(data: bytes, cuts: list[int]) -> None:
    apdus = ApduFilter()
    passed: list[bytes] = []
    at = 0
    for size in [*cuts, len(data)]:
        passed += apdus.receive_data(data[at : at + size])
        at += size
    for frame in passed:
        assert oracle_apdu_ok(frame), frame.hex()
    assert b"".join(passed) == data[: sum(map(len, passed))]  # forwarded in order, unchanged
    if apdus.refused is not None:
        assert apdus.receive_data(b"\x68\x04\x07\x00\x00\x00") == []  # nothing after a refusal


@given(st.one_of(mangled_apdus(), st.binary(max_size=300)))
def test_check_apdu_agrees_with_the_oracle(apdu: bytes) -> None:
    assert (check_apdu(apdu) is None) == oracle_apdu_ok(apdu), apdu.hex()


@given(well_formed_apdus)
def test_every_frame_it_passes_decodes_with_the_project_codec(apdu: bytes) -> None:
    assert check_apdu(apdu) is None
    frame = decode_frame(apdu)
    if isinstance(frame, IFrame):
        asdu = decode_asdu(frame.asdu)  # the codec's own length checks for the types it knows
        if asdu.type_id in {t.value for t in TypeId}:
            assert len(asdu.objects) == asdu.raw[1] & 0x7F


@given(st.lists(well_formed_apdus, min_size=1, max_size=8), st.lists(st.integers(1, 40), max_size=30))
def test_a_stream_of_well_formed_frames_passes_whole_however_it_is_cut(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frames)
    apdus = ApduFilter()
    passed: list[bytes] = []
    at = 0
    for size in [*cuts, len(stream)]:
        passed += apdus.receive_data(stream[at : at + size])
        at += size
    assert passed == frames and apdus.refused is None and apdus.pending == 0


def test_frames_the_gateway_sends_and_takes_pass() -> None:
    tag = Cp56Time(1_700_000_000.0)
    for asdu in (
        Asdu(TypeId.C_SE_NC_1, 6, 1, (InfoObject(100, 20000.0),)),
        Asdu(TypeId.C_SE_TC_1, 6, 1, (InfoObject(101, 20000.0, time_tag=tag),)),
        Asdu(TypeId.C_IC_NA_1, 6, 1, (InfoObject(0, qualifier=20),)),
        Asdu(TypeId.C_CS_NA_1, 6, 1, (InfoObject(0, time_tag=tag),)),
        Asdu(
            TypeId.M_ME_TF_1, 3, 1, (InfoObject(200, 1.0, time_tag=tag), InfoObject(201, 2.0, time_tag=tag))
        ),
    ):
        assert check_apdu(encode_frame(IFrame(3, 4, encode_asdu(asdu)))) is None


CRASHERS = {  # tests/fuzz/test_c104_crash.py
    "M_SP_TB_1 SQ=1 without objects": ("680a00000000" + "1e8106000100", Refusal.VSQ),
    "C_CS_NA_1 without its object": ("680a00000000" + "670006000100", Refusal.VSQ),
    "C_TS_TA_1 COT 3 without its object": ("680a00000000" + "6b0003000100", Refusal.VSQ),
    "C_CS_NA_1, one object, no octets": ("680a00000000" + "670106000100", Refusal.ASDU_LENGTH),
    "C_CS_NA_1, one object, its IOA only": ("680d00000000" + "670106000100" + "000000", Refusal.ASDU_LENGTH),
    "C_TS_TA_1, one object, no octets": ("680a00000000" + "6b0103000100", Refusal.ASDU_LENGTH),
}


@pytest.mark.parametrize("name", CRASHERS)
def test_the_frames_that_crash_c104_are_refused(name: str) -> None:
    octets, reason = CRASHERS[name]
    assert check_apdu(bytes.fromhex(octets)) is reason


@pytest.mark.parametrize("type_id", range(1, 41))
def test_no_monitor_type_passes_short_in_a_sequence(type_id: int) -> None:
    for count in range(4):
        needed = 3 + count * (element_size(type_id) if type_id in SHAPES else 1)
        for size in range(needed):
            asdu = bytes((type_id, 0x80 | count, 6, 0, 1, 0)) + bytes(range(size))
            assert check_apdu(i_frame(asdu)) is not None


@pytest.mark.parametrize(
    ("octets", "reason"),
    [
        ("69", Refusal.START),
        ("6803", Refusal.LENGTH),
        ("68fe", Refusal.LENGTH),
        ("680401000300", Refusal.CONTROL),  # S-frame with N(R) bit 0 set
        ("680403000000", Refusal.CONTROL),  # U-frame without a function
        ("68040f000000", Refusal.CONTROL),  # two functions at once
        ("680543000000ff", Refusal.CONTROL),  # a U-frame with a body
        ("68060000010012cd", Refusal.CONTROL),  # I-frame with N(R) bit 0 set
        ("680a00000000" + "000106000100", Refusal.TYPE),  # type 0
        ("680a00000000" + "020106000100", Refusal.TYPE),  # M_SP_TA_1 (CP24Time2a): not in 104
        ("680a00000000" + "800106000100", Refusal.TYPE),  # the private range
        ("680a00000000" + "320006000100", Refusal.VSQ),  # no object
        (i_frame(bytes.fromhex("320206000100" + "640000" + "00409c4600" * 2)).hex(), Refusal.VSQ),
        (i_frame(bytes.fromhex("328106000100" + "640000" + "00409c4600")).hex(), Refusal.VSQ),
        (i_frame(bytes.fromhex("320106000100" + "640000" + "00409c46")).hex(), Refusal.ASDU_LENGTH),
        (i_frame(bytes.fromhex("320106000100" + "640000" + "00409c460000")).hex(), Refusal.ASDU_LENGTH),
    ],
)
def test_each_kind_of_refusal(octets: str, reason: Refusal) -> None:
    apdus = ApduFilter()
    assert apdus.receive_data(bytes.fromhex(octets)) == []
    assert apdus.refused is not None and apdus.refused.reason is reason


def test_a_bad_length_octet_is_refused_before_the_rest_arrives() -> None:
    apdus = ApduFilter()
    assert apdus.receive_data(b"\x68") == [] and apdus.refused is None
    assert apdus.receive_data(b"\xff") == [] and apdus.refused is not None


def test_a_setpoint_split_after_its_start_octet_passes_whole() -> None:
    frame = i_frame(bytes((50, 1, 6, 0, 1, 0, 100, 0, 0)) + struct.pack("<f", 20000.0) + b"\x00")
    apdus = ApduFilter()
    assert apdus.receive_data(frame[:1]) == []
    assert apdus.receive_data(frame[1:]) == [frame]
