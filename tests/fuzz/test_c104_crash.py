"""Crashes the IEC 104 fuzz test found: c104 2.2.1 (with its lib60870) segfaults on short ASDUs.

Any master that may connect (``iec104.allowed_masters``) kills the whole gateway with one
12-octet I-frame after STARTDT (found by ``test_iec104_loopback.py``, minimised by hand,
and reproduced with a bare ``c104.Server`` holding one station, so the fault is upstream):

- ``68 0a 00 00 00 00  1e 81 06 00 01 00`` -- M_SP_TB_1 with SQ=1, one object, no object
  octets (every monitor type 1..40 does it): c104's ``IncomingMessage::first`` calls
  ``CS101_ASDU_getElement``, whose sequence branch sets the object address of an element it
  could not read (SIGSEGV in ``InformationObject_setObjectAddress``). SQ=0 is not affected;
  commands (type >= 45) are refused before that point.
- ``68 0a 00 00 00 00  67 00 06 00 01 00`` -- C_CS_NA_1 (clock sync), COT 6, no object (or
  any body shorter than IOA + CP56Time2a): lib60870's slave reads object 0 unchecked.
- ``68 0a 00 00 00 00  6b 00 03 00 01 00`` -- C_TS_TA_1 (test command with time tag), a COT
  other than 6, no object: SIGSEGV in ``InformationObject_getObjectAddress``.

The gateway runs as child processes here (one per frame, in parallel), so a crash fails this
test instead of taking the test session down. Strict xfail: once c104 (or a guard in front of
it in the gateway) is fixed, this passes, the xfail turns into a failure, and the marker goes.
``iec104_cases.crashes_c104`` keeps the in-process fuzz clear of these families meanwhile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iec104.master import Iec104Master
from tests.fuzz.gateway_subprocess import GatewayProcess, site_file
from tests.fuzz.raw104 import RawPeer

CRASHERS = {
    "M_SP_TB_1 SQ=1 without objects": bytes.fromhex("680a00000000" + "1e8106000100"),
    "C_CS_NA_1 without its object": bytes.fromhex("680a00000000" + "670006000100"),
    "C_TS_TA_1 COT 3 without its object": bytes.fromhex("680a00000000" + "6b0003000100"),
}


async def _survives(name: str, frame: bytes, tmp_path: Path) -> str | None:
    """None when a gateway takes ``frame`` and then serves a master; else what happened."""
    home = tmp_path / name.split()[0]
    home.mkdir()
    gateway = await asyncio.to_thread(GatewayProcess, site_file(home))
    try:
        async with RawPeer("127.0.0.1", gateway.iec104_port) as peer:
            await peer.start_data_transfer()
            peer.write(frame)
            await peer.drain()
            await peer.wait_for(lambda answers: False, 0.5)
        if await asyncio.to_thread(gateway.wait_dead, 1.0):
            return f"{name} ({frame.hex()}): the gateway died, exit code {gateway.proc.returncode}"
        async with Iec104Master("127.0.0.1", gateway.iec104_port) as master:
            if not (await master.send_setpoint(100, 20000.0)).positive:
                return f"{name}: a valid setpoint was refused afterwards"
        return None
    finally:
        await asyncio.to_thread(gateway.stop)


@pytest.mark.xfail(
    strict=True,
    reason="c104 2.2.1 / lib60870 segfault on short ASDUs (SQ=1 monitor types, C_CS_NA_1, C_TS_TA_1)",
)
async def test_short_asdus_do_not_kill_the_gateway(tmp_path: Path) -> None:
    outcomes = await asyncio.gather(*(_survives(name, frame, tmp_path) for name, frame in CRASHERS.items()))
    died = [outcome for outcome in outcomes if outcome is not None]
    assert not died, "\n".join(died)
