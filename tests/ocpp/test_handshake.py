"""Who may connect: subprotocol, station id, allowlist, HTTP Basic Auth; a second connection replaces."""

from __future__ import annotations

import asyncio
import base64

import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

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
