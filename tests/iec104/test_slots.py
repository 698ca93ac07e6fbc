"""A master that behaves always gets in: stalled connections cannot hold every slot (issue 13).

The campaign: two connections STARTDT, then send half an APDU and nothing more; lib60870
keeps them until t3 + t1 (35.8 s) and the SCADA is locked out. Here t1 is 2 s and t3 stays
at 20 s, so only the outstation's own rule can let the SCADA in within the test's bounds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from iec104.codec import IFrame, SFrame, UFrame, UFunction, decode_frame, encode_frame
from iec104.connections import (
    TCP_ESTABLISHED,
    ConnectionCache,
    TcpConnection,
    most_stalled,
    outstation_connections,
    shut_down,
)
from iec104.master import Iec104Master, MasterError
from tests.iec104.conftest import Site, running_site, site_config

T1_S = 4  # generous: on a loaded machine a stall must acknowledge before lib60870's t1 ends it
HALF_APDU = bytes.fromhex("68 12 00 00")  # a C_SE_NC_1 frame's first four octets, never completed


class Stall:
    """A connection that STARTDTs, acknowledges everything it gets, then sends half an APDU and nothing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = 0

    async def acknowledge_all(self) -> None:
        """Take every I-frame until the outstation has been quiet for a moment, and acknowledge them."""
        while True:
            try:
                head = await asyncio.wait_for(self.reader.readexactly(2), 1.0)
            except TimeoutError:
                break
            frame = decode_frame(head + await asyncio.wait_for(self.reader.readexactly(head[1]), 5.0))
            self.received += isinstance(frame, IFrame)
        self.writer.write(encode_frame(SFrame(self.received)))
        await self.writer.drain()


@asynccontextmanager
async def stalled(site: Site, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` stalled connections; yields their readers.

    All of them STARTDT and acknowledge what they get (the outstation re-sends every point to
    every master at each new session) before any sends its half APDU, so nothing is left
    unacknowledged: lib60870's t1 on its own I-frames cannot end them, only t3 + t1 would.
    """
    stalls: list[Stall] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            stalls.append(Stall(reader, writer))
            writer.write(encode_frame(UFrame(UFunction.STARTDT_ACT)))
            con = await asyncio.wait_for(reader.readexactly(6), 5.0)
            assert con == encode_frame(UFrame(UFunction.STARTDT_CON))
            for earlier in stalls:  # each new session re-sends every point to every master
                await earlier.acknowledge_all()
        for stall in stalls:
            stall.writer.write(HALF_APDU)
            await stall.writer.drain()
        yield [stall.reader for stall in stalls]
    finally:
        for stall in stalls:
            stall.writer.close()
            try:
                await asyncio.wait_for(stall.writer.wait_closed(), 2.0)
            except (OSError, TimeoutError):
                pass


async def dropped(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Whether the outstation ends this connection within ``timeout_s`` (I-frames it sends are skipped)."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(1024):
                pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def counter(site: Site, name: str) -> float:
    return site.runtime.metrics.registry.get_sample_value(name) or 0.0


async def refused(master: Iec104Master) -> bool:
    """Connect and STARTDT: True when the outstation refused; on success the master stays connected."""
    try:
        await master.connect()
        await master.start_data_transfer()
        return False
    except (MasterError, OSError, TimeoutError):
        await master.close()
        return True


async def newcomer(site: Site) -> Iec104Master:
    return site.master(answer_timeout_s=0.5, startdt_attempts=1)


async def test_two_stalled_connections_do_not_lock_the_scada_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "iec104.outstation")
    config = site_config(tmp_path, max_connections=2, t1_s=T1_S, t2_s=1)
    async with running_site(config) as site, stalled(site, 2) as (first, second):
        stalled_at = time.monotonic()
        # Within t1 the stalled connections could still be masters thinking: the newcomer waits.
        assert await refused(await newcomer(site))
        assert counter(site, "ocpp809_iec104_refused_full_total") == 1.0

        # A SCADA that retries gets in once they have been silent for t1, long before t3 + t1.
        scada = await newcomer(site)
        while await refused(scada):
            assert time.monotonic() - stalled_at < T1_S + 5, "the SCADA never got in"
            await asyncio.sleep(0.2)
            scada = await newcomer(site)
        try:
            assert time.monotonic() - stalled_at < T1_S + 5
            assert counter(site, "ocpp809_iec104_stalled_dropped_total") == 1.0
            assert await dropped(first, 5.0)  # the one silent longest made room
            # Named by the master's own address and port, not the front's loopback source.
            [line] = [r.getMessage() for r in caplog.records if "dropped, silent for" in r.getMessage()]
            assert line.startswith("IEC 104 connection from 127.0.0.1:"), line
            assert (await scada.send_setpoint(100, 20000.0)).positive
        finally:
            await scada.close()
        # The other cannot acknowledge what the SCADA's session brought (every point re-sent to
        # every master, then the setpoint's read-back): lib60870's own t1 ends it.
        assert await dropped(second, T1_S + 5)


async def test_masters_that_talk_keep_their_slots(tmp_path: Path) -> None:
    config = site_config(tmp_path, max_connections=2, t1_s=T1_S, t2_s=1)
    async with running_site(config) as site, site.master() as first, site.master() as second:
        assert await refused(await newcomer(site))
        assert (await first.send_setpoint(100, 20000.0)).positive
        assert (await second.send_setpoint(100, 30000.0)).positive
        assert counter(site, "ocpp809_iec104_stalled_dropped_total") == 0.0


async def test_with_one_slot_a_stalled_connection_gives_way(tmp_path: Path) -> None:
    config = site_config(tmp_path, max_connections=1, t1_s=T1_S, t2_s=1)
    async with running_site(config) as site, stalled(site, 1) as (reader,):
        deadline = time.monotonic() + T1_S + 5
        scada = await newcomer(site)
        while await refused(scada):
            assert time.monotonic() < deadline, "the SCADA never got in"
            await asyncio.sleep(0.2)
            scada = await newcomer(site)
        try:
            assert await dropped(reader, 5.0)
            assert (await scada.send_setpoint(100, 20000.0)).positive
        finally:
            await scada.close()


def connection(fd: int, silent_s: float, state: int = TCP_ESTABLISHED) -> TcpConnection:
    return TcpConnection(fd, ("127.0.0.1", 2404), ("127.0.0.1", 40000 + fd), state, silent_s)


def test_the_connection_silent_longest_beyond_the_bound_is_the_one_to_drop() -> None:
    assert most_stalled([connection(5, 1.0), connection(6, 2.5), connection(7, 9.0, state=4)], 2.0) == (
        connection(6, 2.5)
    )
    assert most_stalled([connection(5, 1.0), connection(6, 1.9)], 2.0) is None


def test_a_descriptor_that_no_longer_holds_the_connection_is_left_alone() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                found = outstation_connections("127.0.0.1", port)
                assert [c.fd for c in found] == [accepted.fileno()]
                moved = replace(found[0], peer=("127.0.0.1", 1))  # as if the fd now held another peer
                assert not shut_down(moved)
                assert shut_down(found[0])
                assert client.recv(1) == b""  # the peer sees the end of the connection


def test_the_descriptor_table_is_scanned_at_most_once_per_interval() -> None:
    now = [0.0]
    cache = ConnectionCache("127.0.0.1", 1, min_scan_interval_s=1.0, clock=lambda: now[0])
    for _ in range(100):
        assert cache.connections(expected=2) == []
    assert cache.scans == 1
    now[0] += 1.0
    cache.connections(expected=2)
    assert cache.scans == 2
