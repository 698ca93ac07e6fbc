"""Series 4 units for the tests: the hello, the upgrade on "/", the looser dialect on the wire.

``legacy_unit`` is the ``ocpp`` library's 1.6 station of ``tests.ocpp.stations`` (strict
validation on its side, every gateway call recorded) behind the simulator's
``LooseConnection``; ``raw_unit`` is a bare websocket after the hello, for frames no
library would write; ``tcp`` is the bare TCP connection, for units that never get that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zoneinfo
from collections.abc import AsyncIterator, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from scenarios.legacy_unit import SUBPROTOCOL, LooseConnection, hello_connection, hello_line
from tests.ocpp.stations import Behaviour, Station16, running

WAIT_S = 5.0


@contextlib.asynccontextmanager
async def raw_unit(
    port: int,
    serial: str,
    subprotocols: Sequence[Subprotocol] | None = (SUBPROTOCOL,),
    hello: bytes | None = None,
    scheme: str = "ws",
    **connect_kwargs: Any,
) -> AsyncIterator[ClientConnection]:
    """A websocket to the legacy listener after ``hello`` (default: the Series 4 line for ``serial``);
    ``subprotocols`` None offers none; ``connect_kwargs`` go to websockets (headers, TLS)."""
    async with connect(
        f"{scheme}://127.0.0.1:{port}/",
        subprotocols=None if subprotocols is None else list(subprotocols),
        create_connection=hello_connection(hello_line(serial) if hello is None else hello),
        open_timeout=WAIT_S,
        **connect_kwargs,
    ) as ws:
        yield ws


@contextlib.asynccontextmanager
async def legacy_unit(
    port: int, serial: str, timezone: str = "UTC", behaviour: Behaviour | None = None
) -> AsyncIterator[Station16]:
    """A library 1.6 station that says its hello and writes the Series 4 dialect."""
    async with raw_unit(port, serial) as ws:
        loose: Any = LooseConnection(ws, zoneinfo.ZoneInfo(timezone), time.time)
        cp = Station16(serial, loose, behaviour or Behaviour())
        async with running(cp, ws):
            yield cp


async def closed_by_gateway(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection (bounded)."""
    async with asyncio.timeout(WAIT_S):
        return await reader.read()


async def reply(ws: ClientConnection, frame: str) -> list[Any]:
    """Send a raw ``frame`` and return the gateway's reply to it (its own calls are skipped, unanswered)."""
    unique_id = json.loads(frame)[1] if frame.startswith("[") else "-1"
    await ws.send(frame)
    async with asyncio.timeout(WAIT_S):
        for _ in range(50):
            message = json.loads(await ws.recv())
            if message[0] != 2 and message[1] == unique_id:
                return list(message)
    raise AssertionError(f"no reply to {frame}")
