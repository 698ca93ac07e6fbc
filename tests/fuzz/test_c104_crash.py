"""Crashes the IEC 104 fuzz test found in c104 2.2.1, and the guard that keeps them out.

c104 2.2.1 (with its lib60870) segfaults on short ASDUs: any master allowed to connect
killed the whole gateway with one 12-octet I-frame after STARTDT (found by
``test_iec104_loopback.py``, minimised by hand, and reproduced with a bare ``c104.Server``
holding one station, so the fault is upstream):

- ``68 0a 00 00 00 00  1e 81 06 00 01 00`` -- M_SP_TB_1 with SQ=1, one object, no object
  octets (every monitor type 1..40 does it): c104's ``IncomingMessage::first`` calls
  ``CS101_ASDU_getElement``, whose sequence branch sets the object address of an element it
  could not read (SIGSEGV in ``InformationObject_setObjectAddress``). SQ=0 is not affected;
  commands (type >= 45) are refused before that point.
- ``68 0a 00 00 00 00  67 00 06 00 01 00`` -- C_CS_NA_1 (clock sync), COT 6, no object (or
  any body shorter than IOA + CP56Time2a): lib60870's slave reads object 0 unchecked.
- ``68 0a 00 00 00 00  6b 00 03 00 01 00`` -- C_TS_TA_1 (test command with time tag), a COT
  other than 6, no object: SIGSEGV in ``InformationObject_getObjectAddress``.

c104 is still as it was; the gateway no longer lets such a frame reach it: the front
(``iec104.front``) passes only APDUs the guard (``iec104.apdu_guard``) finds well-formed,
and closes the connection of a master that sends anything else. The gateway runs as child
processes here (one per frame, in parallel), so a crash fails this test instead of taking
the test session down. The second test sends one ASDU of every shape the guard lets
through (every type it knows, one object and, where the type has them, a sequence), so a
shape c104 cannot take would show up here rather than in the field.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from iec104.apdu_guard import SHAPES, check_apdu
from iec104.master import Iec104Master
from tests.fuzz.raw104 import RawPeer, i_frame
from tests.support.gateway_process import GatewayProcess, loopback_config

CRASHERS = {
    "M_SP_TB_1 SQ=1 without objects": bytes.fromhex("680a00000000" + "1e8106000100"),
    "C_CS_NA_1 without its object": bytes.fromhex("680a00000000" + "670006000100"),
    "C_TS_TA_1 COT 3 without its object": bytes.fromhex("680a00000000" + "6b0003000100"),
}


async def _serves_a_master(gateway: GatewayProcess) -> str | None:
    async with Iec104Master("127.0.0.1", gateway.iec104_port) as master:
        if not (await master.send_setpoint(100, 20000.0)).positive:
            return "a valid setpoint was refused afterwards"
    return None


async def _survives(name: str, frame: bytes, tmp_path: Path) -> str | None:
    """None when a gateway takes ``frame`` and then serves a master; else what happened."""
    home = tmp_path / name.split()[0]
    home.mkdir()
    gateway = await asyncio.to_thread(GatewayProcess, loopback_config(home))
    try:
        async with RawPeer("127.0.0.1", gateway.iec104_port) as peer:
            await peer.start_data_transfer()
            peer.write(frame)
            await peer.drain()
            await peer.wait_for(lambda answers: False, 0.5)
        if await asyncio.to_thread(gateway.wait_dead, 1.0):
            return f"{name} ({frame.hex()}): the gateway died, exit code {gateway.proc.returncode}"
        problem = await _serves_a_master(gateway)
        return None if problem is None else f"{name}: {problem}"
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_short_asdus_do_not_kill_the_gateway(tmp_path: Path) -> None:
    outcomes = await asyncio.gather(*(_survives(name, frame, tmp_path) for name, frame in CRASHERS.items()))
    died = [outcome for outcome in outcomes if outcome is not None]
    assert not died, "\n".join(died)


def _shapes_that_pass() -> list[bytes]:
    """One ASDU of every shape the guard passes: COT 6, common address 1, IOA 100, element octets 0x01."""
    asdus: list[bytes] = []
    for type_id, shape in sorted(SHAPES.items()):
        element = shape.element
        if element is None:  # F_SG_NA_1: NOF, NOS, LOS = 2, a two-octet segment
            asdus.append(bytes((type_id, 1, 6, 0, 1, 0, 100, 0, 0, 1, 0, 1, 2, 0xAA, 0xBB)))
            continue
        asdus.append(bytes((type_id, 1, 6, 0, 1, 0, 100, 0, 0)) + b"\x01" * element)
        if not shape.single:
            asdus.append(bytes((type_id, 2, 3, 0, 1, 0)) + (bytes((100, 0, 0)) + b"\x01" * element) * 2)
        if shape.sequence:
            asdus.append(bytes((type_id, 0x83, 3, 0, 1, 0, 100, 0, 0)) + b"\x01" * (3 * element))
    return asdus


async def test_every_shape_the_guard_passes_is_one_c104_survives(tmp_path: Path) -> None:
    asdus = _shapes_that_pass()
    assert all(check_apdu(i_frame(0, 0, asdu)) is None for asdu in asdus)
    gateway = await asyncio.to_thread(GatewayProcess, loopback_config(tmp_path))
    try:
        for asdu in asdus:  # a connection each: c104 may end one over a cause it does not take
            async with RawPeer("127.0.0.1", gateway.iec104_port) as peer:
                await peer.start_data_transfer()
                peer.send_asdu(asdu)
                await peer.drain()
                await peer.wait_for(lambda answers, t=asdu[0]: any(a.type_id == t for a in answers), 0.3)
            assert gateway.alive, f"the gateway died on {asdu.hex()}: exit code {gateway.proc.returncode}"
        assert await _serves_a_master(gateway) is None
    finally:
        await asyncio.to_thread(gateway.stop)
