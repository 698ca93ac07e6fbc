"""Security profiles 2 (TLS + Basic Auth) and 3 (TLS + client certificate) on loopback.

Certificates come from the openssl command line into the test's temp directory.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.ocpp.conftest import SiteFactory
from tests.ocpp.stations import station
from tests.ocpp.test_handshake import _auth

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key_and_csr(cwd: Path, name: str, subject: str) -> None:
    _openssl(
        cwd,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
    )


def _sign(cwd: Path, name: str, ext: str) -> None:
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("pki")
    _openssl(
        cwd,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ocpp809 test CA",
    )
    _key_and_csr(cwd, "server", "/CN=localhost")
    _sign(cwd, "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for name in ("CP1", "CP2"):
        _key_and_csr(cwd, name, f"/CN={name}")
        _sign(cwd, name, "extendedKeyUsage=clientAuth\n")
    return cwd


def _tls(pki: Path, require_client_cert: bool) -> dict[str, object]:
    return {
        "enabled": True,
        "cert_file": str(pki / "server.crt"),
        "key_file": str(pki / "server.key"),
        "ca_file": str(pki / "ca.crt"),
        "require_client_cert": require_client_cert,
    }


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
