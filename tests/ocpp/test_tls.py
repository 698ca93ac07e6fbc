"""Security profiles 2 (TLS + Basic Auth) and 3 (TLS + client certificate) on loopback.

Certificates come from the openssl command line into the test's temp directory.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.ocpp.conftest import SiteFactory
from tests.ocpp.stations import station
from tests.ocpp.test_handshake import _auth
from tests.support.pki import CLIENT_EXT, SERVER_EXT, issue, make_ca, server_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("pki")
    make_ca(cwd, "ca", "/CN=ocpp809 test CA")
    issue(cwd, "server", "/CN=localhost", SERVER_EXT)
    for name in ("CP1", "CP2"):
        issue(cwd, name, f"/CN={name}", CLIENT_EXT)
    return cwd


def _tls(pki: Path, require_client_cert: bool) -> dict[str, object]:
    return server_tls(pki / "ca.crt", pki / "server.crt", pki / "server.key", require_client_cert)


def _client(pki: Path, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert is not None:
        context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return context


async def test_profile_2_tls_and_basic_auth(make_site: SiteFactory, pki: Path) -> None:
    site = await make_site(
        {"security_profile": 2, "tls": _tls(pki, False), "stations": {"CP1": {"password": "s3cret-password"}}}
    )
    url = f"wss://127.0.0.1:{site.port}/CP1"
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            url, subprotocols=["ocpp1.6"], ssl=_client(pki, None), additional_headers=_auth("CP1", "no")
        )
    assert refused.value.response.status_code == 401
    async with station(
        site.port,
        "CP1",
        scheme="wss",
        ssl=_client(pki, None),
        additional_headers=_auth("CP1", "s3cret-password"),
    ) as cp:
        assert (await cp.call(call16.Heartbeat())).current_time
        await site.until(lambda: site.station("CP1") is not None)


async def test_profile_3_client_certificate_names_the_station(make_site: SiteFactory, pki: Path) -> None:
    site = await make_site({"security_profile": 3, "tls": _tls(pki, True)})
    # No certificate: the TLS handshake fails (with TLS 1.3 the client sees it as a broken HTTP answer).
    with pytest.raises((ssl.SSLError, OSError, InvalidHandshake)):
        async with connect(
            f"wss://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6"], ssl=_client(pki, None)
        ) as ws:
            await ws.recv()
    with pytest.raises(InvalidStatus) as refused:  # CP2's certificate cannot speak for CP1
        await connect(f"wss://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6"], ssl=_client(pki, "CP2"))
    assert refused.value.response.status_code == 403
    async with station(site.port, "CP1", scheme="wss", ssl=_client(pki, "CP1")) as cp:
        assert (await cp.call(call16.Heartbeat())).current_time
        await site.until(lambda: site.station("CP1") is not None)
