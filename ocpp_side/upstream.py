"""One websocket client toward the operator's CSMS, reconnecting with backoff.

``UpstreamLink`` connects to ``{csms_url}/{identity}`` with one OCPP subprotocol (and
Basic Auth / a client certificate when configured), hands every text frame to
``on_frame`` in order, reports ``on_up`` / ``on_down``, and reconnects after a drop with
an exponential backoff (jittered, so thousands of stations do not come back at once).
It neither parses nor re-encodes frames: the relay forwards what it sends verbatim.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from ocpp_side.settings import UpstreamConfig
from ocpp_side.wire import send_now

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


def backoff_s(min_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Delays before each reconnection attempt: min, doubling up to max, each jittered down to half."""
    pick = (rng or random).uniform
    delay = min_s
    while True:
        yield pick(delay / 2, delay)
        delay = min(max_s, delay * 2)


def client_ssl_context(config: UpstreamConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert_file:  # security profile 3: the gateway's own certificate
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


@dataclass(frozen=True, slots=True)
class LinkSettings:
    url: str
    subprotocol: str
    password: str = ""  # Basic Auth (user = the identity) when set
    identity: str = ""
    ssl_context: ssl.SSLContext | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    open_timeout_s: float = 10.0
    max_size: int = 1048576


class UpstreamLink:
    def __init__(
        self,
        settings: LinkSettings,
        on_frame: Callable[[str], Awaitable[None]],
        on_up: Callable[[], None],
        on_down: Callable[[], None],
    ) -> None:
        self.settings = settings
        self._on_frame, self._on_up, self._on_down = on_frame, on_up, on_down
        self.ws: ClientConnection | None = None
        self.attempts = 0  # connection attempts made so far
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"upstream {self.settings.url}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a CSMS that never completes the closing handshake must not hold up a stop.
            await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await ws.close()

    async def wait_up(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancellation on 3.11
                await self._up.wait()
        return self.up

    def send(self, frame: str | bytes) -> bool:
        """Put ``frame`` on the wire as a text frame, unchanged; False when the link is down."""
        ws = self.ws
        if ws is None or not self.up:
            return False
        data = frame.encode() if isinstance(frame, str) else frame
        if not send_now(ws, data):
            task = asyncio.get_running_loop().create_task(self._send(ws, data))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return True

    @staticmethod
    async def _send(ws: ClientConnection, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data, text=True)

    async def _run(self) -> None:
        s = self.settings
        delays = backoff_s(s.reconnect_min_s, s.reconnect_max_s)
        headers = {}
        if s.password:
            token = base64.b64encode(f"{s.identity}:{s.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        while True:
            self.attempts += 1
            try:
                async with connect(
                    s.url,
                    subprotocols=[Subprotocol(s.subprotocol)],
                    additional_headers=headers,
                    ssl=s.ssl_context if s.url.startswith("wss://") else None,
                    compression=None,
                    open_timeout=s.open_timeout_s,
                    max_size=s.max_size,
                ) as ws:
                    if ws.subprotocol != s.subprotocol:
                        log.error("%s: the CSMS did not accept %s", s.url, s.subprotocol)
                    else:
                        delays = backoff_s(s.reconnect_min_s, s.reconnect_max_s)
                        await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                log.info("%s: CSMS link attempt %d failed: %s", s.url, self.attempts, exc)
            except Exception:
                log.exception("%s: CSMS link failed", s.url)
            await asyncio.sleep(next(delays))

    async def _serve(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._up.set()
        log.info("%s: CSMS link up", self.settings.url)
        try:
            self._on_up()
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                try:
                    await self._on_frame(text)
                except Exception:  # one bad frame must not cost the link
                    log.exception("%s: CSMS frame not handled: %.200s", self.settings.url, text)
        finally:
            self._up.clear()
            self.ws = None
            log.info("%s: CSMS link down", self.settings.url)
            self._on_down()
