"""A fast CSMS for the relay benchmark: OCPP-J framing, minimal parsing, canned answers.

It speaks ``ocpp1.6`` and ``ocpp2.0.1`` (chosen per connection by subprotocol) so that the
same program is the end of the direct baseline (stations straight to it), the verbatim
relay (1.6 links) and the translated relay (2.0.1 links). Each CALL is parsed with orjson
(no schema validation, no routing library) and answered at once with the smallest
schema-valid CALLRESULT of its action; an action it has no answer for gets a CALLERROR
``NotImplemented`` and is counted, so the harness sees it. Whatever it is cheap on, the
relay's time is the gateway's time minus this.

Run in its own process (``run_fast_csms``) through ``bench.control``; every command bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.control import serve_commands
from bench.stations import V16, V201, raise_fd_limit

log = logging.getLogger(__name__)

CALL, CALLRESULT, CALLERROR = 2, 3, 4
ACCEPTED_ID = {"status": "Accepted"}


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


Answer = Callable[[dict[str, Any]], dict[str, Any]]


class FastCsms:
    """The CSMS: one coroutine per connection, canned answers, counts per version and action."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self._port = 0
        self.open_links: set[ServerConnection] = set()
        self.links_opened = 0
        self.calls: dict[str, int] = {}  # "<version> <action>" -> CALLs received
        self.unanswered: dict[str, int] = {}  # actions it had no answer for (CALLERROR sent)
        self.results_received = 0  # CALLRESULT/CALLERROR frames (it sends no CALLs: should stay 0)
        self._tx_ids = itertools.count(1)
        self._answers: dict[str, dict[str, Answer]] = {V16: self._v16_answers(), V201: self._v201_answers()}

    # -- answers ----------------------------------------------------------------------

    def _v16_answers(self) -> dict[str, Answer]:
        def boot(_p: dict[str, Any]) -> dict[str, Any]:
            return {"status": "Accepted", "currentTime": _now_iso(), "interval": 300}

        def start(_p: dict[str, Any]) -> dict[str, Any]:
            return {"transactionId": next(self._tx_ids), "idTagInfo": ACCEPTED_ID}

        def stop(p: dict[str, Any]) -> dict[str, Any]:
            return {"idTagInfo": ACCEPTED_ID} if "idTag" in p else {}

        return {
            "BootNotification": boot,
            "Heartbeat": lambda _p: {"currentTime": _now_iso()},
            "StatusNotification": lambda _p: {},
            "Authorize": lambda _p: {"idTagInfo": ACCEPTED_ID},
            "StartTransaction": start,
            "MeterValues": lambda _p: {},
            "StopTransaction": stop,
            "DataTransfer": lambda _p: {"status": "Accepted"},
            "DiagnosticsStatusNotification": lambda _p: {},
            "FirmwareStatusNotification": lambda _p: {},
        }

    def _v201_answers(self) -> dict[str, Answer]:
        def boot(_p: dict[str, Any]) -> dict[str, Any]:
            return {"status": "Accepted", "currentTime": _now_iso(), "interval": 300}

        def transaction_event(p: dict[str, Any]) -> dict[str, Any]:
            return {"idTokenInfo": ACCEPTED_ID} if "idToken" in p else {}

        def empty(_p: dict[str, Any]) -> dict[str, Any]:
            return {}

        return {
            "BootNotification": boot,
            "Heartbeat": lambda _p: {"currentTime": _now_iso()},
            "StatusNotification": empty,
            "Authorize": lambda _p: {"idTokenInfo": ACCEPTED_ID},
            "TransactionEvent": transaction_event,
            "MeterValues": empty,
            "NotifyEvent": empty,
            "NotifyReport": empty,
            "NotifyChargingLimit": empty,
            "ClearedChargingLimit": empty,
            "LogStatusNotification": empty,
            "FirmwareStatusNotification": empty,
            "SecurityEventNotification": empty,
            "DataTransfer": lambda _p: {"status": "Accepted"},
        }

    # -- the server ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await serve(
            self._serve,
            host,
            port,
            subprotocols=[Subprotocol(V16), Subprotocol(V201)],
            compression=None,
            ping_interval=None,
            max_size=2**20,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None

    async def _serve(self, ws: ServerConnection) -> None:
        version = ws.subprotocol
        if version not in self._answers:
            await ws.close(1002, "subprotocol required")
            return
        answers, calls = self._answers[version], self.calls
        self.open_links.add(ws)
        self.links_opened += 1
        try:
            async for message in ws:
                try:
                    frame = orjson.loads(message)
                    kind = frame[0]
                except (orjson.JSONDecodeError, IndexError, TypeError):
                    continue
                if kind != CALL:
                    self.results_received += 1
                    continue
                action = frame[2]
                key = f"{version} {action}"
                calls[key] = calls.get(key, 0) + 1
                answer = answers.get(action)
                if answer is None:
                    self.unanswered[key] = self.unanswered.get(key, 0) + 1
                    reply = [CALLERROR, frame[1], "NotImplemented", f"{action}: no bench answer", {}]
                else:
                    reply = [CALLRESULT, frame[1], answer(frame[3])]
                await ws.send(orjson.dumps(reply), text=True)
        except ConnectionClosed:
            pass
        finally:
            self.open_links.discard(ws)

    # -- harness commands ----------------------------------------------------------------

    def connected(self) -> int:
        return len(self.open_links)

    def counts(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "unanswered": dict(self.unanswered),
            "results_received": self.results_received,
            "links_open": len(self.open_links),
            "links_opened": self.links_opened,
        }


class _Controller:
    def __init__(self) -> None:
        self.csms = FastCsms()

    async def start(self) -> dict[str, Any]:
        await self.csms.start()
        return {"port": self.csms.port}

    def counts(self) -> dict[str, Any]:
        return self.csms.counts()

    def connected(self) -> int:
        return self.csms.connected()


async def _serve_commands(conn: Connection) -> None:
    controller = _Controller()
    await serve_commands(conn, controller, controller.csms.stop, "fast-csms")


def run_fast_csms(conn: Connection) -> None:
    """Process entry point: serve harness commands until told to exit."""
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    asyncio.run(_serve_commands(conn))
