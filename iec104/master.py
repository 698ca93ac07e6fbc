"""A small, dependable asyncio IEC 60870-5-104 master (controlling station).

Used by the tests, the scenario runner and ``ocpp809 sim dso``. It exists because
c104's own Client has been seen never to send STARTDT in about one run in four, and its
TLS client is broken in 2.2.1 (upstream issue #64): this master checks every STARTDT
for its confirmation and retries, speaks TLS through Python's ``ssl``, acknowledges
every I-frame with S-frames, answers TESTFR and records every ASDU it receives with its
time of arrival.

    async with Iec104Master("127.0.0.1", port) as master:
        con = await master.send_setpoint(100, 20000.0)
        assert con.positive
        await master.wait_for_measurement(201, lambda o: o.value == 20000.0, timeout_s=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from gateway.errors import Ocpp809Error, PeerInputError
from iec104.codec import (
    Asdu,
    Cot,
    Cp56Time,
    Frame,
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

log = logging.getLogger(__name__)

_REFUSAL_COTS = {Cot.UNKNOWN_TYPE_ID, Cot.UNKNOWN_COT, Cot.UNKNOWN_CA, Cot.UNKNOWN_IOA}


class MasterError(Ocpp809Error):
    """The outstation did not answer as IEC 104 requires (no STARTDT con, no ACT_CON, closed)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One ASDU as it arrived, with the master's wall-clock time of arrival."""

    asdu: Asdu
    received_at_s: float


@dataclass(frozen=True, slots=True)
class ActCon:
    """The outstation's answer to a command: ACT_CON (positive or negative) or a refusal COT."""

    positive: bool
    cot: int
    asdu: Asdu

    @property
    def value(self) -> float | bool | int | None:
        return self.asdu.objects[0].value if self.asdu.objects else None


@dataclass(frozen=True, slots=True)
class Measurement:
    """A monitored value the outstation sent, flattened for easy assertions."""

    ioa: int
    type_id: int
    cot: int
    value: float | bool | int | None
    quality: int
    time_tag: Cp56Time | None
    received_at_s: float


