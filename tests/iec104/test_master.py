"""The test master against a scripted outstation: STARTDT retry, TESTFR, S-frame acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from iec104.codec import (
    Asdu,
    Cot,
    Cp56Time,
    IFrame,
    InfoObject,
    SFrame,
    TypeId,
    UFrame,
    UFunction,
    decode_frame,
    encode_asdu,
    encode_frame,
)
from iec104.master import Iec104Master, MasterError

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_frame(reader: asyncio.StreamReader) -> object:
    head = await reader.readexactly(2)
    return decode_frame(head + await reader.readexactly(head[1]))


@asynccontextmanager
async def scripted_outstation(script: Script) -> AsyncIterator[int]:
    done: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        done.append(task)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in done:
            task.cancel()
        await asyncio.gather(*done, return_exceptions=True)
        await server.wait_closed()


async def test_startdt_is_retried_until_confirmed() -> None:
    seen: list[object] = []

    async def ignore_first_startdt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_frame(reader))  # dropped, as a flaky peer would
        seen.append(await read_frame(reader))
        writer.write(encode_frame(UFrame(UFunction.STARTDT_CON)))
        await reader.read()  # until the master closes

    async with (
        scripted_outstation(ignore_first_startdt) as port,
        Iec104Master("127.0.0.1", port, answer_timeout_s=0.3) as master,
    ):
        assert not master.closed.is_set()
    assert seen == [UFrame(UFunction.STARTDT_ACT), UFrame(UFunction.STARTDT_ACT)]


async def test_startdt_never_confirmed_is_an_error_after_bounded_attempts() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with scripted_outstation(silent) as port:
        with pytest.raises(MasterError, match="never confirmed STARTDT"):
            async with Iec104Master("127.0.0.1", port, answer_timeout_s=0.1, startdt_attempts=3):
                pass


async def test_testfr_is_answered_and_i_frames_are_acknowledged() -> None:
    acks: list[object] = []

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await read_frame(reader) == UFrame(UFunction.STARTDT_ACT)
        writer.write(encode_frame(UFrame(UFunction.STARTDT_CON)))
        writer.write(encode_frame(UFrame(UFunction.TESTFR_ACT)))
        acks.append(await read_frame(reader))
        for seq in range(3):
            asdu = Asdu(
                TypeId.M_ME_TF_1, Cot.SPONTANEOUS, 1, (InfoObject(200, 1000.0 * seq, time_tag=Cp56Time(1e9)),)
            )
            writer.write(encode_frame(IFrame(seq, 0, encode_asdu(asdu))))
        acks.append(await read_frame(reader))
        await reader.read()

    async with scripted_outstation(chatty) as port, Iec104Master("127.0.0.1", port, w=8) as master:
        await master.wait_for_measurement(200, lambda m: m.value == 2000.0, timeout_s=2)
        await asyncio.wait_for(_until(lambda: len(acks) == 2), 2)
        assert [m.value for m in master.measurements(200)] == [0.0, 1000.0, 2000.0]
    assert acks == [UFrame(UFunction.TESTFR_CON), SFrame(3)]


async def test_closed_connection_fails_a_pending_command() -> None:
    async def hang_up_on_command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(encode_frame(UFrame(UFunction.STARTDT_CON)))
        await read_frame(reader)  # the command: hang up instead of confirming

    async with scripted_outstation(hang_up_on_command) as port, Iec104Master("127.0.0.1", port) as master:
        with pytest.raises(MasterError):
            await master.send_setpoint(100, 20000.0)
        assert master.closed.is_set()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)
