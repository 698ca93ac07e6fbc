"""What every configuration section is built from: strict parsing, shared types, TLS files.

Each part of the gateway owns its section and its rules: the core's sections live in
``gateway/config.py``, the IEC 104 one in ``iec104/settings.py``, the OCPP ones in
``ocpp_side/settings.py``; ``gateway/config.py`` composes them into one file's schema.
A rule reports through ``fail(key, reason)`` so every problem is found in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

# Parsing and type checks are pydantic's, strict: no "6000" for 6000, unknown keys are errors.
STRICT = ConfigDict(extra="forbid", strict=True)

Port = int  # 0 lets the OS choose (tests); otherwise 1..65535
Unit = Literal["W", "kW"]
Fail = Callable[[str, str], None]  # (dotted key, reason)


@dataclass(frozen=True, config=STRICT)
class TlsConfig:
    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    require_client_cert: bool = True


def check_tls(tls: TlsConfig, key: str, fail: Fail) -> None:
    if tls.enabled:
        for name in ("cert_file", "key_file"):
            if not getattr(tls, name):
                fail(f"{key}.{name}", "TLS is enabled but no file is given")
        if tls.require_client_cert and not tls.ca_file:
            fail(f"{key}.ca_file", "require_client_cert needs a CA file")


def check_port(key: str, port: int, fail: Fail) -> None:
    if not 0 <= port <= 65535:
        fail(key, f"{port} is outside 0..65535")
