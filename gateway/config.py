"""Typed configuration: one TOML file, validated once at start-up, every key defaulted.

Parsing and type checks are pydantic's (strict: no "6000" for 6000, unknown keys are
errors). Each part of the gateway owns its section and the cross-field rules a DSO
engineer would get wrong in it: the core's sections are here, ``[iec104]`` is
``iec104/settings.py``'s, ``[ocpp]``, ``[upstream]`` and ``[legacy]`` are
``ocpp_side/settings.py``'s; this module composes them (``Config``) and checks what only
the whole machine can (``check_environment``: files, hosts, ports shared by listeners).
Every error becomes one ``ConfigError(file, key, reason)``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
import ssl
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

import iec104.settings as iec104_settings
import ocpp_side.settings as ocpp_settings
from gateway.config_base import STRICT, Fail, Port, check_port
from gateway.errors import ConfigError, ConfigErrors
from iec104.settings import Iec104Config, PointConfig, PointMap
from ocpp_side.settings import LegacyConfig, OcppConfig, UpstreamConfig


@dataclass(frozen=True, config=STRICT)
class LimitsConfig:
    min_limit_w: float = 6000.0  # the minimum profile: setpoints below it are refused (T3)
    max_limit_w: float = 100000.0  # grid connection capacity
    fallback_limit_w: float = 10000.0  # after hold_timeout_s without a DSO link
    initial_limit_w: float = 100000.0  # before the first DSO setpoint
    hold_timeout_s: float = 300.0  # how long the last setpoint is held on link loss
    max_command_age_s: float = 30.0  # oldest acceptable C_SE_TC_1 time tag
    future_tolerance_s: float = 5.0  # clock skew tolerated for a time tag in the future
    reallocation_settle_s: float = 0.25  # station joins/leaves this close together share one reallocation
    # No DSO master within hold_timeout_s of start (or of its loss) before any setpoint: fallback_limit_w.
    fallback_without_master: bool = True


MissingStart = Literal["fallback", "initial"]


@dataclass(frozen=True, config=STRICT)
class StoreConfig:
    path: str = "ocpp809.sqlite3"  # <path>.lock next to it keeps a second gateway off the same store
    # A store that is missing (or holds no limit) at start: "fallback" applies fallback_limit_w until
    # a DSO setpoint arrives (the safe side); "initial" applies initial_limit_w. Either way: a WARNING.
    missing_start: MissingStart = "fallback"


@dataclass(frozen=True, config=STRICT)
class SharingConfig:
    """How the limit follows what the EVs really take (see gateway/core/demand.py)."""

    follow_demand: bool = True  # idle and EV-limited stations give room to those that can use it
    idle_share_w: float = 0.0  # a station with no EV charging keeps this much (0: its min_power_w)
    headroom_w: float = 1000.0  # an EV-limited station keeps its draw plus this
    window_s: float = 120.0  # ... judged on its peak over this long
    raise_interval_s: float = 30.0  # a station's raises at most this often (cuts never wait)


@dataclass(frozen=True, config=STRICT)
class MetricsConfig:
    """The HTTP listener: /metrics, the status page (/ and /status) and /healthz."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    port: Port = 9108
    # HTTP Basic Auth on every path but /healthz; both or neither (empty: no auth). Plain HTTP
    # carries them in clear: keep the listener on loopback or behind a TLS reverse proxy.
    username: str = ""
    password: str = ""


@dataclass(frozen=True, config=STRICT)
class Config:
    limits: LimitsConfig = LimitsConfig()
    iec104: Iec104Config = Iec104Config()
    ocpp: OcppConfig = OcppConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    legacy: LegacyConfig = LegacyConfig()
    store: StoreConfig = StoreConfig()
    sharing: SharingConfig = SharingConfig()
    metrics: MetricsConfig = MetricsConfig()


_ADAPTER = TypeAdapter(Config)


