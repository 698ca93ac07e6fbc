"""The legacy listener under the site's security profile: TLS (the hello inside it), Basic Auth, certificates."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from tests.legacy.conftest import SiteFactory
from tests.legacy.units import raw_unit, reply
from tests.ocpp.test_handshake import _auth
from tests.support.pki import CLIENT_EXT, SERVER_EXT, issue, make_ca, server_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

SERIAL = "VX4-000123"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("pki")
    make_ca(cwd, "ca", "/CN=ocpp809 test CA")
    issue(cwd, "server", "/CN=localhost", SERVER_EXT)
    for name in (SERIAL, "VX4-999"):
        issue(cwd, name, f"/CN={name}", CLIENT_EXT)
    return cwd


def _tls(pki: Path, require_client_cert: bool) -> dict[str, object]:
    return server_tls(pki / "ca.crt", pki / "server.crt", pki / "server.key", require_client_cert)


def _client(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert is not None:
        context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return context


async def test_profile_2_the_hello_inside_tls_then_basic_auth(make_site: SiteFactory, pki: Path) -> None:
    site = await make_site(
        ocpp={
            "security_profile": 2,
            "tls": _tls(pki, False),
            "stations": {SERIAL: {"password": "s3cret-password"}},
        }
    )
    tls = {"scheme": "wss", "ssl": _client(pki)}
    for headers in ({}, _auth(SERIAL, "wrong")):
        with pytest.raises(InvalidStatus) as refused:
            async with raw_unit(site.legacy_port, SERIAL, additional_headers=headers, **tls):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 401
    async with raw_unit(
        site.legacy_port,
        SERIAL,
        additional_headers=_auth(SERIAL, "s3cret-password"),
        **tls,  # type: ignore[arg-type]
    ) as ws:
        assert (await reply(ws, '[2,"h","Heartbeat",{}]'))[:2] == [3, "h"]
        assert site.station(SERIAL) is not None


async def test_profile_3_the_certificate_names_the_serial(make_site: SiteFactory, pki: Path) -> None:
    site = await make_site(ocpp={"security_profile": 3, "tls": _tls(pki, True)})
    with pytest.raises(InvalidStatus) as refused:
        async with raw_unit(site.legacy_port, SERIAL, scheme="wss", ssl=_client(pki, "VX4-999")):
            pass
    assert refused.value.response.status_code == 403
    async with raw_unit(site.legacy_port, SERIAL, scheme="wss", ssl=_client(pki, SERIAL)) as ws:
        assert (await reply(ws, '[2,"h","Heartbeat",{}]'))[:2] == [3, "h"]
