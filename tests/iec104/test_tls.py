"""TLS per IEC 62351-3 with Python's ssl as the client (c104's own TLS client is broken in 2.2.1)."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from iec104.master import Iec104Master, MasterError, client_ssl_context
from tests.iec104.conftest import running_site, site_config


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(cwd: Path, name: str, subject: str, ca: str, ca_key: str, ext: str) -> None:
    _openssl(
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
        cwd=cwd,
    )
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=cwd,
    )


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _issue(
        d,
        "server",
        "/CN=127.0.0.1",
        "ca.crt",
        "ca.key",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    _issue(d, "client", "/CN=dso-scada", "ca.crt", "ca.key", "extendedKeyUsage=clientAuth\n")
    _issue(d, "rogue", "/CN=dso-scada", "rogue-ca.crt", "rogue-ca.key", "extendedKeyUsage=clientAuth\n")
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
        tls={
            "enabled": True,
            "cert_file": str(pki.server_cert),
            "key_file": str(pki.server_key),
            "ca_file": str(pki.ca),
            "require_client_cert": require_client_cert,
        },
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
