"""OCPP-J framing rules on a live connection: malformed input gets a CALLERROR, the connection stays."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect

from tests.ocpp.conftest import SiteFactory

WAIT_S = 5.0


async def _exchange(ws, frame: str | bytes) -> list:  # type: ignore[no-untyped-def,type-arg]
    await ws.send(frame)
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))


@pytest.mark.parametrize(
    ("version", "frame", "code", "answer_id"),
    [
        ("ocpp1.6", "this is not json", "FormationViolation", "-1"),
        ("ocpp2.0.1", "this is not json", "RpcFrameworkError", "-1"),
        ("ocpp1.6", '{"not": "an array"}', "FormationViolation", "-1"),
        ("ocpp1.6", '[2, "m1", "Heartbeat"]', "FormationViolation", "m1"),
        ("ocpp1.6", '[2, "m2", "Heartbeat", []]', "FormationViolation", "m2"),
        ("ocpp2.0.1", '[2, "m2", "Heartbeat", []]', "FormatViolation", "m2"),
        ("ocpp1.6", '[9, "m3", "Heartbeat", {}]', "ProtocolError", "m3"),
        ("ocpp2.0.1", '[9, "m3", "Heartbeat", {}]', "MessageTypeNotSupported", "m3"),
        ("ocpp1.6", '[2, "m4", "NoSuchAction", {}]', "NotImplemented", "m4"),
        ("ocpp1.6", '[2, "m5", "Reset", {"type": "Hard"}]', "NotSupported", "m5"),
        ("ocpp2.0.1", '[2, "m5", "SetChargingProfile", {"bad": 1}]', "NotSupported", "m5"),
        (
            "ocpp1.6",
            '[2, "m6", "BootNotification", {"chargePointVendor": "V"}]',
            "OccurenceConstraintViolation",
            "m6",
        ),
        ("ocpp2.0.1", '[2, "m6", "Heartbeat", {"extra": 1}]', "FormatViolation", "m6"),
        (
            "ocpp1.6",
            '[2, "m7", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "M"}]',
            "TypeConstraintViolation",
            "m7",
        ),
        (
            "ocpp1.6",
            '[2, "m8", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Bad"}]',
            "PropertyConstraintViolation",
            "m8",
        ),
        (
            "ocpp1.6",
            (
                '[2, "m9", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00",'
                ' "sampledValue": [{"value": "1"}]}]}]'
            ),
            "PropertyConstraintViolation",  # a timestamp without a timezone is not ISO 8601 date-time
            "m9",
        ),
    ],
)
async def test_malformed_frame_gets_callerror_and_connection_stays(
    make_site: SiteFactory, version: str, frame: str, code: str, answer_id: str
) -> None:
    site = await make_site({"boot_wait_s": 60.0})
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=[version]) as ws:
        answer = await _exchange(ws, frame)
        assert answer[0] == 4 and answer[1] == answer_id and answer[2] == code
        assert isinstance(answer[3], str) and answer[4] == {}
        # Still served: a valid call gets its answer on the same connection.
        answer = await _exchange(ws, '[2, "ok", "Heartbeat", {}]')
        assert answer[:2] == [3, "ok"] and answer[2]["currentTime"].endswith("Z")


async def test_binary_frame_refused(make_site: SiteFactory) -> None:
    site = await make_site({"boot_wait_s": 60.0})
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=["ocpp1.6"]) as ws:
        answer = await _exchange(ws, b'[2, "b1", "Heartbeat", {}]')
        assert answer[0] == 4 and answer[2] == "FormationViolation"


async def test_gateway_call_ids_are_distinct_and_short(make_site: SiteFactory) -> None:
    site = await make_site({"boot_wait_s": 0.0})
    seen: list[str] = []
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=["ocpp1.6"]) as ws:
        for _ in range(3):  # answer each call with a CALLERROR: the next only comes after it
            message = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            assert message[0] == 2
            seen.append(message[1])
            await ws.send(json.dumps([4, message[1], "NotSupported", "", {}]))
    assert len(set(seen)) == 3
    assert all(i.startswith("ocpp809-") and len(i) <= 36 for i in seen)


async def test_one_outstanding_call_per_connection(make_site: SiteFactory) -> None:
    # The quiet window (0.3 s) is far inside the call timeout (2 s), so a loaded machine
    # delaying this test cannot make the next call land inside it.
    site = await make_site({"boot_wait_s": 0.0, "call_timeout_s": 2.0})
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=["ocpp1.6"]) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert first[0] == 2
        # Unanswered: nothing else arrives until the call times out (2 s), then the next comes.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        second = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        assert second[0] == 2 and second[1] != first[1]


@pytest.mark.parametrize(
    ("version", "code"), [("ocpp1.6", "FormationViolation"), ("ocpp2.0.1", "RpcFrameworkError")]
)
async def test_deep_json_gets_callerror_whatever_its_depth(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture, version: str, code: str
) -> None:
    """Issue 13: ~1,000 nested arrays went unanswered (a RecursionError in the codec)."""
    caplog.set_level(logging.INFO)
    site = await make_site({"boot_wait_s": 60.0})
    async with connect(f"ws://127.0.0.1:{site.port}/CPX", subprotocols=[version]) as ws:
        for depth in (65, 990, 1000, 1024, 1025, 5000):
            answer = await _exchange(ws, "[" * depth + "]" * depth)
            assert answer[:3] == [4, "-1", code] and answer[4] == {}
        deep_call = '[2, "d1", "DataTransfer", {"vendorId": "v", "data": ' + "[" * 999 + "]" * 999 + "}]"
        assert (await _exchange(ws, deep_call))[:3] == [4, "d1", code]
        answer = await _exchange(ws, '[2, "ok", "Heartbeat", {}]')
        assert answer[:2] == [3, "ok"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
