"""A throwaway openssl test PKI, so the IEC 104 and OCPP TLS suites issue their certificates one way."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_EXT = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(cwd: Path, name: str, subject: str, *addext: str) -> None:
    """A self-signed CA, ``{name}.crt`` and ``{name}.key`` in ``cwd``, with each ``-addext`` given."""
    extensions = [arg for ext in addext for arg in ("-addext", ext)]
    openssl(
        cwd,
        "req",
        "-x509",
        *_EC_KEY,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        subject,
        *extensions,
    )


def issue(cwd: Path, name: str, subject: str, ext: str, ca: str = "ca") -> None:
    """A key and a certificate, ``{name}.key`` and ``{name}.crt``, signed by the CA ``ca`` in ``cwd``."""
    openssl(cwd, "req", *_EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    (cwd / f"{name}.ext").write_text(ext)
    openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
    )


def server_tls(ca: Path, cert: Path, key: Path, require_client_cert: bool) -> dict[str, object]:
    """The ``tls`` config section of a server holding ``cert`` and trusting ``ca``."""
    return {
        "enabled": True,
        "cert_file": str(cert),
        "key_file": str(key),
        "ca_file": str(ca),
        "require_client_cert": require_client_cert,
    }
