"""Hostile OCPP peers (issue 13): what they send is answered, bounded in the log, and never poisons the core."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway.core.model import Quality
from ocpp_side.peer_log import PeerLog, brief, printable
from tests.ocpp.conftest import SiteFactory

WAIT_S = 5.0


async def _exchange(ws: ClientConnection, frame: str) -> list[Any]:
    await ws.send(frame)
    answer: list[Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    return answer


async def _reply_to(ws: ClientConnection, frame: str) -> list[Any]:
    """Send a CALL, read until its reply; the gateway's own calls meanwhile get NotSupported."""
    unique_id = json.loads(frame)[1]
    await ws.send(frame)
    async with asyncio.timeout(WAIT_S):
        while True:
            message: list[Any] = json.loads(await ws.recv())
            if message[0] == 2:
                await ws.send(json.dumps([4, message[1], "NotSupported", "", {}]))
            elif message[1] == unique_id:
                return message


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("ocpp_side", "gateway"))]


# -- the helper on its own -----------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_printable_escapes_and_bounds() -> None:
    assert printable("CP1") == "CP1"
    assert printable("CP1\r\n2026 INFO forged") == "CP1\\r\\n2026 INFO forged"
    assert printable("a\\r") == "a\\\\r"  # a peer's own backslash cannot pass for an escape
    assert printable("\x00\u202e\u2028") == "\\x00\\u202e\\u2028"
    assert printable("Ladesäule") == "Ladesäule"
    long = printable("x" * 2_000_000)
    assert long.startswith("x" * 200) and long.endswith("... (2000000 chars)") and len(long) < 230
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert len(printable(deep)) < 50 and len(brief(deep)) < 50  # no RecursionError
    assert brief(10**5000) == "<int>" and brief("a\nb") == "'a\\nb'"


def test_peer_log_rate_limits_per_peer_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("ocpp_side.test")
    clock = _Clock()
    peer_log = PeerLog(burst=10, window_s=60.0, clock=clock)
    logged = [peer_log.log(logger, logging.INFO, "CP1", "malformed frame", "%s", "x") for _ in range(1000)]
    assert logged[:10] == [True] * 10 and not any(logged[10:])  # the 1,000th is suppressed
    assert peer_log.log(logger, logging.INFO, "CP2", "malformed frame", "%s", "x")  # per peer
    assert peer_log.log(logger, logging.INFO, "CP1", "call refused", "%s", "x")  # per kind
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("CP1: malformed frame: x") == 10
    assert sum("the next ones are counted, not logged" in m for m in messages) == 1
    assert len(messages) == 13

    caplog.clear()
    clock.now_s = 61.0  # a new window: first the count of what was held back, then lines again
    assert peer_log.log(logger, logging.INFO, "CP1", "malformed frame", "%s", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "CP1: 990 more malformed frame lines suppressed (at most 10 per 60s)",
        "CP1: malformed frame: x",
    ]

    caplog.clear()
    for _ in range(20):
        peer_log.log(logger, logging.WARNING, "CP1", "malformed frame", "%s", "x")
    peer_log.flush("CP1")  # the peer went away
    assert (
        caplog.records[-1].getMessage()
        == "CP1: 11 more malformed frame lines suppressed (at most 10 per 60s)"
    )
    assert caplog.records[-1].levelno == logging.WARNING
    assert not peer_log.log(logger, logging.INFO, "CP1", "malformed frame")  # reconnecting resets nothing


def test_peer_log_forgets_quiet_peers() -> None:
    clock = _Clock()
    peer_log = PeerLog(clock=clock, max_peers=100)
    logger = logging.getLogger("ocpp_side.test")
    logger.setLevel(logging.INFO)
    try:
        for n in range(100):
            peer_log.log(logger, logging.INFO, f"10.0.0.{n}", "handshake refused")
        clock.now_s = 120.0
        peer_log.log(logger, logging.INFO, "10.0.1.1", "handshake refused")
        assert len(peer_log._peers) == 1
    finally:
        logger.setLevel(logging.NOTSET)


