"""The outbox of a station that is away, replayed on a link of its own.

What a station sent during a CSMS outage waits in the outbox; when the station is gone
by the time the CSMS returns (or the gateway restarts while it is away), ``OutboxDrain``
connects to the CSMS under the station's identity, in the subprotocol the station's
relay used, repeats the station's last BootNotification (the gate of ``relay_link``
applies: Pending/Rejected waits the CSMS's interval), replays the rows in order, and
closes once the outbox is empty. When the station comes back first, its relay starts
only after the drain has stopped, so no row is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.core.model import OcppVersion
from ocpp_side import codec
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind
from ocpp_side.outbox import StationLink
from ocpp_side.relay_link import NOT_ACCEPTED, Hub, TxMapper, UpstreamCalls, repeated, replay
from ocpp_side.upstream import STOP_TIMEOUT_S, UpstreamLink
from ocpp_side.versions import rules_for

log = logging.getLogger(__name__)


class OutboxDrain:
    def __init__(
        self, hub: Hub, station_id: str, station_link: StationLink, done: Callable[[OutboxDrain], None]
    ) -> None:
        self.hub = hub
        self._done = done  # told when the drain ends, however
        self.station_id = station_id
        self.boot = station_link.boot
        self.rules = rules_for(OcppVersion(station_link.subprotocol))
        password = hub.config.passwords.get(station_id, "")
        self.link = UpstreamLink(
            hub.link_settings(station_id, station_link.subprotocol, password),
            self._on_frame,
            self._wake_up,
            self._on_down,
        )
        self.calls = UpstreamCalls(f"{station_id} (away)", self.link, hub.config.call_timeout_s)
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        log.info("%s: replaying its outbox while it is away", self.station_id)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"drain {self.station_id}")
        self.link.start()

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait({self._worker}, timeout=STOP_TIMEOUT_S)
        await self.link.stop()

    def _wake_up(self) -> None:
        self._wake.set()

    def _on_down(self) -> None:
        self.calls.fail_all()

    async def _on_frame(self, text: str) -> None:
        frame = codec.parse_frame(text)
        if type(frame) is Call:  # nobody to ask: the station is away
            code = self.rules.ERROR_CODES[ErrorKind.GENERIC]
            self.link.send(codec.encode_error(frame.unique_id, code, "the station is not connected"))
        elif type(frame) is CallResult or type(frame) is CallError:
            self.calls.replied(frame, text)

    async def _work(self) -> None:
        outbox = self.hub.outbox
        try:
            while outbox.has_pending(self.station_id):
                await self._wake.wait()
                self._wake.clear()
                if not self.link.up:
                    continue  # the link's own backoff; _wake_up when it is up
                retry_s = await self._drain_once()
                if retry_s is not None and self.link.up:
                    await asyncio.sleep(retry_s)
                    self._wake.set()
            log.info("%s: outbox delivered while the station is away", self.station_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: replaying the outbox failed", self.station_id)
        finally:
            with contextlib.suppress(Exception):
                await self.link.stop()
            self._done(self)

    async def _drain_once(self) -> float | None:
        """One attempt on the current link: None when done (or down), else seconds to wait."""
        config = self.hub.config
        if self.boot is not None:
            reply = await self.calls.exchange(*repeated(self.boot))
            if reply is None:
                return config.reconnect_min_s
            answer = reply[0]
            if type(answer) is CallResult and answer.payload.get("status") in NOT_ACCEPTED:
                interval = answer.payload.get("interval")
                return float(interval) if type(interval) is int and interval > 0 else config.reconnect_max_s
        metrics = self.hub.metrics

        def replayed() -> None:
            metrics.outbox_replayed.inc()
            metrics.outbox_depth.set(self.hub.outbox.depth)

        mapper = TxMapper(self.hub.outbox, self.station_id, self.rules)
        renumber = self.rules.IDS_UNIQUE_ACROSS_CONNECTIONS
        done = await replay(self.hub.outbox, self.station_id, self.calls.exchange, mapper, replayed, renumber)
        return None if done else config.reconnect_min_s
