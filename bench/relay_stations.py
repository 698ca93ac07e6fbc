"""Stations for the relay benchmark: the fan-out bench's lean stations, charging.

Each station (``bench.stations.SimStation``: raw websockets, frames by hand, the server's
CALLs answered at once) runs transactions over and over: StartTransaction, ``meter_per_tx``
MeterValues carrying the transaction's id, StopTransaction, then the next one; one CALL
outstanding per station as OCPP-J requires. Every CALL is timed by the station from just
before its frame is written to its CALLRESULT handed back (the same code in every case, so
the station's own cost cancels out of the differences the harness takes).

First ``tx_open`` opens a transaction on every station and puts each at a random point of
its cycle (seeded), so that the loads mix the three calls in the ratio 1 : ``meter_per_tx``
: 1 from the start instead of every station starting (and stopping) at once. Two loads,
each bounded:

* ``tx_paced``: open loop at a fixed total rate, the stations taking turns evenly (a station
  whose previous call is still unanswered when its turn comes skips it, counted);
* ``tx_burst``: closed loop, every station sends its next call as soon as the previous one
  is answered, ``calls_per_station`` each: the most the system under test keeps up with.

Run in its own process (``run_tx_stations``); every command bounded in time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

from bench.control import serve_commands
from bench.stations import V16, CallErrorReceived, Fleet, SimStation, meter_payload, raise_fd_limit

log = logging.getLogger(__name__)

START, METER, STOP = "StartTransaction", "MeterValues", "StopTransaction"
ACTIONS = (START, METER, STOP)


@dataclass(slots=True)
class TxState:
    """Where one station is in its transaction cycle."""

    step: int = 0  # 0: StartTransaction next; 1..meter_per_tx: MeterValues; then StopTransaction
    tx_id: int | None = None
    meter_wh: int = 0
    busy: bool = False


@dataclass(slots=True)
class TxLog:
    """What one load sent and got back."""

    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ACTIONS})
    failed: int = 0
    call_errors: int = 0
    skipped: int = 0  # paced: the station's previous call was still unanswered at its turn
    errors: list[str] = field(default_factory=list)

    def failure(self, exc: BaseException) -> None:
        self.failed += 1
        self.call_errors += isinstance(exc, CallErrorReceived)
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def as_dict(self, elapsed_s: float, unanswered: int) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "latencies_s": self.latencies_s,
            "failed": self.failed,
            "call_errors": self.call_errors,
            "skipped": self.skipped,
            "unanswered": unanswered,
            "errors": self.errors,
            "elapsed_s": elapsed_s,
        }


class _Payloads:
    """Frames' payloads by hand (bytes formatting only), readings with a fresh timestamp each second."""

    def __init__(self) -> None:
        self._at = -1
        self.timestamp = b""
        sampled = meter_payload(V16, 0)["meterValue"][0]["sampledValue"]
        self._sampled = orjson.dumps(sampled)

    def _refresh(self) -> None:
        now = int(time.time())
        if now != self._at:
            self._at = now
            self.timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)).encode()

    def start(self, id_tag: bytes, meter_wh: int) -> bytes:
        self._refresh()
        return b'{"connectorId":1,"idTag":"%b","meterStart":%d,"timestamp":"%b"}' % (
            id_tag,
            meter_wh,
            self.timestamp,
        )

    def meter(self, tx_id: int) -> bytes:
        self._refresh()
        return b'{"connectorId":1,"transactionId":%d,"meterValue":[{"timestamp":"%b","sampledValue":%b}]}' % (
            tx_id,
            self.timestamp,
            self._sampled,
        )

    def stop(self, tx_id: int, id_tag: bytes, meter_wh: int) -> bytes:
        self._refresh()
        return (
            b'{"transactionId":%d,"idTag":"%b","meterStop":%d,"timestamp":"%b","reason":"EVDisconnected"}'
            % (tx_id, id_tag, meter_wh, self.timestamp)
        )


