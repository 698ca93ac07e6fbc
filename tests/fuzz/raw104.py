"""A raw IEC 104 peer for the fuzz tests: it writes whatever octets it is given.

``iec104.master.Iec104Master`` is the well-behaved master; this one exists to be
hostile on purpose. It keeps the sequence numbers a conforming master would use (so a
fuzzed ASDU reaches the ASDU layer instead of tripping lib60870's sequence checks),
acknowledges every I-frame the outstation sends at once, answers TESTFR, and records
every ASDU it receives with the octets as they came. Sequence-number abuse and broken
framing are written with ``write`` (no bookkeeping at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Self

START = 0x68
TRACE = os.environ.get("FUZZ104_TRACE")  # a file: every write, as hex, one line each (flushed)
STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
TESTFR_ACT, TESTFR_CON = 0x43, 0x83


def _trace(line: str) -> None:
    if TRACE:
        with open(TRACE, "a") as trace:
            trace.write(line + "\n")


def u_frame(function: int) -> bytes:
    return bytes((START, 4, function, 0, 0, 0))


def s_frame(recv_seq: int) -> bytes:
    nr = (recv_seq & 0x7FFF) << 1
    return bytes((START, 4, 0x01, 0x00, nr & 0xFF, nr >> 8))


def i_frame(send_seq: int, recv_seq: int, asdu: bytes) -> bytes:
    """An I-frame around ``asdu``; the length octet says what follows (mod 256 for oversized ASDUs)."""
    ns, nr = (send_seq & 0x7FFF) << 1, (recv_seq & 0x7FFF) << 1
    return bytes((START, (4 + len(asdu)) & 0xFF, ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8)) + asdu


@dataclass(frozen=True, slots=True)
class Answer:
    """One ASDU the outstation sent, as octets, with the order it came in."""

    index: int
    asdu: bytes

    @property
    def type_id(self) -> int:
        return self.asdu[0]

    @property
    def cot(self) -> int:
        return self.asdu[2] & 0x3F

    @property
    def negative(self) -> bool:
        return bool(self.asdu[2] & 0x40)

    @property
    def test(self) -> bool:
        return bool(self.asdu[2] & 0x80)

    @property
    def common_address(self) -> int:
        return int.from_bytes(self.asdu[4:6], "little")

    @property
    def body(self) -> bytes:
        """The information objects' octets (IOA and element), as the outstation wrote them."""
        return self.asdu[6:]


class RawPeer:
    """One TCP connection to the outstation, driven octet by octet."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.answers: list[Answer] = []
        self.closed = asyncio.Event()
        self.transferring = asyncio.Event()
        self.send_seq = 0
        self.recv_seq = 0
        self.protocol_errors: list[str] = []  # what the outstation sent that is not IEC 104
        # After a half frame, anything written (an S-frame ack) would be read as its rest: a
        # peer that broke the framing stops writing altogether.
        self.silent = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), 5.0
        )
        _trace(f"{id(self):x} connect")
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start_data_transfer(self, timeout_s: float = 5.0, attempts: int = 3) -> None:
        """STARTDT act until its con (c104 has been seen to miss the first one)."""
        for _ in range(attempts):
            self.write(u_frame(STARTDT_ACT))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.transferring.wait(), timeout_s / attempts)
                return
        raise AssertionError(f"no STARTDT con from {self.host}:{self.port}")

    def send_asdu(self, asdu: bytes) -> None:
        """One I-frame carrying ``asdu`` with the sequence numbers a conforming master would use."""
        self.write(i_frame(self.send_seq, self.recv_seq, asdu))
        self.send_seq = (self.send_seq + 1) % 32768

    def write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        _trace(f"{id(self):x} {data.hex()}")
        self._writer.write(data)

    async def drain(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def wait_for(self, predicate: object, timeout_s: float) -> bool:
        """Until ``predicate(answers)`` holds or the connection closes; False on timeout."""
        assert callable(predicate)

        async def poll() -> bool:
            while True:
                self._changed.clear()
                if predicate(self.answers):
                    return True
                if self.closed.is_set():
                    return bool(predicate(self.answers))
                await self._changed.wait()

        try:
            return await asyncio.wait_for(poll(), timeout_s)
        except TimeoutError:
            return False

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                head = await self._reader.readexactly(2)
                if head[0] != START or head[1] < 4:
                    self.protocol_errors.append(f"bad APCI head {head.hex()}")
                    break
                body = await self._reader.readexactly(head[1])
                control = body[:4]
                if not control[0] & 0x01:  # I-frame: record and acknowledge at once
                    self.recv_seq = (self.recv_seq + 1) % 32768
                    self.answers.append(Answer(len(self.answers), bytes(body[4:])))
                    if not self.silent:
                        self.write(s_frame(self.recv_seq))
                elif control[0] == STARTDT_CON:
                    self.transferring.set()
                elif control[0] == TESTFR_ACT and not self.silent:
                    self.write(u_frame(TESTFR_CON))
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self._changed.set()
