"""A simulated Series 4 unit: the hello line, then OCPP 1.6 in the unit's looser dialect.

What makes it a Series 4 unit, and nothing else (the charger itself is ``SimStation``'s,
the OCPP messages are ``Client16``'s, strictly validated by the ``ocpp`` library):

- ``hello_connection``: websockets' own client connection that writes the hello line as
  soon as the socket is up, before websockets sends the upgrade request (over TLS too);
- the upgrade on path ``/`` offering subprotocol ``ocpp1.5``;
- ``LooseConnection``: what the ``ocpp`` library writes is loosened on its way to the
  wire (``loosen``): numbers as decimal strings, timestamps in local time without a zone,
  an unknown field in every payload, BootNotification without a serial number.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

MODEL, VENDOR = "S4-ULTRA", "Voltex"  # in the hello and in the BootNotification
HELLO = f"S4HELLO model={MODEL} vendor={VENDOR} serial={{serial}} fw=2016.3\r\n"
SUBPROTOCOL = Subprotocol("ocpp1.5")
UNKNOWN_FIELD = "s4Uptime"  # a field no OCPP 1.6 schema has


def hello_line(serial: str) -> bytes:
    return HELLO.format(serial=serial).encode("ascii")


class HelloClientConnection(ClientConnection):
    """websockets' client connection that says its hello first (``hello`` is bound by ``hello_connection``)."""

    hello: bytes = b""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(self.hello)  # before the upgrade request, which the handshake writes next


def hello_connection(hello: bytes) -> type[HelloClientConnection]:
    """A client connection class for ``websockets.connect(create_connection=...)`` saying ``hello``."""

    class BoundHelloClientConnection(HelloClientConnection):
        pass

    BoundHelloClientConnection.hello = hello
    return BoundHelloClientConnection


def loosen(text: str, zone: tzinfo, uptime_s: int = 0) -> str:
    """An OCPP-J CALL or CALLRESULT as a Series 4 unit writes it; other frames unchanged."""
    frame = orjson.loads(text)
    if not isinstance(frame, list) or not frame or frame[0] not in (2, 3):
        return text
    payload = frame[-1]
    if not isinstance(payload, dict):
        return text
    if frame[0] == 2 and frame[2] == "BootNotification":
        payload.pop("chargePointSerialNumber", None)
    loose = _loose(payload, zone)
    loose[UNKNOWN_FIELD] = str(uptime_s)
    frame[-1] = loose
    return orjson.dumps(frame).decode()


def _loose(value: Any, zone: tzinfo) -> Any:
    if isinstance(value, dict):
        return {key: _loose(item, zone) for key, item in value.items()}
    if isinstance(value, list):
        return [_loose(item, zone) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        return text if "e" not in text else f"{value:.12f}".rstrip("0").rstrip(".")
    if isinstance(value, str) and value.endswith(("Z", "+00:00")):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            return value
        return stamp.astimezone(zone).replace(tzinfo=None).isoformat()  # local, no zone
    return value


class LooseConnection:
    """The socket as the ``ocpp`` library sees it: what it sends is loosened (``loosen``)."""

    def __init__(self, ws: ClientConnection, zone: tzinfo, clock: Any) -> None:
        self.ws = ws
        self.zone = zone
        self.clock = clock
        self.started_s = clock()

    async def send(self, message: str) -> None:
        await self.ws.send(loosen(message, self.zone, int(self.clock() - self.started_s)))

    async def recv(self) -> Any:
        return await self.ws.recv()

    async def close(self) -> None:
        await self.ws.close()
