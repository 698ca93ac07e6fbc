"""Who may connect: subprotocol, station id, allowlist, HTTP Basic Auth; a second connection replaces."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from urllib.parse import quote

import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ocpp_side.server import HANDSHAKE_REFUSALS
from tests.ocpp.conftest import SiteFactory
from tests.ocpp.stations import station


def _auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_wrong_or_missing_subprotocol_refused(make_site: SiteFactory) -> None:
    site = await make_site()
    for offered in (["ocpp2.1"], None):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{site.port}/CP1", subprotocols=offered)
        assert refused.value.response.status_code == 400
    assert site.station("CP1") is None


async def test_subprotocol_preference_and_version(make_site: SiteFactory) -> None:
    site = await make_site()
    async with connect(f"ws://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6", "ocpp2.0.1"]) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
        await site.until(lambda: site.station("CP1") is not None)


@pytest.mark.parametrize("path", ["/" + "x" * 49, "/a:b", "/"])
async def test_bad_station_id_refused(make_site: SiteFactory, path: str) -> None:
    site = await make_site()
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{site.port}{path}", subprotocols=["ocpp1.6"])
    assert refused.value.response.status_code == 400


async def test_unknown_station_refused(make_site: SiteFactory) -> None:
    site = await make_site({"accepted_stations": ["CP1"]})
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{site.port}/CP2", subprotocols=["ocpp1.6"])
    assert refused.value.response.status_code == 404
    async with station(site.port, "CP1") as cp:
        assert (await cp.call(call16.Heartbeat())).current_time
    assert site.station("CP2") is None


async def test_basic_auth(make_site: SiteFactory) -> None:
    site = await make_site({"security_profile": 1, "stations": {"CP1": {"password": "s3cret-password"}}})
    for headers in ({}, _auth("CP1", "wrong"), _auth("CP9", "s3cret-password")):
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                f"ws://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6"], additional_headers=headers
            )
        assert refused.value.response.status_code == 401
        assert refused.value.response.headers["WWW-Authenticate"].startswith("Basic")
    async with station(site.port, "CP1", additional_headers=_auth("CP1", "s3cret-password")) as cp:
        assert (await cp.call(call16.Heartbeat())).current_time
        await site.until(lambda: site.station("CP1") is not None)


async def test_second_connection_replaces_first(make_site: SiteFactory) -> None:
    site = await make_site({"boot_wait_s": 60.0})
    async with connect(f"ws://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6"]) as first:
        await site.until(lambda: site.station("CP1") is not None)
        async with station(site.port, "CP1", "ocpp2.0.1") as cp:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(first.recv(), 5.0)
            assert first.close_code == 1000
            await site.until(
                lambda: (v := site.station("CP1")) is not None and v.version.value == "ocpp2.0.1"
            )
            assert len(site.server.connections) == 1
            from ocpp.v201 import call as call201

            assert (await cp.call(call201.Heartbeat())).current_time
            assert site.station("CP1") is not None  # the old socket's end did not disconnect the new one
        await site.until(lambda: site.station("CP1") is None)


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/CP1%0D%0A2026-01-01%20INFO%20forged%20line", "U+000D at position 3"),  # CR LF: log forging
        ("/CP%00", "U+0000 at position 2"),
        ("/..%2F..%2Fetc", "'/' at position 2"),
        ("/%2E%2E", "'..'"),
        ("/.", "'.'"),
        ("/CP%201", "U+0020 at position 2"),
        ("/CP%091", "U+0009"),
        ("/CP%5C1", "'\\' at position 2"),
        ("/CP%252F", "'%' at position 2"),  # double-encoded
        ("/caf%C3%A9", "U+00E9 at position 3"),
        ("/CP%FF", "U+FFFD"),  # not UTF-8
        ("/CP%E2%80%AE1", "U+202E"),  # a bidi override
        ("/CP%7F", "U+007F"),
    ],
)
async def test_station_id_must_be_printable_ascii_without_separators(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture, path: str, said: str
) -> None:
    caplog.set_level(logging.DEBUG)
    site = await make_site()
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{site.port}{path}", subprotocols=["ocpp1.6"])
    response = refused.value.response
    assert response.status_code == 400
    assert said in response.body.decode() and "printable ASCII" in response.body.decode()
    registry = site.runtime.metrics.registry
    assert (
        registry.get_sample_value("ocpp809_ocpp_handshakes_refused_total", {"reason": "bad_station_id"}) == 1
    )
    assert not site.server.connections
    # Nothing a peer sent starts a line of its own in the log.
    for record in caplog.records:
        assert not set(record.getMessage()) & {"\r", "\n", "\x00", "\u202e"}


@pytest.mark.parametrize("station_id", ["DE*ABC*E123-4_5.6=7+8|9@x", "x" * 48, "A~!$&'()[]{}<>;,?^`\"#"[:20]])
async def test_station_ids_with_punctuation_accepted(make_site: SiteFactory, station_id: str) -> None:
    site = await make_site()
    async with connect(
        f"ws://127.0.0.1:{site.port}/{quote(station_id, safe='')}", subprotocols=["ocpp1.6"]
    ) as ws:
        await ws.send('[2, "h", "Heartbeat", {}]')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5.0))[:2] == [3, "h"]
        assert site.station(station_id) is not None


async def test_refusal_and_error_counters_have_their_series_from_the_start(make_site: SiteFactory) -> None:
    """A dashboard's rate() needs a series before the first event: every known label starts at 0."""
    site = await make_site()
    registry = site.runtime.metrics.registry
    for reason in HANDSHAKE_REFUSALS:
        assert registry.get_sample_value("ocpp809_ocpp_handshakes_refused_total", {"reason": reason}) == 0.0
    for code in (
        "FormationViolation",
        "FormatViolation",
        "NotImplemented",
        "NotSupported",
        "RpcFrameworkError",
    ):
        assert registry.get_sample_value("ocpp809_ocpp_call_errors_sent_total", {"code": code}) == 0.0
    # The refusals the server gives are exactly the known ones: a new one would start late.
    with pytest.raises(InvalidStatus):
        await connect(f"ws://127.0.0.1:{site.port}/", subprotocols=["ocpp1.6"])
    refused = {
        s.labels["reason"]
        for m in registry.collect()
        if m.name == "ocpp809_ocpp_handshakes_refused"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert refused == set(HANDSHAKE_REFUSALS)
