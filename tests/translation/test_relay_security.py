"""Security profiles 1-3 toward the CSMS, for a translated 1.6 station: Basic Auth over ws
(1), Basic Auth over wss (2), a client certificate over wss (3), each refused when wrong."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16

from tests.support.pki import CLIENT_EXT, SERVER_EXT, issue, make_ca
from tests.translation.relay_support import Csms201, Site, site_config, start_site, station16

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


NO_LINK = {"connect_wait_s": 0.5}  # a link that must not come up: the station is served locally


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("pki")
    make_ca(cwd, "ca", "/CN=ocpp809 test CA")
    make_ca(cwd, "other", "/CN=another CA")
    issue(cwd, "csms", "/CN=localhost", SERVER_EXT)
    issue(cwd, "gateway", "/CN=CPS", CLIENT_EXT)
    return cwd


def _server(pki: Path, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki / "csms.crt"), str(pki / "csms.key"))
    if client_cert:
        context.load_verify_locations(str(pki / "ca.crt"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
async def sites(tmp_path: Path) -> AsyncIterator[list[tuple[Site, Csms201]]]:
    made: list[tuple[Site, Csms201]] = []
    yield made
    for site, csms in made:
        await site.stop()
        await csms.stop()


async def _site(
    tmp_path: Path, made: list[tuple[Site, Csms201]], csms: Csms201, upstream: dict[str, Any]
) -> Site:
    await csms.start()
    site = await start_site(
        site_config(tmp_path, csms, f"gw{len(made)}", {"connect_wait_s": 5.0, **upstream}), csms
    )
    made.append((site, csms))
    return site


async def _boot_reaches(site: Site, csms: Csms201) -> bool:
    """Boot the station; True when the CSMS answered it (not the gateway, locally, once
    ``connect_wait_s`` passed without a link: 5 s for a link that should come up, 0.5 s not)."""
    async with station16(site.port, "CPS") as cp:
        await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    return bool(csms.calls_in("CPS", "BootNotification"))


async def test_profile_1_basic_auth(tmp_path: Path, sites: list[tuple[Site, Csms201]]) -> None:
    good = await _site(tmp_path, sites, Csms201(password="pw-1"), {"passwords": {"CPS": "pw-1"}})
    assert await _boot_reaches(good, good.csms)
    assert good.csms.peers == [("CPS", [])]
    bad = await _site(tmp_path, sites, Csms201(password="pw-1"), {"passwords": {"CPS": "wrong"}, **NO_LINK})
    assert not await _boot_reaches(bad, bad.csms)
    assert bad.csms.refused and bad.csms.refused[0] == 401


async def test_profile_2_tls_and_basic_auth(
    pki: Path, tmp_path: Path, sites: list[tuple[Site, Csms201]]
) -> None:
    csms = Csms201(_server(pki, client_cert=False), password="pw-2")
    good = await _site(tmp_path, sites, csms, {"passwords": {"CPS": "pw-2"}, "ca_file": str(pki / "ca.crt")})
    assert good.config.upstream.csms_url.startswith("wss://")
    assert await _boot_reaches(good, csms)
    assert csms.peers == [("CPS", [])]
    untrusted = Csms201(_server(pki, client_cert=False), password="pw-2")
    bad = await _site(
        tmp_path,
        sites,
        untrusted,
        {"passwords": {"CPS": "pw-2"}, "ca_file": str(pki / "other.crt"), **NO_LINK},
    )
    assert not await _boot_reaches(bad, untrusted)  # the CSMS's certificate is not trusted
    assert untrusted.peers == []


async def test_profile_3_client_certificate(
    pki: Path, tmp_path: Path, sites: list[tuple[Site, Csms201]]
) -> None:
    csms = Csms201(_server(pki, client_cert=True))
    good = await _site(
        tmp_path,
        sites,
        csms,
        {
            "ca_file": str(pki / "ca.crt"),
            "cert_file": str(pki / "gateway.crt"),
            "key_file": str(pki / "gateway.key"),
        },
    )
    assert await _boot_reaches(good, csms)
    assert csms.peers == [(None, ["CPS"])]
    without = Csms201(_server(pki, client_cert=True))
    bad = await _site(tmp_path, sites, without, {"ca_file": str(pki / "ca.crt"), **NO_LINK})
    assert not await _boot_reaches(bad, without)  # no client certificate: no link
    assert without.peers == []