class TxFleet(Fleet):
    """``bench.stations.Fleet`` (connect, boot, close) plus the charging loads."""

    def __init__(self) -> None:
        super().__init__()
        self.tx: dict[str, TxState] = {}
        self._payloads = _Payloads()

    def _next(self, station: SimStation, state: TxState, meter_per_tx: int) -> tuple[str, bytes]:
        id_tag = b"T-" + station.station_id.encode()
        if state.step == 0 or state.tx_id is None:
            state.step = 0
            return START, self._payloads.start(id_tag, state.meter_wh)
        if state.step <= meter_per_tx:
            return METER, self._payloads.meter(state.tx_id)
        return STOP, self._payloads.stop(state.tx_id, id_tag, state.meter_wh + 7200)

    def _send(self, station: SimStation, meter_per_tx: int, log_: TxLog) -> asyncio.Future[Any]:
        """Send the station's next call; its answer moves the station on and is logged."""
        state = self.tx.setdefault(station.station_id, TxState())
        action, payload = self._next(station, state, meter_per_tx)
        state.busy = True
        log_.sent[action] += 1
        sent_at = time.perf_counter()
        future = station.send_call(action, payload)

        def done(f: asyncio.Future[Any]) -> None:
            state.busy = False
            if f.cancelled():
                log_.failed += 1
                return
            exc = f.exception()
            if exc is not None:
                log_.failure(exc)
                return
            log_.latencies_s[action].append(time.perf_counter() - sent_at)
            log_.answered[action] += 1
            answer = f.result()
            if action == START:
                tx_id = answer.get("transactionId") if isinstance(answer, dict) else None
                if isinstance(tx_id, int):
                    state.tx_id, state.step = tx_id, 1
            elif action == METER:
                state.step += 1
            else:
                state.step, state.tx_id = 0, None
                state.meter_wh += 7200

        future.add_done_callback(done)
        return future

    def _stations(self, prefix: str) -> list[SimStation]:
        return [s for s in self.stations.values() if s.station_id.startswith(prefix)]

    async def _drain(self, pending: set[asyncio.Future[Any]], timeout_s: float) -> int:
        """Wait (bounded) for the calls still unanswered; how many stayed so."""
        pending = {f for f in pending if not f.done()}
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        return sum(1 for f in pending if not f.done())

    async def tx_open(
        self, prefix: str, rate_per_s: float, meter_per_tx: int, timeout_s: float, seed: int = 809
    ) -> dict[str, Any]:
        """Every station starts a transaction (``rate_per_s`` a second in all), then stands at a random
        point of its cycle: its next call is one of the transaction's MeterValues or its Stop."""
        stations = self._stations(prefix)
        rng = random.Random(seed)
        log_ = TxLog()
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[Any]] = set()
        start = loop.time()
        for index, station in enumerate(stations):
            delay = start + index / rate_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.tx[station.station_id] = TxState()
            pending.add(self._send(station, meter_per_tx, log_))
        unanswered = await self._drain(pending, timeout_s)
        for station in stations:
            state = self.tx[station.station_id]
            if state.tx_id is not None:
                state.step = rng.randint(1, meter_per_tx + 1)
        return log_.as_dict(loop.time() - start, unanswered)

    async def tx_paced(
        self, prefix: str, rate_per_s: float, duration_s: float, meter_per_tx: int, timeout_s: float
    ) -> dict[str, Any]:
        """Open loop: ``rate_per_s`` calls a second in all for ``duration_s``, the stations in turn."""
        stations = self._stations(prefix)
        log_ = TxLog()
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[Any]] = set()
        n, slot = len(stations), 0
        start = loop.time()
        end = start + duration_s
        while n and loop.time() < end:
            now = loop.time()
            while start + slot / rate_per_s <= now:
                station = stations[slot % n]
                slot += 1
                if self.tx.get(station.station_id, TxState()).busy:
                    log_.skipped += 1
                    continue
                future = self._send(station, meter_per_tx, log_)
                pending.add(future)
                future.add_done_callback(pending.discard)
            await asyncio.sleep(0.002)
        elapsed = loop.time() - start
        unanswered = await self._drain(pending, timeout_s)
        return log_.as_dict(elapsed, unanswered)

    async def tx_burst(
        self, prefix: str, calls_per_station: int, meter_per_tx: int, timeout_s: float
    ) -> dict[str, Any]:
        """Closed loop: each station sends ``calls_per_station`` calls, the next as soon as the last is answered."""
        stations = self._stations(prefix)
        log_ = TxLog()
        in_flight: set[asyncio.Future[Any]] = set()

        async def one(station: SimStation) -> None:
            for _ in range(calls_per_station):
                future = self._send(station, meter_per_tx, log_)
                in_flight.add(future)
                try:
                    await future
                except (ConnectionError, CallErrorReceived):
                    return  # logged by the callback; a station that lost its connection stops
                finally:
                    in_flight.discard(future)

        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one(s)) for s in stations]
        _done, not_done = await asyncio.wait(tasks, timeout=timeout_s) if tasks else (set(), set())
        elapsed = time.perf_counter() - started
        for task in not_done:
            task.cancel()
        if not_done:
            await asyncio.wait(not_done, timeout=5)
            log_.errors.append(f"burst not finished within {timeout_s:g} s ({len(not_done)} stations)")
        return log_.as_dict(elapsed, len(in_flight))

    async def tx_finish(self, prefix: str, meter_per_tx: int, timeout_s: float) -> dict[str, Any]:
        """Each station with a transaction open stops it (so the CSMS sees every one complete)."""
        log_ = TxLog()
        pending: set[asyncio.Future[Any]] = set()
        for station in self._stations(prefix):
            state = self.tx.get(station.station_id)
            if state is not None and state.tx_id is not None and not state.busy:
                state.step = meter_per_tx + 1
                pending.add(self._send(station, meter_per_tx, log_))
        started = time.perf_counter()
        unanswered = await self._drain(pending, timeout_s)
        return log_.as_dict(time.perf_counter() - started, unanswered)


async def _serve_commands(conn: Connection) -> None:
    fleet = TxFleet()
    await serve_commands(conn, fleet, fleet.close, "relay-stations")


def run_tx_stations(conn: Connection) -> None:
    """Process entry point: serve harness commands until told to exit."""
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    asyncio.run(_serve_commands(conn))
