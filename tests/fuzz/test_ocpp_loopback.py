"""OCPP-J fuzzing over real websockets: the station server (core, store) on 127.0.0.1.

Each hypothesis example is one station connection (OCPP 1.6 or 2.0.1 by subprotocol) that
sends a chunk of generated frames (``ocpp_cases``: valid, near-valid, hostile, replies to
nothing, duplicate ids, binary frames) without waiting, then a sentinel Heartbeat; the
gateway's own calls meanwhile get an error, garbage or nothing. Some connections end with
a frame that must close them (invalid UTF-8: 1007; over ``max_message_bytes``: 1009).
About 350 frames in all, on one running server. Then:

- every frame that is not a well-formed reply got exactly one answer, in order, with the id
  and kind OCPP-J requires (a CALLERROR for every malformed CALL, with its fixed code where
  OCPP fixes one; a CALLRESULT for every valid CALL), and replies to nothing got none;
- the connections that had to close did, with the right code;
- station ids that could forge log lines or paths are refused at the handshake (400);
- a well-behaved station is served afterwards (BootNotification accepted);
- the site total the core publishes is finite; no ERROR record with a traceback was logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from gateway.core.model import OcppVersion
from ocpp_side.server import StationServer
from tests.fuzz.ocpp_cases import V16, V201, Frame, check_answer, expect, frames
from tests.ocpp.conftest import Site, site_config
from tests.support.loopback import start_core

CHUNKS = 30
CHUNK_SIZE = (10, 20)
WAIT_S = 10.0
MAX_MESSAGE_BYTES = 1024 * 1024  # the default of ocpp.max_message_bytes
BOOT = {
    V16: {"chargePointVendor": "V", "chargePointModel": "M"},
    V201: {"reason": "PowerUp", "chargingStation": {"vendorName": "V", "model": "M"}},
}


@dataclass
class Run:
    site: Site
    connections: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)


async def _read_until(ws: ClientConnection, sentinel: str, how: str, into: list[Any]) -> None:
    """Collect the answers (3/4) until the sentinel's; answer the gateway's calls by ``how``."""
    async with asyncio.timeout(WAIT_S):
        while True:
            raw = await ws.recv()
            message = orjson.loads(raw)
            if message[0] == 2:
                if how == "error":
                    await ws.send(orjson.dumps([4, message[1], "NotSupported", "", {}]).decode())
                elif how == "garbage":
                    await ws.send(orjson.dumps([3, message[1], {"bogus": [[1]]}]).decode())
                continue
            if message[1] == sentinel:
                return
            into.append(message)


async def _chunk(run: Run, version: OcppVersion, stream: list[Frame], how: str, closer: str | None) -> None:
    run.connections += 1
    station_id = f"FZ{run.connections}"
    sentinel = f"sentinel-{run.connections}"
    uri = f"ws://127.0.0.1:{run.site.port}/{station_id}"
    answers: list[Any] = []
    async with connect(uri, subprotocols=[version.value], max_size=2**22, open_timeout=WAIT_S) as ws:  # type: ignore[list-item]
        reader = asyncio.create_task(_read_until(ws, sentinel, how, answers))
        for frame in stream:
            await ws.send(frame.data)
            run.frames += 1
        await ws.send(orjson.dumps([2, sentinel, "Heartbeat", {}]).decode())
        try:
            await reader
        except (TimeoutError, ConnectionClosed) as exc:
            run.problems.append(
                f"{station_id}: no answer to the sentinel ({type(exc).__name__}); got {len(answers)}"
            )
            return
        expected = [(f, e) for f in stream if (e := expect(version, f.data)).answer is not None]
        if len(answers) != len(expected):
            run.problems.append(
                f"{station_id} ({version.value}): {len(expected)} answers due, {len(answers)} came:"
                f" {[(f.family, e.why) for f, e in expected]} vs {[a[:2] for a in answers]}"
            )
        for (frame, want), got in zip(expected, answers, strict=False):
            problem = check_answer(version, frame, want, got)
            if problem is not None:
                run.problems.append(f"{station_id} ({version.value}): {problem}")
            run.answered[want.why] = run.answered.get(want.why, 0) + 1
        if closer is not None:
            await _close_with(run, ws, station_id, closer)


async def _close_with(run: Run, ws: ClientConnection, station_id: str, closer: str) -> None:
    """A frame the server must answer by closing: invalid UTF-8 (1007) or too big (1009)."""
    code = 1007 if closer == "utf8" else 1009
    with contextlib.suppress(ConnectionClosed):
        if closer == "utf8":
            await ws.send(b'[2,"u","Heartbeat",{"x":"\xff\xfe"}]', text=True)
        else:
            await ws.send("[" + "1," * (MAX_MESSAGE_BYTES // 2) + "1]")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                while True:
                    await ws.recv()
    if ws.close_code != code:
        run.problems.append(f"{station_id}: {closer} frame closed with {ws.close_code}, not {code}")
    run.closed[closer] = run.closed.get(closer, 0) + 1


HOSTILE_IDS = [
    "CP1%0D%0A2026%20INFO%20forged",  # a forged log line
    "CP%00",
    "..%2F..%2Fetc",
    "%2E%2E",
    "x" * 49,
    "CP%20A",
    "CP%E2%80%AE",
]


async def _hostile_handshakes(run: Run) -> None:
    """Station ids that could forge log lines or paths are refused at the handshake (400)."""
    for station_id in HOSTILE_IDS:
        uri = f"ws://127.0.0.1:{run.site.port}/{station_id}"
        try:
            async with connect(uri, subprotocols=[V16.value], open_timeout=WAIT_S):  # type: ignore[list-item]
                run.problems.append(f"station id {station_id!r} was accepted")
        except InvalidStatus as exc:
            if exc.response.status_code != 400:
                run.problems.append(f"station id {station_id!r}: status {exc.response.status_code}, not 400")
        except (OSError, InvalidMessage) as exc:
            run.problems.append(f"station id {station_id!r}: no HTTP answer ({type(exc).__name__}: {exc})")


async def _well_behaved_station(run: Run, version: OcppVersion) -> None:
    uri = f"ws://127.0.0.1:{run.site.port}/WELL-{version.name}"
    async with connect(uri, subprotocols=[version.value], open_timeout=WAIT_S) as ws:  # type: ignore[list-item]
        await ws.send(orjson.dumps([2, "boot-1", "BootNotification", BOOT[version]]).decode())
        async with asyncio.timeout(WAIT_S):
            while True:
                message = orjson.loads(await ws.recv())
                if message[0] != 2:
                    break
    assert message[:2] == [3, "boot-1"] and message[2]["status"] == "Accepted", message


def test_ocpp_fuzz_over_websockets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    loop = asyncio.new_event_loop()
    config = site_config(tmp_path)

    async def start() -> Site:
        runtime = start_core(config)
        server = StationServer(config.ocpp, config.upstream, runtime)
        await server.start()
        return Site(config, runtime, server)

    site = loop.run_until_complete(start())
    run = Run(site)
    started = time.monotonic()
    try:

        @settings(
            max_examples=CHUNKS,
            phases=[Phase.generate],  # no shrinking: every example runs against the live server
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            version=st.sampled_from([V16, V201]),
            data=st.data(),
            how=st.sampled_from(["silent", "error", "garbage"]),
            closer=st.sampled_from([None, None, None, "utf8", "oversize"]),
        )
        def fuzz(version: OcppVersion, data: st.DataObject, how: str, closer: str | None) -> None:
            stream = data.draw(st.lists(frames(version), min_size=CHUNK_SIZE[0], max_size=CHUNK_SIZE[1]))
            loop.run_until_complete(_chunk(run, version, stream, how, closer))
            assert not run.problems, "\n".join(run.problems)

        fuzz()
        assert run.frames >= CHUNKS * CHUNK_SIZE[0], run.frames
        loop.run_until_complete(_hostile_handshakes(run))
        assert not run.problems, "\n".join(run.problems)
        for version in (V16, V201):
            loop.run_until_complete(_well_behaved_station(run, version))
        view = site.runtime.view()
        assert math.isfinite(view.total_power_w) and view.total_power_w >= 0.0, view
    finally:
        loop.run_until_complete(site.server.stop())
        loop.run_until_complete(site.runtime.close())
        loop.close()
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    print(  # shown with -s: what the run covered
        f"OCPP fuzz: {run.frames} frames on {run.connections} connections, answers {run.answered},"
        f" closed {run.closed},"
        f" {time.monotonic() - started:.1f} s"
    )
