"""The T (test) and P/N (negative) bits of a command's cause octet, on a real socket (issue 13).

IEC 60870-5-101 7.2.3 (used unchanged by 104): T=1 marks an ASDU "generated during test
conditions ... to test transmission and equipment without controlling the process"; P/N
is the confirmation's answer bit (positive/negative), so a command in the control
direction never carries P/N=1. The gateway therefore never applies either. It answers a
test command with an ACT_CON that mirrors T and tells whether the command *would* have
been accepted (the core's own check, nothing stored or changed), and it refuses a command
with P/N=1 with a negative ACT_CON. Both are audited.
"""

from __future__ import annotations

import time

from gateway.core.model import Mode
from iec104.codec import Asdu, Cot, Cp56Time, IFrame, InfoObject, TypeId, encode_asdu, encode_frame
from tests.iec104.conftest import Site

# The campaign's reproduction: C_SE_NC_1, COT 0x86 (T=1, activation), CA 1, IOA 100, 20000.0.
TEST_BIT_REPRO = bytes.fromhex("68 12 00 00 00 00 32 01 86 00 01 00 64 00 00 00 40 9c 46 00")
NEGATIVE_BIT = bytes.fromhex("68 12 00 00 00 00 32 01 46 00 01 00 64 00 00 00 40 9c 46 00")
BOTH_BITS = bytes.fromhex("68 12 00 00 00 00 32 01 c6 00 01 00 64 00 00 00 40 9c 46 00")


def frame(asdu: Asdu) -> bytes:
    """The first I-frame of a session (N(S) = N(R) = 0), as the campaign sent it."""
    return encode_frame(IFrame(0, 0, encode_asdu(asdu)))


async def test_the_campaigns_test_bit_frame_is_mirrored_and_never_applied(site: Site) -> None:
    async with site.master() as master:
        con = await master.raw_command(TEST_BIT_REPRO)
        assert con.cot == Cot.ACTIVATION_CON
        assert con.asdu.test  # the answer mirrors T
        assert con.positive  # 20 kW is a valid limit: the test says it would be accepted
        assert con.value == 20000.0
        interrogated = {m.ioa: m.value for m in await master.interrogate()}
        assert interrogated[201] != 20000.0
        # A real setpoint afterwards works as usual (the master's sequence numbers stay in step).
        assert (await master.send_setpoint(100, 30000.0)).positive
    view = site.runtime.view()
    assert view.limit_w == 30000.0
    rows = site.runtime.store.audit()
    assert [(r.value_w, r.accepted, r.reason) for r in rows] == [
        (20000.0, False, "test_command"),
        (30000.0, True, "ok"),
    ]
    assert "would be accepted" in rows[0].detail


async def test_a_test_command_that_would_be_refused_is_answered_negatively_with_t(site: Site) -> None:
    async with site.master() as master:
        below = Asdu(TypeId.C_SE_NC_1, Cot.ACTIVATION, 1, (InfoObject(100, 10.0),), test=True)
        con = await master.raw_command(frame(below))
        assert not con.positive and con.asdu.negative and con.asdu.test
    assert site.runtime.view().mode is Mode.INITIAL
    row = site.runtime.store.audit()[-1]
    assert (row.accepted, row.reason) == (False, "test_command")
    assert "below_min" in row.detail


async def test_a_time_tagged_test_command_is_not_applied(site: Site) -> None:
    tagged = Asdu(
        TypeId.C_SE_TC_1,
        Cot.ACTIVATION,
        1,
        (InfoObject(101, 15000.0, time_tag=Cp56Time(time.time())),),
        test=True,
    )
    async with site.master() as master:
        con = await master.raw_command(frame(tagged))
        assert con.positive and con.asdu.test
    assert site.runtime.view().mode is Mode.INITIAL
    assert site.runtime.store.load_limit() is None or site.runtime.store.load_limit().setpoint_w != 15000.0  # type: ignore[union-attr]
    assert site.runtime.store.audit()[-1].reason == "test_command"


async def test_negative_bit_in_a_command_is_refused_negatively(site: Site) -> None:
    async with site.master() as master:
        con = await master.raw_command(NEGATIVE_BIT)
        assert not con.positive and con.asdu.negative and not con.asdu.test
    async with site.master() as master:
        both = await master.raw_command(BOTH_BITS)
        assert not both.positive and both.asdu.negative and both.asdu.test
    assert site.runtime.view().mode is Mode.INITIAL
    rows = site.runtime.store.audit()
    assert [(r.accepted, r.reason) for r in rows] == [(False, "unexpected_cause")] * 2
    assert all("P/N" in r.detail for r in rows)