@dataclass
class _Waiter:
    predicate: Callable[[Asdu], bool]
    future: asyncio.Future[Asdu] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Iec104Master:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        common_address: int = 1,
        originator_address: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        source_address: str | None = None,
        connect_timeout_s: float = 5.0,
        answer_timeout_s: float = 5.0,
        startdt_attempts: int = 3,
        w: int = 8,
    ) -> None:
        self.host = host
        self.port = port
        self.common_address = common_address
        self.originator_address = originator_address
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.source_address = source_address
        self.connect_timeout_s = connect_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.startdt_attempts = startdt_attempts
        self.w = w
        self.received: list[Received] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._send_seq = 0
        self._recv_seq = 0
        self._unacked = 0
        self._ack_handle: asyncio.TimerHandle | None = None
        self._u_waiters: dict[UFunction, asyncio.Future[None]] = {}
        self._waiters: list[_Waiter] = []
        self._command_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.answer_test_frames = True  # False plays a peer whose link died silently
        self._transferring = False
        self._stopping = False

    # -- connection --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        try:
            await self.start_data_transfer()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        local_addr = (self.source_address, 0) if self.source_address else None
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.server_hostname if self.ssl_context else None,
                local_addr=local_addr,
            ),
            self.connect_timeout_s,
        )
        self._task = asyncio.create_task(self._read_loop(), name=f"iec104-master-{self.host}:{self.port}")

    async def start_data_transfer(self) -> None:
        """STARTDT act until STARTDT con arrives: checked, and retried a bounded number of times."""
        for attempt in range(1, self.startdt_attempts + 1):
            try:
                await self._u_exchange(UFunction.STARTDT_ACT, UFunction.STARTDT_CON)
                return
            except TimeoutError:
                log.warning("no STARTDT con from %s:%s (attempt %d)", self.host, self.port, attempt)
        raise MasterError(f"{self.host}:{self.port} never confirmed STARTDT")

    async def stop_data_transfer(self) -> None:
        # The outstation confirms STOPDT only once every I-frame it sent is acknowledged, and
        # lib60870 closes the connection on an S-frame after its STOPDT con: so acknowledge at
        # once while the STOPDT is pending, and never after the con.
        self._stopping = True
        self._send_ack()
        try:
            await self._u_exchange(UFunction.STOPDT_ACT, UFunction.STOPDT_CON)
        finally:
            self._stopping = False

    async def test_frame(self) -> None:
        await self._u_exchange(UFunction.TESTFR_ACT, UFunction.TESTFR_CON)

    async def close(self) -> None:
        """Close the TCP connection (gracefully) and stop the reader."""
        if self._ack_handle is not None:
            self._ack_handle.cancel()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._send_ack()
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._fail_waiters("closed by the master")

    def abort(self) -> None:
        """Drop the connection at once with a TCP reset (SO_LINGER 0), as a crashed master would.

        No STOPDT and no FIN: the outstation learns of it only from the RST.
        """
        if self._writer is not None:
            transport = self._writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    # -- commands ------------------------------------------------------------------

    async def send_setpoint(
        self,
        ioa: int,
        value: float,
        *,
        time_tag: float | None = None,
        select: bool = False,
        cot: Cot = Cot.ACTIVATION,
        common_address: int | None = None,
        timeout_s: float | None = None,
    ) -> ActCon:
        """Send C_SE_NC_1 (or C_SE_TC_1 when ``time_tag``, epoch seconds, is given) and await the answer."""
        type_id = TypeId.C_SE_NC_1 if time_tag is None else TypeId.C_SE_TC_1
        tag = None if time_tag is None else Cp56Time(time_tag)
        obj = InfoObject(ioa, float(value), time_tag=tag, select=select)
        return await self.command(type_id, obj, cot=cot, common_address=common_address, timeout_s=timeout_s)

    async def select_and_execute(self, ioa: int, value: float, *, time_tag: float | None = None) -> ActCon:
        selected = await self.send_setpoint(ioa, value, time_tag=time_tag, select=True)
        if not selected.positive:
            return selected
        return await self.send_setpoint(ioa, value, time_tag=time_tag)

    async def command(
        self,
        type_id: TypeId,
        obj: InfoObject,
        *,
        cot: Cot = Cot.ACTIVATION,
        common_address: int | None = None,
        timeout_s: float | None = None,
    ) -> ActCon:
        """Send one command object and return the first answer that refers to it."""
        ca = self.common_address if common_address is None else common_address
        answers = {Cot.ACTIVATION_CON, Cot.DEACTIVATION_CON} | _REFUSAL_COTS

        def answers_this(asdu: Asdu) -> bool:
            return (
                asdu.type_id == type_id
                and asdu.cot in answers
                and asdu.common_address == ca
                and bool(asdu.objects)
                and asdu.objects[0].ioa == obj.ioa
            )

        async with self._command_lock:
            waiter = self._watch(answers_this)
            self._send_asdu(Asdu(type_id, cot, ca, (obj,), originator=self.originator_address))
            asdu = await self._wait(waiter, timeout_s, f"no answer to {type_id.name} at IOA {obj.ioa}")
        positive = asdu.cot in (Cot.ACTIVATION_CON, Cot.DEACTIVATION_CON) and not asdu.negative
        return ActCon(positive, asdu.cot, asdu)

    async def raw_command(
        self, apdu: bytes, *, renumber: bool = False, timeout_s: float | None = None
    ) -> ActCon:
        """Send one command I-frame exactly as given (octets, sequence numbers and all) and await its answer.

        For hostile and conformance tests: the frame is written verbatim, then this master's send
        sequence number continues after the frame's N(S), so later commands stay in step.
        ``renumber`` puts this master's current N(S) and N(R) into the control field first.
        """
        if renumber:
            apdu = apdu[:2] + encode_frame(IFrame(self._send_seq, self._recv_seq, b""))[2:6] + apdu[6:]
        frame = decode_frame(apdu)
        if not isinstance(frame, IFrame) or len(frame.asdu) < 9:
            raise ValueError("raw_command takes an I-frame with an information object address")
        # Read the header by hand: the ASDU may be one the codec refuses (wrong length, ...).
        type_id = frame.asdu[0]
        ca = int.from_bytes(frame.asdu[4:6], "little")
        ioa = int.from_bytes(frame.asdu[6:9], "little")
        answers = {Cot.ACTIVATION_CON, Cot.DEACTIVATION_CON} | _REFUSAL_COTS

        def answers_this(asdu: Asdu) -> bool:
            return (
                asdu.type_id == type_id
                and asdu.cot in answers
                and asdu.common_address == ca
                and asdu.raw[6:9] == frame.asdu[6:9]
            )

        async with self._command_lock:
            waiter = self._watch(answers_this)
            if self.closed.is_set():
                raise MasterError(f"connection closed: {self.close_reason}")
            self._send_seq = (frame.send_seq + 1) % 32768
            self._unacked = 0
            self._write(apdu)
            asdu = await self._wait(waiter, timeout_s, f"no answer to the raw type {type_id} at IOA {ioa}")
        positive = asdu.cot in (Cot.ACTIVATION_CON, Cot.DEACTIVATION_CON) and not asdu.negative
        return ActCon(positive, asdu.cot, asdu)

    def write_raw(self, data: bytes) -> None:
        """Write octets as they are, with no framing and no bookkeeping (half frames, garbage)."""
        self._write(data)

    async def interrogate(self, timeout_s: float | None = None) -> list[Measurement]:
        """General interrogation: returns the values sent between ACT_CON and ACT_TERM."""
        ca = self.common_address
        start = len(self.received)
        # Watch for ACT_TERM before sending: it can follow the ACT_CON within one read.
        waiter = self._watch(
            lambda a: (
                a.type_id == TypeId.C_IC_NA_1
                and a.cot == Cot.ACTIVATION_TERMINATION
                and a.common_address == ca
            )
        )
        try:
            con = await self.command(TypeId.C_IC_NA_1, InfoObject(0, qualifier=20), timeout_s=timeout_s)
            if not con.positive:
                raise MasterError(f"general interrogation refused (COT {con.cot})")
        except BaseException:
            self._waiters.remove(waiter) if waiter in self._waiters else None
            raise
        await self._wait(waiter, timeout_s, "no ACT_TERM for the general interrogation")
        return [
            m
            for r in self.received[start:]
            if r.asdu.cot == Cot.INTERROGATED_BY_STATION
            for m in _measurements(r)
        ]

    async def clock_sync(self, timestamp_s: float | None = None) -> ActCon:
        tag = Cp56Time(time.time() if timestamp_s is None else timestamp_s)
        return await self.command(TypeId.C_CS_NA_1, InfoObject(0, time_tag=tag))

    # -- monitoring ------------------------------------------------------------------

    def measurements(self, ioa: int | None = None) -> list[Measurement]:
        return [m for r in self.received for m in _measurements(r) if ioa is None or m.ioa == ioa]

    def latest(self, ioa: int) -> Measurement | None:
        found = self.measurements(ioa)
        return found[-1] if found else None

    async def wait_for_measurement(
        self, ioa: int, predicate: Callable[[Measurement], bool] = lambda m: True, timeout_s: float = 5.0
    ) -> Measurement:
        """The first measurement at ``ioa`` satisfying ``predicate`` (already received ones count)."""

        def find(start: int) -> Measurement | None:
            for r in self.received[start:]:
                for m in _measurements(r):
                    if m.ioa == ioa and predicate(m):
                        return m
            return None

        async def scan() -> Measurement:
            seen = 0
            while True:
                self._changed.clear()
                found = find(seen)
                seen = len(self.received)
                if found is not None:
                    return found
                if self.closed.is_set():
                    raise MasterError(f"connection closed while waiting for IOA {ioa}: {self.close_reason}")
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout_s)
        except TimeoutError:
            last = self.latest(ioa)
            raise TimeoutError(
                f"no matching measurement at IOA {ioa} within {timeout_s} s; last: {last}"
            ) from None

    # -- internals -------------------------------------------------------------------

    def _watch(self, predicate: Callable[[Asdu], bool]) -> _Waiter:
        waiter = _Waiter(predicate)
        self._waiters.append(waiter)
        return waiter

    async def _wait(self, waiter: _Waiter, timeout_s: float | None, what: str) -> Asdu:
        try:
            return await asyncio.wait_for(waiter.future, timeout_s or self.answer_timeout_s)
        except TimeoutError:
            raise TimeoutError(what) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _u_exchange(self, act: UFunction, con: UFunction) -> None:
        if self.closed.is_set():
            raise MasterError(f"connection closed: {self.close_reason}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._u_waiters[con] = future
        self._write(encode_frame(UFrame(act)))
        try:
            await asyncio.wait_for(future, self.answer_timeout_s)
        finally:
            self._u_waiters.pop(con, None)

    def _send_asdu(self, asdu: Asdu) -> None:
        if self.closed.is_set():
            raise MasterError(f"connection closed: {self.close_reason}")
        frame = IFrame(self._send_seq, self._recv_seq, encode_asdu(asdu))
        self._send_seq = (self._send_seq + 1) % 32768
        self._unacked = 0  # an I-frame carries our receive sequence number too
        self._write(encode_frame(frame))

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise MasterError("not connected")
        log.debug("master -> %s", data.hex())
        self._writer.write(data)

    def _send_ack(self) -> None:
        if self._ack_handle is not None:
            self._ack_handle.cancel()
        self._ack_handle = None
        if self._unacked and self._transferring and not self.closed.is_set():
            self._unacked = 0
            self._write(encode_frame(SFrame(self._recv_seq)))

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "closed by the outstation"
        try:
            while True:
                head = await self._reader.readexactly(2)
                if head[0] != 0x68:
                    reason = f"bad start octet 0x{head[0]:02x}"
                    break
                body = await self._reader.readexactly(head[1])
                self._on_frame(decode_frame(head + body))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as exc:
            reason = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, asyncio.IncompleteReadError) else reason
            )
        except PeerInputError as exc:
            reason = f"malformed frame: {exc}"
        finally:
            self.close_reason = reason
            self.closed.set()
            self._changed.set()
            self._fail_waiters(reason)
            if self._writer is not None:
                self._writer.close()

    def _on_frame(self, frame: Frame) -> None:
        log.debug("master <- %s", frame)
        match frame:
            case UFrame(function=UFunction.TESTFR_ACT):
                if self.answer_test_frames:
                    self._write(encode_frame(UFrame(UFunction.TESTFR_CON)))
            case UFrame(function=function):
                if function is UFunction.STARTDT_CON:
                    self._transferring = True
                    self._send_ack()
                elif function is UFunction.STOPDT_CON:
                    self._transferring = False
                future = self._u_waiters.get(function)
                if future is not None and not future.done():
                    future.set_result(None)
            case SFrame():
                pass  # we send too few I-frames to ever be held back by k
            case IFrame(asdu=payload):
                self._recv_seq = (self._recv_seq + 1) % 32768
                self._unacked += 1
                asdu = _decode_leniently(payload)
                self.received.append(Received(asdu, time.time()))
                self._changed.set()
                for waiter in list(self._waiters):
                    if not waiter.future.done() and waiter.predicate(asdu):
                        waiter.future.set_result(asdu)
                        self._waiters.remove(waiter)
                if self._unacked >= self.w or self._stopping:
                    self._send_ack()
                elif self._ack_handle is None:
                    # Acknowledge promptly so the outstation never stalls on k; t2 is far longer.
                    self._ack_handle = asyncio.get_running_loop().call_later(0.05, self._send_ack)

    def _fail_waiters(self, reason: str) -> None:
        for future in self._u_waiters.values():
            if not future.done():
                future.set_exception(MasterError(reason))
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(MasterError(reason))
        self._waiters.clear()


def client_ssl_context(
    ca_file: str, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A TLS client context for an IEC 62351-3 outstation: verify it against ``ca_file``, present our certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def _decode_leniently(payload: bytes) -> Asdu:
    """The ASDU, or only its header when its objects do not decode (an outstation may mirror a bad command)."""
    try:
        return decode_asdu(payload)
    except PeerInputError:
        if len(payload) < 6:
            raise
        cause = payload[2]
        return Asdu(
            payload[0],
            cause & 0x3F,
            int.from_bytes(payload[4:6], "little"),
            negative=bool(cause & 0x40),
            test=bool(cause & 0x80),
            originator=payload[3],
            raw=bytes(payload),
        )


def _measurements(received: Received) -> list[Measurement]:
    asdu = received.asdu
    if asdu.type_id not in (TypeId.M_SP_NA_1, TypeId.M_SP_TB_1, TypeId.M_ME_NC_1, TypeId.M_ME_TF_1):
        return []
    return [
        Measurement(
            o.ioa, asdu.type_id, asdu.cot, o.value, int(o.quality), o.time_tag, received.received_at_s
        )
        for o in asdu.objects
    ]
