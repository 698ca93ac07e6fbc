"""Writing frames on the hot path without a coroutine per frame.

``ServerConnection.send`` wraps every write in an async context manager and a drain
(tens of microseconds per frame, multiplied by thousands of stations in a fan-out).
When the connection is open and its write buffer has room, the same two steps it takes
(Sans-I/O ``protocol.send_text`` then ``send_data``) are done directly; otherwise the
caller falls back to ``await ws.send`` with its flow control and error handling.
Relies on websockets' layering, pinned below 18 in pyproject and covered by the tests.
"""

from __future__ import annotations

from websockets.asyncio.connection import Connection
from websockets.protocol import State

WRITE_ROOM_BYTES = 32 * 1024  # below websockets' default high-water mark


def send_now(ws: Connection, frame: bytes) -> bool:
    """Queue ``frame`` as one text frame at once; False if ``await ws.send`` must do it."""
    transport = ws.transport
    if (
        ws.protocol.state is not State.OPEN
        or ws.send_in_progress is not None
        or transport is None
        or transport.is_closing()
        or transport.get_write_buffer_size() > WRITE_ROOM_BYTES
    ):
        return False
    ws.protocol.send_text(frame)
    ws.send_data()
    return True