def _with_default_points(data: dict[str, object]) -> dict[str, object]:
    """Point tables override the defaults key by key: ``unit = "kW"`` alone keeps IOA 100."""
    iec = data.get("iec104")
    points = iec.get("points") if isinstance(iec, dict) else None
    if not isinstance(iec, dict) or not isinstance(points, dict):
        return data
    merged: dict[str, object] = {}
    for role, table in points.items():
        default = getattr(PointMap(), role, None) if isinstance(role, str) else None
        if isinstance(default, PointConfig) and isinstance(table, dict):
            merged[role] = {"ioa": default.ioa, **table}
        else:
            merged[role] = table  # unknown role or wrong type: validation says so
    return {**data, "iec104": {**iec, "points": merged}}


def parse_config(data: dict[str, object], file: str = "<config>") -> Config:
    """Validate a TOML document already parsed into a dict; every problem found is reported."""
    try:
        # JSON mode: strict types, yet arrays may fill tuples and tables fill dataclasses.
        config = _ADAPTER.validate_json(json.dumps(_with_default_points(data), default=str))
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "(top level)"
            reason = "unknown key" if error["type"] == "unexpected_keyword_argument" else error["msg"]
            errors.append(ConfigError(file, key, reason))
        raise ConfigErrors(errors) from None
    _check(config, file)
    return config


def load_config(path: str | Path | None) -> Config:
    """Read ``path`` (None: built-in defaults) into a validated Config."""
    if path is None:
        return Config()
    return parse_config(read_toml(path), str(path))


