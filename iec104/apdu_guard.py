"""Which octets from a master may reach c104: the APDU guard's pure part (issue 13).

c104 2.2.1 and its lib60870 trust the length of an ASDU: an I-frame whose ASDU is shorter
than its type and VSQ say (M_SP_TB_1 with SQ=1 and no objects, C_CS_NA_1 or C_TS_TA_1
without their object) makes them read past it and kills the process
(``tests/fuzz/test_c104_crash.py``). ``ApduFilter`` takes the octets a master sends, in
whatever pieces TCP delivers them, and hands back whole APDUs, each checked, until the
first that is not well-formed: then it says why (``Refusal``) and takes nothing more. The
shell (``iec104.front``) forwards the APDUs and closes the connection on a refusal: IEC
60870-5-104 5.1 has no answer to a malformed APDU but closing, and lib60870 does the same
for what it does detect.

Well-formed (IEC 60870-5-104 5.1-5.3, IEC 60870-5-101 7.1-7.3 with the 104 sizes: COT two
octets, common address two, IOA three):

- APCI: start octet 0x68, length octet 4..253 (checked as soon as it arrives, so a bad one
  is refused at once instead of waiting for octets that may never come); control field:
  I format (octet 1 bit 0 = 0) with octet 3 bit 0 = 0; S format exactly ``01 00`` then
  N(R) with octet 3 bit 0 = 0; U format exactly one of STARTDT, STOPDT, TESTFR act/con in
  octet 1 and octets 2-4 zero. S and U frames have length 4.
- ASDU (I frames): a type identification the 104 companion standard defines (``SHAPES``:
  process information in both directions, system information, parameters, file transfer;
  not the CP24Time2a types, C_TS_NA_1 or C_CD_NA_1, which 104 does not use, nor the
  private range), at least one object, SQ=1 only for the types -101 defines a sequence for,
  exactly one object for commands, system and parameter ASDUs and file transfer, and the
  ASDU exactly as long as that: 6 + N x (3 + element) octets, or 6 + 3 + N x element for a
  sequence (F_SG_NA_1: its segment's length octet says how long the element is).

The values inside (cause of transmission, common address, IOA, qualifiers, time tags) are
not the guard's business: c104 answers them as the standard says (COT 44-47, negative
confirmations), and the gateway's own translation checks a setpoint's fields. A type the
standard defines but the gateway does not handle is well-formed and goes through: c104
mirrors it with COT 44 (unknown type identification) or 47 (unknown IOA), as -101 7.2.3
asks. A type outside the standard's list cannot be checked (nothing says how long its
elements are), so it is refused like any other frame the guard cannot vouch for: the guard
cannot answer with COT 44 itself, because an I-frame it wrote or swallowed would break the
sequence numbers between master and c104.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

START = 0x68
MIN_LENGTH = 4  # the control field alone (S and U frames)
MAX_LENGTH = 253  # IEC 60870-5-104 5.1: at most 253 octets after the length octet
ASDU_HEADER = 6  # type, VSQ, COT (2), common address (2)
IOA = 3
U_FUNCTIONS = frozenset({0x07, 0x0B, 0x13, 0x23, 0x43, 0x83})  # STARTDT, STOPDT, TESTFR: act, con
F_SG_NA_1 = 125


class Refusal(StrEnum):
    """Why a frame was refused; the values are the ``reason`` label of the metric."""

    START = "start"  # the first octet of an APDU is not 0x68
    LENGTH = "length"  # the length octet is outside 4..253
    CONTROL = "control"  # the control field is no I, S or U format (or an S/U frame is not 4 long)
    TYPE = "type"  # a type identification the 104 companion standard does not define
    VSQ = "vsq"  # no objects, SQ=1 where the type has no sequence, several where it takes one
    ASDU_LENGTH = "asdu_length"  # the ASDU is not exactly as long as its type and VSQ say


@dataclass(frozen=True, slots=True)
class Shape:
    """How an ASDU of one type is built: octets of one element after its IOA, and its VSQ rules.

    ``element`` None: the length is in the element (F_SG_NA_1 only).
    """

    element: int | None
    sequence: bool = False  # SQ=1 defined (-101 7.3: the monitor types without a time tag)
    single: bool = False  # exactly one object (commands, system, parameter, file transfer)


def _command(element: int | None) -> Shape:
    return Shape(element, single=True)


# IEC 60870-5-104 clause 8 (the types 104 uses) with the element sizes of IEC 60870-5-101 7.3.
SHAPES: dict[int, Shape] = {
    # process information, monitor direction (a master sends none; c104 answers COT 44)
    1: Shape(1, sequence=True),  # M_SP_NA_1  SIQ
    3: Shape(1, sequence=True),  # M_DP_NA_1  DIQ
    5: Shape(2, sequence=True),  # M_ST_NA_1  VTI QDS
    7: Shape(5, sequence=True),  # M_BO_NA_1  BSI QDS
    9: Shape(3, sequence=True),  # M_ME_NA_1  NVA QDS
    11: Shape(3, sequence=True),  # M_ME_NB_1  SVA QDS
    13: Shape(5, sequence=True),  # M_ME_NC_1  IEEE STD 754 QDS
    15: Shape(5, sequence=True),  # M_IT_NA_1  BCR
    20: Shape(5, sequence=True),  # M_PS_NA_1  SCD QDS
    21: Shape(2, sequence=True),  # M_ME_ND_1  NVA
    30: Shape(8),  # M_SP_TB_1  SIQ CP56Time2a
    31: Shape(8),  # M_DP_TB_1  DIQ CP56Time2a
    32: Shape(9),  # M_ST_TB_1  VTI QDS CP56Time2a
    33: Shape(12),  # M_BO_TB_1  BSI QDS CP56Time2a
    34: Shape(10),  # M_ME_TD_1  NVA QDS CP56Time2a
    35: Shape(10),  # M_ME_TE_1  SVA QDS CP56Time2a
    36: Shape(12),  # M_ME_TF_1  IEEE STD 754 QDS CP56Time2a
    37: Shape(12),  # M_IT_TB_1  BCR CP56Time2a
    38: Shape(10),  # M_EP_TD_1  SEP CP16Time2a CP56Time2a
    39: Shape(11),  # M_EP_TE_1  SPE QDP CP16Time2a CP56Time2a
    40: Shape(11),  # M_EP_TF_1  OCI QDP CP16Time2a CP56Time2a
    # process information, control direction
    45: _command(1),  # C_SC_NA_1  SCO
    46: _command(1),  # C_DC_NA_1  DCO
    47: _command(1),  # C_RC_NA_1  RCO
    48: _command(3),  # C_SE_NA_1  NVA QOS
    49: _command(3),  # C_SE_NB_1  SVA QOS
    50: _command(5),  # C_SE_NC_1  IEEE STD 754 QOS
    51: _command(4),  # C_BO_NA_1  BSI
    58: _command(8),  # C_SC_TA_1  SCO CP56Time2a
    59: _command(8),  # C_DC_TA_1  DCO CP56Time2a
    60: _command(8),  # C_RC_TA_1  RCO CP56Time2a
    61: _command(10),  # C_SE_TA_1  NVA QOS CP56Time2a
    62: _command(10),  # C_SE_TB_1  SVA QOS CP56Time2a
    63: _command(12),  # C_SE_TC_1  IEEE STD 754 QOS CP56Time2a
    64: _command(11),  # C_BO_TA_1  BSI CP56Time2a
    # system information
    70: _command(1),  # M_EI_NA_1  COI
    100: _command(1),  # C_IC_NA_1  QOI
    101: _command(1),  # C_CI_NA_1  QCC
    102: _command(0),  # C_RD_NA_1  (the IOA alone)
    103: _command(7),  # C_CS_NA_1  CP56Time2a
    105: _command(1),  # C_RP_NA_1  QRP
    107: _command(9),  # C_TS_TA_1  TSC CP56Time2a
    # parameters
    110: _command(3),  # P_ME_NA_1  NVA QPM
    111: _command(3),  # P_ME_NB_1  SVA QPM
    112: _command(5),  # P_ME_NC_1  IEEE STD 754 QPM
    113: _command(1),  # P_AC_NA_1  QPA
    # file transfer
    120: _command(6),  # F_FR_NA_1  NOF LOF FRQ
    121: _command(7),  # F_SR_NA_1  NOF NOS LOF SRQ
    122: _command(4),  # F_SC_NA_1  NOF NOS SCQ
    123: _command(5),  # F_LS_NA_1  NOF NOS LSQ CHS
    124: _command(4),  # F_AF_NA_1  NOF NOS AFQ
    125: _command(None),  # F_SG_NA_1  NOF NOS LOS segment (LOS octets)
    126: Shape(13, sequence=True),  # F_DR_TA_1  NOF LOF SOF CP56Time2a
    127: _command(16),  # F_SC_NB_1  NOF CP56Time2a CP56Time2a
}
_SEGMENT_HEAD = 4  # F_SG_NA_1: NOF (2), NOS, LOS


def check_asdu(asdu: bytes) -> Refusal | None:
    """None when ``asdu`` (the octets after an I-frame's control field) is well-formed."""
    if len(asdu) < ASDU_HEADER:
        return Refusal.ASDU_LENGTH
    shape = SHAPES.get(asdu[0])
    if shape is None:
        return Refusal.TYPE
    count, sequence = asdu[1] & 0x7F, bool(asdu[1] & 0x80)
    if count == 0 or (sequence and not shape.sequence) or (shape.single and count != 1):
        return Refusal.VSQ
    element = shape.element
    if element is None:  # F_SG_NA_1: one object, its segment length in octet 3 of the element
        los_at = ASDU_HEADER + IOA + _SEGMENT_HEAD - 1
        if len(asdu) <= los_at:
            return Refusal.ASDU_LENGTH
        element = _SEGMENT_HEAD + asdu[los_at]
    expected = ASDU_HEADER + (IOA + count * element if sequence else count * (IOA + element))
    return None if len(asdu) == expected else Refusal.ASDU_LENGTH


def check_control(length: int, control: bytes) -> Refusal | None:
    """None when the four octets of a control field fit their format and the APDU's length."""
    if control[0] & 0x01 == 0:  # I format
        return None if control[2] & 0x01 == 0 else Refusal.CONTROL
    if length != MIN_LENGTH:
        return Refusal.CONTROL
    if control[0] & 0x03 == 0x01:  # S format
        return None if control[0] == 0x01 and control[1] == 0 and control[2] & 0x01 == 0 else Refusal.CONTROL
    if control[0] in U_FUNCTIONS and control[1:] == b"\x00\x00\x00":
        return None
    return Refusal.CONTROL


def check_apdu(apdu: bytes) -> Refusal | None:
    """None when ``apdu`` (start octet to the end) is one well-formed APDU, nothing more or less."""
    if len(apdu) < 1 or apdu[0] != START:
        return Refusal.START
    if len(apdu) < 2 or not MIN_LENGTH <= apdu[1] <= MAX_LENGTH:
        return Refusal.LENGTH
    if len(apdu) != 2 + apdu[1]:
        return Refusal.LENGTH
    refusal = check_control(apdu[1], apdu[2:6])
    if refusal is not None or apdu[2] & 0x01:
        return refusal
    return check_asdu(apdu[6:])


@dataclass(frozen=True, slots=True)
class Refused:
    """The frame the guard refused: why, and its first octets (for the log line)."""

    reason: Refusal
    head: bytes


class ApduFilter:
    """Octets from a master in, whole well-formed APDUs out; the first bad one ends it.

    Sans-I/O: ``receive_data`` returns the APDUs completed by the octets given (possibly
    none: a frame in pieces waits for the rest), in order. Once a frame is refused,
    ``refused`` says why and every later call returns nothing.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.refused: Refused | None = None

    def receive_data(self, data: bytes) -> list[bytes]:
        if self.refused is not None:
            return []
        self._buffer += data
        frames: list[bytes] = []
        buffer = self._buffer
        while buffer:
            refusal: Refusal | None = None
            if buffer[0] != START:
                refusal = Refusal.START
            elif len(buffer) >= 2 and not MIN_LENGTH <= buffer[1] <= MAX_LENGTH:
                refusal = Refusal.LENGTH
            elif len(buffer) < 2 or len(buffer) < 2 + buffer[1]:
                break  # the rest of the frame has not arrived yet
            else:
                size = 2 + buffer[1]
                frame = bytes(buffer[:size])
                refusal = check_apdu(frame)
                if refusal is None:
                    frames.append(frame)
                    del buffer[:size]
                    continue
            self.refused = Refused(refusal, bytes(buffer[:16]))
            buffer.clear()
            break
        return frames

    @property
    def pending(self) -> int:
        """Octets of a frame that has not arrived whole yet."""
        return len(self._buffer)


__all__ = [
    "SHAPES",
    "ApduFilter",
    "Refusal",
    "Refused",
    "Shape",
    "check_apdu",
    "check_asdu",
    "check_control",
]
