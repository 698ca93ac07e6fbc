"""The socket shell around one ``StationSession``: I/O and the clock, no OCPP rule.

It reads the station's frames into the session, hands the session's events to the
core (``runtime.submit``) and to the relay, writes the frames the session wants sent,
and sees to the session's ``next_deadline()``: a deadline due before the server's next
sweep gets a timer of its own; a later one (an answer due in ``call_timeout_s``, one
per station in a fan-out) waits for a sweep to come near it, so a fan-out sets none.

After a frame the events go first, then the frames: the core may answer an event with
a newer allocation for this station, and the session then sends that one (its limit
slot holds the latest only). Allocations from the core go through the server's single
send loop instead (``wake``), so a fan-out never writes inside the core's listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.runtime import CoreRuntime
from ocpp_side.peer_log import PeerLog
from ocpp_side.relay_link import UpstreamRelay
from ocpp_side.session import RelayedAnswered, StationCalled, StationSession
from ocpp_side.wire import send_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShellContext:
    """What every connection of one server shares."""

    runtime: CoreRuntime  # events go to runtime.submit, looked up at each call (the bench wraps it)
    wake: Callable[[StationConnection], None]  # put a connection in the server's send loop
    spawn: Callable[[Coroutine[Any, Any, object]], None]  # run a coroutine as a task the server owns
    peer_log: PeerLog
    horizon: Callable[[], float]  # when the server next looks at every connection's deadline


class StationConnection:
    __slots__ = ("_ctx", "_timer", "_timer_at", "in_ready", "relay", "session", "station_id", "ws")

    def __init__(self, session: StationSession, ws: ServerConnection, ctx: ShellContext) -> None:
        self.session = session
        self.ws = ws
        self.station_id = session.station_id
        self._ctx = ctx
        self.in_ready = False  # queued in the server's send loop
        self.relay: UpstreamRelay | None = None  # with a CSMS: where the relay events go
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the deadline the timer is set for

    # -- for the server and the relay --------------------------------------------------

    def wake(self) -> None:
        """The session may have frames to send: let the server's send loop ask it."""
        self._ctx.wake(self)

    async def flush(self, now: float | None = None) -> None:
        """Hand the session's events on, then write its frames; set the timer."""
        session, runtime = self.session, self._ctx.runtime
        if now is None:
            now = runtime.clock()
        for event in session.events():
            if isinstance(event, StationCalled | RelayedAnswered):
                self._to_relay(event, now)
            else:
                runtime.submit(event)
        frames = session.frames_to_send(now)
        if frames:
            await self.write(frames)
        self.arm_timer()

    async def write(self, frames: Sequence[bytes]) -> None:
        """Write ``frames`` in order as text frames; at once while the socket takes them."""
        ws = self.ws
        for index, frame in enumerate(frames):
            if not send_now(ws, frame):
                try:
                    for later in frames[index:]:
                        await ws.send(later, text=True)
                except ConnectionClosed:
                    pass  # the reader sees the close and fails the session's calls
                return

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    def arm_timer(self) -> None:
        """A timer at the session's next deadline, if it falls before the server's next sweep
        (which calls this again) and no earlier timer is set."""
        deadline = self.session.next_deadline()
        if deadline is None or deadline >= self._ctx.horizon():
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay_s = max(0.0, deadline - self._ctx.runtime.clock())
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    # -- the station's side -------------------------------------------------------------

    async def serve(self) -> None:
        """Read frames until the socket closes."""
        ws, session, ctx = self.ws, self.session, self._ctx
        try:
            while True:
                data = await ws.recv()
                try:
                    now = ctx.runtime.clock()
                    session.receive_frame(data, now)
                    await self.flush(now)
                except ConnectionClosed:
                    raise
                except Exception:  # noqa: BLE001 - a bug of ours must not cost the station its connection
                    ctx.peer_log.log(
                        log, logging.ERROR, self.station_id, "frame not handled", "%s", data, exc_info=True
                    )
        except ConnectionClosed:
            pass

    def lost(self) -> None:
        """The socket is gone: the session fails what is pending, the relay hears of its calls."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self.session.connection_lost(self._ctx.runtime.clock())
        for event in self.session.events():
            if isinstance(event, RelayedAnswered):
                self._to_relay(event, 0.0)

    # -- internals ------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        session = self.session
        if session.closed:
            return
        session.handle_timeout(self._ctx.runtime.clock())
        if session.has_events():
            self._ctx.spawn(self.flush())
            return
        if session.wants_to_send():
            self.wake()
        self.arm_timer()

    def _to_relay(self, event: StationCalled | RelayedAnswered, now: float) -> None:
        relay = self.relay
        if isinstance(event, RelayedAnswered):
            if relay is not None:
                relay.station_answered(event.call, event.outcome)
        elif relay is not None:
            relay.station_call(event.call, event.raw)
        else:  # the relay has gone meanwhile: answer it here (the frames go out next)
            self.session.answer_locally(event.call, now)
