"""TLS per IEC 62351-3 with Python's ssl as the client (c104's own TLS client is broken in 2.2.1)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from iec104.master import Iec104Master, MasterError, client_ssl_context
from tests.iec104.conftest import running_site, site_config
from tests.support.pki import CLIENT_EXT, SERVER_EXT, issue, make_ca, server_tls

_CA_EXTENSIONS = ("basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        make_ca(d, ca, f"/CN={ca}", *_CA_EXTENSIONS)
    issue(d, "server", "/CN=127.0.0.1", SERVER_EXT)
    issue(d, "client", "/CN=dso-scada", CLIENT_EXT)
    issue(d, "rogue", "/CN=dso-scada", CLIENT_EXT, ca="rogue-ca")
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "rogue.crt",
        d / "rogue.key",
    )


def client_context(pki: Pki, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    return client_ssl_context(str(pki.ca), str(cert) if cert else None, str(key) if key else None)


def tls_config(tmp_path: Path, pki: Pki, require_client_cert: bool = True) -> object:
    return site_config(
        tmp_path,
        tls=server_tls(pki.ca, pki.server_cert, pki.server_key, require_client_cert),
    )


async def test_tls_master_with_a_client_certificate_sends_a_setpoint(tmp_path: Path, pki: Pki) -> None:
    async with running_site(tls_config(tmp_path, pki)) as site:  # type: ignore[arg-type]
        context = client_context(pki, pki.client_cert, pki.client_key)
        async with Iec104Master(
            "127.0.0.1", site.port, ssl_context=context, server_hostname="127.0.0.1"
        ) as master:
            assert (await master.send_setpoint(100, 20000.0)).positive
            await master.wait_for_measurement(201, lambda m: m.value == 20000.0)
            assert master._writer is not None
            assert master._writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("who", ["no client certificate", "certificate from another CA", "plain TCP"])
async def test_tls_refuses_masters_without_a_trusted_certificate(tmp_path: Path, pki: Pki, who: str) -> None:
    async with running_site(tls_config(tmp_path, pki)) as site:  # type: ignore[arg-type]
        if who == "plain TCP":
            master = Iec104Master("127.0.0.1", site.port, answer_timeout_s=1.0, startdt_attempts=1)
        else:
            cert, key = (None, None) if who == "no client certificate" else (pki.rogue_cert, pki.rogue_key)
            context = client_context(pki, cert, key)
            master = Iec104Master(
                "127.0.0.1",
                site.port,
                ssl_context=context,
                server_hostname="127.0.0.1",
                answer_timeout_s=1.0,
                startdt_attempts=1,
            )
        with pytest.raises((MasterError, OSError, TimeoutError)):
            async with master:
                await master.send_setpoint(100, 20000.0)
        assert site.runtime.view().mode.value == "initial"
        assert not site.outstation.link_up