def read_toml(path: str | Path) -> dict[str, object]:
    """Read a TOML file; a missing, unreadable or malformed file is one ConfigError."""
    file = str(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "no such file") from None
    except OSError as exc:
        raise ConfigError(file, "(file)", exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(encoding)", f"not UTF-8 at byte {exc.start}") from None


def _check(config: Config, file: str) -> None:
    errors: list[ConfigError] = []

    def fail(key: str, reason: str) -> None:
        errors.append(ConfigError(file, key, reason))

    _check_values(config, fail)
    if errors:
        raise ConfigErrors(errors)


def check_environment(config: Config, file: str = "<config>") -> None:
    """What ``run`` would find wrong on this machine: TLS files readable and PEM, listen
    hosts valid (IPv6 included), listeners on distinct ports, the store's folder usable.
    Every problem is reported (``ConfigErrors``); ``check-config`` and ``run`` both call it."""
    errors: list[ConfigError] = []

    def fail(key: str, reason: str) -> None:
        errors.append(ConfigError(file, key, reason))

    listeners = [("iec104", config.iec104.listen_host, config.iec104.port)]
    listeners.append(("ocpp", config.ocpp.listen_host, config.ocpp.port))
    if config.legacy.enabled:
        listeners.append(("legacy", config.ocpp.listen_host, config.legacy.listen_port))
    if config.metrics.enabled:
        listeners.append(("metrics", config.metrics.listen_host, config.metrics.port))
    for section, host, _port in listeners:
        if section == "legacy":
            continue  # ocpp.listen_host, checked as such
        reason = _host_problem(host)
        if reason is not None:
            fail(f"{section}.listen_host", reason)
    for i, (section, host, port) in enumerate(listeners):
        for other, other_host, other_port in listeners[:i]:
            if port != 0 and port == other_port and _hosts_overlap(host, other_host):
                key = "legacy.listen_port" if section == "legacy" else f"{section}.port"
                fail(key, f"{port} is also {other}.port: two listeners cannot share it")
    for key, tls in (("iec104.tls", config.iec104.tls), ("ocpp.tls", config.ocpp.tls)):
        if tls.enabled:
            _check_pem(key, tls.cert_file, tls.key_file, tls.ca_file, fail)
    up = config.upstream
    if up.csms_url and (up.cert_file or up.ca_file):
        _check_pem("upstream", up.cert_file, up.key_file, up.ca_file, fail)
    folder = Path(config.store.path).resolve().parent
    if not folder.is_dir():
        fail("store.path", f"folder {folder} does not exist")
    elif not os.access(folder, os.W_OK | os.X_OK):
        fail("store.path", f"folder {folder} is not writable")
    if errors:
        raise ConfigErrors(errors)


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        return f"{host!r} is neither an IP address nor a name this machine resolves ({exc})"
    return None


def _hosts_overlap(a: str, b: str) -> bool:
    wildcard = {"0.0.0.0", "::", ""}
    return a == b or a in wildcard or b in wildcard


def _check_pem(
    key: str, cert_file: str, key_file: str, ca_file: str, fail: Callable[[str, str], None]
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name, path in (("cert_file", cert_file), ("key_file", key_file), ("ca_file", ca_file)):
        if path and not os.access(path, os.R_OK):
            fail(f"{key}.{name}", f"{path}: {'no such file' if not os.path.exists(path) else 'not readable'}")
            return
    try:
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        fail(f"{key}.cert_file", f"{cert_file} / {key_file}: not a PEM certificate and matching key ({exc})")
    try:
        if ca_file:
            context.load_verify_locations(ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        fail(f"{key}.ca_file", f"{ca_file}: not a PEM CA bundle ({exc})")


def _check_values(config: Config, fail: Fail) -> None:
    """The core's sections here; each adapter's section by the adapter's own rules."""
    lim = config.limits
    for name in ("min_limit_w", "max_limit_w", "fallback_limit_w", "initial_limit_w"):
        value = getattr(lim, name)
        if not math.isfinite(value) or value < 0:
            fail(f"limits.{name}", f"must be a finite number >= 0, got {value}")
    if lim.min_limit_w > lim.max_limit_w:
        fail("limits.min_limit_w", f"{lim.min_limit_w:g} is above limits.max_limit_w={lim.max_limit_w:g}")
    for name in ("fallback_limit_w", "initial_limit_w"):
        value = getattr(lim, name)
        if not lim.min_limit_w <= value <= lim.max_limit_w:
            fail(
                f"limits.{name}",
                f"{value:g} is outside [min_limit_w={lim.min_limit_w:g}, max_limit_w={lim.max_limit_w:g}]",
            )
    for name in ("hold_timeout_s", "max_command_age_s"):
        if not getattr(lim, name) > 0:
            fail(f"limits.{name}", "must be > 0")
    if lim.future_tolerance_s < 0:
        fail("limits.future_tolerance_s", "must be >= 0")
    if not 0 <= lim.reallocation_settle_s <= 10:
        fail("limits.reallocation_settle_s", "must be within 0..10 s")
    sh = config.sharing
    for name in ("idle_share_w", "headroom_w", "window_s", "raise_interval_s"):
        value = getattr(sh, name)
        if not math.isfinite(value) or value < 0:
            fail(f"sharing.{name}", f"must be a finite number >= 0, got {value}")
    check_port("metrics.port", config.metrics.port, fail)
    _check_metrics(config.metrics, fail)
    if not config.store.path.strip():
        fail("store.path", "must name a file")

    iec104_settings.check(config.iec104, fail)
    ocpp_settings.check_ocpp(config.ocpp, fail)
    ocpp_settings.check_upstream(config.upstream, fail)
    ocpp_settings.check_legacy(config.legacy, fail)


def _check_metrics(metrics: MetricsConfig, fail: Fail) -> None:
    if bool(metrics.username) != bool(metrics.password):
        key = "metrics.password" if metrics.username else "metrics.username"
        fail(key, "username and password go together")
    if ":" in metrics.username:
        fail("metrics.username", "must not contain ':' (HTTP Basic Auth's separator)")
    for name in ("username", "password"):
        value: str = getattr(metrics, name)
        if not value.isprintable():
            fail(f"metrics.{name}", "must be printable characters only")
