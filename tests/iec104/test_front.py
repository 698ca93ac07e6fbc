"""The front on the public port (issue 13): c104 behind it sees only well-formed APDUs.

With the real outstation (c104 on 127.0.0.1 behind the front) on loopback: a bad frame
ends its master's connection and nobody else's, is counted and logged once; what c104
would have mishandled (a frame whose start octet arrives alone) passes whole; the masters'
own addresses reach the audit log; nothing reaches c104 around the front; and the front
listens on IPv6, which c104 2.2.1 cannot.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import struct
from pathlib import Path

import pytest

import iec104.front as front_module
from iec104.apdu_guard import Refusal
from iec104.front import FrontHooks, FrontSettings, Iec104Front, normalised_ip
from iec104.master import Iec104Master, MasterError
from iec104.peer_log import PeerLog
from tests.fuzz.raw104 import Answer, RawPeer, i_frame
from tests.iec104.conftest import Site, running_site, site_config

SETPOINT_ASDU = bytes((50, 1, 6, 0, 1, 0, 100, 0, 0)) + struct.pack("<f", 20000.0) + b"\x00"
M_SP_TB_1_SQ_WITHOUT_OBJECTS = bytes.fromhex("680a00000000" + "1e8106000100")


def refused_frames(site: Site, reason: Refusal) -> float | None:
    return site.runtime.metrics.registry.get_sample_value(
        "ocpp809_iec104_frames_refused_total", {"reason": reason.value}
    )


async def test_every_reason_starts_at_zero(site: Site) -> None:
    assert [refused_frames(site, reason) for reason in Refusal] == [0.0] * len(Refusal)


async def test_a_bad_frame_closes_its_connection_only(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    async with site.master() as behaved, RawPeer("127.0.0.1", site.port) as hostile:
        await hostile.start_data_transfer()
        with caplog.at_level(logging.WARNING, "iec104.outstation"):
            hostile.write(M_SP_TB_1_SQ_WITHOUT_OBJECTS)
            await hostile.drain()
            await hostile.wait_for(lambda answers: False, 5.0)  # returns early once closed
            assert hostile.closed.is_set()
        assert refused_frames(site, Refusal.VSQ) == 1.0
        [line] = [r.getMessage() for r in caplog.records if "refused (vsq" in r.getMessage()]
        assert line.startswith("IEC 104 frame from 127.0.0.1:") and "connection closed" in line
        assert (await behaved.send_setpoint(100, 20000.0)).positive  # the other master is still served
    async with site.master() as after:
        assert (await after.send_setpoint(100, 30000.0)).positive


async def test_a_setpoint_whose_start_octet_arrives_alone_is_confirmed(site: Site) -> None:
    """lib60870 drops a master whose start octet comes in a TCP segment of its own
    (docs/c104/split_start_octet.py); the front hands c104 whole APDUs only."""
    async with RawPeer("127.0.0.1", site.port) as peer:
        await peer.start_data_transfer()
        frame = i_frame(peer.send_seq, peer.recv_seq, SETPOINT_ASDU)
        peer.write(frame[:1])
        await peer.drain()
        await asyncio.sleep(0.05)
        peer.write(frame[1:])
        await peer.drain()

        def confirmed(answers: list[Answer]) -> bool:
            return any(a.type_id == 50 and a.cot == 7 and not a.negative for a in answers)

        assert await peer.wait_for(confirmed, 5.0)


async def test_the_audit_log_names_the_master_s_own_address(tmp_path: Path) -> None:
    config = site_config(tmp_path, allowed_masters=["127.0.0.3"])
    async with running_site(config) as site:
        async with Iec104Master("127.0.0.1", site.port, source_address="127.0.0.3") as master:
            assert (await master.send_setpoint(100, 20000.0)).positive
        await site.until(lambda: len(site.runtime.store.audit()) == 1, what="the setpoint audited")
        [row] = site.runtime.store.audit()
        assert row.peer.startswith("127.0.0.3 ")


async def test_nothing_reaches_c104_around_the_front(site: Site) -> None:
    backend = site.outstation.backend_port
    assert backend and backend != site.port
    reader, writer = await asyncio.open_connection("127.0.0.1", backend)
    try:
        writer.write(bytes((0x68, 4, 0x07, 0, 0, 0)))  # STARTDT act
        await writer.drain()
        assert await asyncio.wait_for(reader.read(64), 5.0) == b""  # closed without a STARTDT con
    finally:
        writer.close()
    refused = site.runtime.metrics.registry.get_sample_value("ocpp809_iec104_refused_connections_total")
    assert refused == 1.0


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_the_front_listens_on_ipv6(tmp_path: Path) -> None:
    config = site_config(tmp_path, listen_host="::1", allowed_masters=["::1"])
    async with running_site(config) as site:
        async with Iec104Master("::1", site.port) as master:
            assert (await master.send_setpoint(100, 20000.0)).positive
        with pytest.raises((MasterError, OSError, TimeoutError)):
            async with Iec104Master("127.0.0.1", site.port, answer_timeout_s=1.0, startdt_attempts=1):
                pass  # ::1 only: nothing listens on IPv4


def test_ipv4_peers_of_a_dual_stack_socket_are_plain_ipv4() -> None:
    assert normalised_ip("::ffff:10.0.0.7") == "10.0.0.7"
    assert normalised_ip("fe80::1%eth0") == "fe80::1"
    assert normalised_ip("not an address") == "not an address"


async def test_connections_still_in_their_tls_handshake_are_bounded() -> None:
    refused: list[str] = []
    front = Iec104Front(
        FrontSettings("127.0.0.1", 0, frozenset(), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), max_pending=2),
        FrontHooks(
            PeerLog(logging.getLogger("t.front")), lambda: refused.append("refused"), lambda reason: None
        ),
    )
    front.bind()
    await front.start(backend_port=1)  # never reached: no handshake is ever finished here
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):  # connect and say nothing: the front waits for a ClientHello
            writers.append((await asyncio.open_connection("127.0.0.1", front.port))[1])
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writers.append(writer)
        assert await asyncio.wait_for(reader.read(1), 5.0) == b""  # the third is closed at once
        assert refused == ["refused"]
    finally:
        for writer in writers:
            writer.close()
        await front.stop()


async def test_where_no_loopback_source_of_its_own_binds_the_front_connects_from_127_0_0_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Other systems have only 127.0.0.1 on the loopback: one connection to c104 at a time."""
    monkeypatch.setattr(front_module, "_SOURCE_BASE", int(ipaddress.IPv4Address("192.0.2.0")))  # TEST-NET-1
    caplog.set_level(logging.WARNING, "iec104.front")
    async with running_site(site_config(tmp_path)) as site:
        async with site.master() as first, site.master() as second:
            assert (await first.send_setpoint(100, 20000.0)).positive
            assert (await second.send_setpoint(100, 30000.0)).positive
        await site.until(lambda: len(site.runtime.store.audit()) == 2, what="both setpoints audited")
        assert all(row.peer.startswith("127.0.0.1 ") for row in site.runtime.store.audit())
    assert any("is not a local address" in r.getMessage() for r in caplog.records)