# -- on real sockets -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["ocpp1.6", "ocpp2.0.1"])
async def test_a_megabyte_action_name_logs_under_2_kb(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture, version: str
) -> None:
    """2 MB of action name became 4.2 MB of log (logged whole, twice)."""
    caplog.set_level(logging.DEBUG, logger="ocpp_side")
    caplog.set_level(logging.DEBUG, logger="gateway")
    site = await make_site({"boot_wait_s": 60.0})
    action = "X" * 999_000 + "\r\n2026-01-01 00:00:00 ERROR forged line"
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=[version]) as ws:
        await site.until(lambda: site.station("CPX") is not None)
        caplog.clear()
        answer = await _exchange(ws, json.dumps([2, "m1", action, {}]))
        assert answer[:3] == [4, "m1", "NotImplemented"] and len(answer[3]) <= 255
        messages = _logged(caplog)
    assert sum(len(m) for m in messages) < 2048
    assert sum(m.count("XXXX") > 0 for m in messages) == 1  # once
    assert not any("\n" in m or "\r" in m for m in messages)


async def test_the_thousandth_identical_warning_is_suppressed(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocpp_side")
    site = await make_site({"boot_wait_s": 60.0})
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=["ocpp1.6"]) as ws:
        for _ in range(1000):
            await ws.send("not json\r\n2026-01-01 00:00:00 ERROR forged line")
        for _ in range(1000):  # every one is still answered
            answer = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            assert answer[:3] == [4, "-1", "FormationViolation"]
        malformed = [m for m in _logged(caplog) if "malformed frame" in m]
        assert len(malformed) == 10 + 1  # the burst, then one line saying the rest is counted
        assert all("\n" not in m and "\\r\\n2026" in m for m in malformed[:10])
    await site.until(lambda: site.station("CPX") is None)
    assert "CPX: 990 more malformed frame lines suppressed (at most 10 per 60s)" in _logged(caplog)


async def test_overflowing_meter_reading_is_refused_by_the_core(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2.0.1 multiplier that overflows raised OverflowError after the answer; the reading stuck."""
    caplog.set_level(logging.INFO)
    site = await make_site(
        {"boot_wait_s": 60.0, "configure_metering": False, "stations": {"CS1": {"max_power_w": 11000.0}}}
    )

    def meter_values(value: float, multiplier: int) -> str:
        sampled = {
            "value": value,
            "measurand": "Power.Active.Import",
            "unitOfMeasure": {"unit": "W", "multiplier": multiplier},
        }
        payload = {
            "evseId": 0,
            "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [sampled]}],
        }
        return json.dumps([2, f"mv{value}-{multiplier}", "MeterValues", payload])

    async with connect(f"ws://127.0.0.1:{site.port}/CS1", subprotocols=["ocpp2.0.1"]) as ws:
        assert (await _reply_to(ws, meter_values(72, 2)))[0] == 3
        await site.until(lambda: (s := site.station("CS1")) is not None and s.power_w == 7200.0)
        for multiplier in (400, 10**18):
            assert (await _reply_to(ws, meter_values(5, multiplier)))[0] == 3  # answered as before
            await site.until(lambda: (s := site.station("CS1")) is not None and s.power_w is None)
            assert site.runtime.view().quality is Quality.INVALID
            assert (await _reply_to(ws, meter_values(36, 2)))[0] == 3  # a plausible value again
            await site.until(lambda: (s := site.station("CS1")) is not None and s.power_w == 3600.0)
        assert (await _reply_to(ws, '[2, "ok", "Heartbeat", {}]'))[:2] == [3, "ok"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_refused_handshakes_are_counted_but_logged_at_a_bounded_rate(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocpp_side")
    site = await make_site()
    for n in range(30):
        with pytest.raises(InvalidStatus):
            await connect(f"ws://127.0.0.1:{site.port}/CP{n}%0D%0Aforged", subprotocols=["ocpp1.6"])
    registry = site.runtime.metrics.registry
    assert (
        registry.get_sample_value("ocpp809_ocpp_handshakes_refused_total", {"reason": "bad_station_id"}) == 30
    )
    refused = [m for m in _logged(caplog) if "handshake refused" in m]
    assert len(refused) == 10 + 1  # the burst, then one line saying the rest is counted
    assert all(
        m.startswith("127.0.0.1: handshake refused: bad_station_id: the station id has U+000D")
        for m in refused[:10]
    )
