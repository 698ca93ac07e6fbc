"""Typed configuration: one TOML file, validated once at start-up, every key defaulted.

Parsing and type checks are pydantic's (strict: no "6000" for 6000, unknown keys are
errors); the cross-field rules a DSO engineer would get wrong live in ``_check``.
Every error becomes one ``ConfigError(file, key, reason)``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
import ssl
import tomllib
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from gateway.errors import ConfigError, ConfigErrors

_STRICT = ConfigDict(extra="forbid", strict=True)

Port = int  # 0 lets the OS choose (tests); otherwise 1..65535
Unit = Literal["W", "kW"]


@dataclass(frozen=True, config=_STRICT)
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


@dataclass(frozen=True, config=_STRICT)
class PointConfig:
    ioa: int
    unit: Unit = "W"
    select_before_operate: bool = False


@dataclass(frozen=True, config=_STRICT)
class PointMap:
    limit_setpoint: PointConfig = PointConfig(100)  # C_SE_NC_1
    limit_setpoint_time_tagged: PointConfig = PointConfig(101)  # C_SE_TC_1
    total_power: PointConfig = PointConfig(200)  # M_ME_TF_1
    limit_in_force: PointConfig = PointConfig(201)  # M_ME_TF_1
    fallback_active: PointConfig = PointConfig(300)  # M_SP_TB_1
    limit_enforced: PointConfig = PointConfig(301)  # M_SP_TB_1
    time_to_comply: PointConfig = PointConfig(202)  # M_ME_TF_1, seconds (``unit`` does not apply)


@dataclass(frozen=True, config=_STRICT)
class TlsConfig:
    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    require_client_cert: bool = True


@dataclass(frozen=True, config=_STRICT)
class Iec104Config:
    listen_host: str = "0.0.0.0"
    port: Port = 2404
    common_address: int = 1
    allowed_masters: tuple[str, ...] = ()  # empty: any address (logged as a warning)
    max_connections: int = 2
    t0_s: int = 30
    t1_s: int = 15
    t2_s: int = 10
    t3_s: int = 20
    k: int = 12
    w: int = 8
    tick_rate_ms: int = 100
    select_timeout_ms: int = 10000
    deadband_w: float = 100.0  # spontaneous M_ME_TF_1 only when a value moves this much
    periodic_interval_s: float = 60.0  # cyclic transmission of every monitored point
    command_timeout_s: float = 2.0  # the core must answer a command within this, else FAILURE
    link_poll_s: float = 0.5  # how often the active connection count is read (link up/down detection)
    points: PointMap = PointMap()
    tls: TlsConfig = TlsConfig()


RateUnitChoice = Literal["auto", "W", "A"]


@dataclass(frozen=True, config=_STRICT)
class StationConfig:
    password: str = ""  # HTTP Basic Auth, security profiles 1 and 2
    max_power_w: float | None = None
    min_power_w: float | None = None
    rate_unit: RateUnitChoice | None = None  # None: ocpp.station_rate_unit
    phases: int | None = None  # None: ocpp.station_phases
    voltage_v: float | None = None  # None: ocpp.station_voltage_v
    priority: int = 0  # when minimums do not fit, lower priorities are paused first
    weight: float = 1.0  # its share against the others' (2.0: twice as much)


@dataclass(frozen=True, config=_STRICT)
class OcppConfig:
    listen_host: str = "0.0.0.0"
    port: Port = 9000
    accepted_stations: tuple[str, ...] = ()  # empty: any station id
    security_profile: Literal[0, 1, 2, 3] = 0
    tls: TlsConfig = TlsConfig()
    heartbeat_interval_s: int = 300
    meter_sample_interval_s: int = 60
    clock_aligned_interval_s: int = 900
    measurands: tuple[str, ...] = (
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Voltage",
    )
    meter_stale_after_s: float = 180.0  # a reading older than this is flagged not topical
    meter_plausible_factor: float = 1.5  # a reading above this x the station's max_power_w is refused
    station_max_power_w: float = 22000.0  # default when a station's own entry does not say
    station_min_power_w: float = 4140.0  # 6 A x 3 phases x 230 V
    profile_refresh_s: float = 480.0  # the live profile is re-sent this often (one flash write each)
    profile_validity_s: float = (
        600.0  # validTo of the live profile: an offline station's live share lapses then
    )
    call_timeout_s: float = 10.0
    authorize: Literal["accept_all", "local_list"] = "accept_all"
    local_id_tags: tuple[str, ...] = ()
    stations: dict[str, StationConfig] = Field(default_factory=dict)
    # Reserved ids and stack levels of the gateway's two station-wide max profiles: the live
    # limit on top, the fallback share (no expiry) below it. Squeezed under a station's
    # reported maximum stack level, live always above fallback.
    live_profile_id: int = 809002
    fallback_profile_id: int = 809001
    live_stack_level: int = 8
    fallback_stack_level: int = 7
    profile_retry_base_s: float = 1.0  # a refused profile is retried after 1, 2, 4 ... 60 s
    station_rate_unit: RateUnitChoice = "auto"  # auto: W when the station takes it, else A
    station_phases: int = 3  # for limits in A: A = W / (voltage_v x phases)
    station_voltage_v: float = 230.0
    boot_wait_s: float = 5.0  # a station that neither boots nor speaks is set up after this
    configure_metering: bool = True  # set sampling (MeterValueSampleInterval / SampledDataCtrlr) on connect
    max_message_bytes: int = 1048576
    handshake_timeout_s: float = 10.0
    gc_freeze: bool = True  # freeze the heap once connections settle: no full GC walks inside a fan-out


@dataclass(frozen=True, config=_STRICT)
class UpstreamConfig:
    csms_url: str = ""  # empty: standalone, the gateway answers the stations itself
    # "station": each station relayed verbatim in its own OCPP version; "ocpp2.0.1": the CSMS
    # speaks 2.0.1 for every station, 1.6 and legacy stations are translated (ocpp_side/translation).
    csms_protocol: Literal["station", "ocpp2.0.1"] = "station"
    # A station's DSO cap moving by more than this fraction (of the larger of old and new) is told
    # to a 2.0.1 CSMS on that station's own connection (NotifyChargingLimit, like LimitChangeSignificance).
    limit_change_significance: float = 0.1
    notify_v16: Literal["none", "datatransfer"] = "none"
    on_outage: Literal["buffer", "close_station"] = "buffer"
    close_grace_s: float = 60.0
    # The gateway's own identity at the CSMS (a Local Controller is a charging station
    # without EVSEs): it reports the DSO limit (NotifyChargingLimit). Empty: no such link.
    gateway_id: str = ""
    gateway_protocol: Literal["ocpp2.0.1", "ocpp1.6"] = "ocpp2.0.1"
    gateway_password: str = ""  # Basic Auth toward the CSMS for gateway_id (profiles 1-2)
    passwords: dict[str, str] = Field(default_factory=dict)  # station id -> its password at the CSMS
    ca_file: str = ""  # wss: CA bundle the CSMS certificate is checked against (empty: system CAs)
    cert_file: str = ""  # the gateway's own client certificate (security profile 3)
    key_file: str = ""
    outbox_path: str = "ocpp809-outbox.sqlite3"  # what waits for the CSMS during an outage
    reconnect_min_s: float = 1.0  # backoff between reconnection attempts: min doubling to max
    reconnect_max_s: float = 60.0
    connect_wait_s: float = 5.0  # a station's first calls wait this long for the CSMS link
    call_timeout_s: float = 30.0  # a station call the CSMS leaves unanswered is answered locally


@dataclass(frozen=True, config=_STRICT)
class LegacyConfig:
    """A second station listener for legacy 1.5-dialect units (one hello line before the upgrade)."""

    enabled: bool = False
    listen_port: Port = 9001  # on ocpp.listen_host
    # The unit's hello line; the named group ``serial`` becomes its identity through identity_template.
    hello_pattern: str = "serial=(?P<serial>[A-Za-z0-9-]+)"
    identity_template: str = "{serial}"
    timezone: str = "UTC"  # of the unit's timestamps that carry no zone (an IANA name)


MissingStart = Literal["fallback", "initial"]


@dataclass(frozen=True, config=_STRICT)
class StoreConfig:
    path: str = "ocpp809.sqlite3"  # <path>.lock next to it keeps a second gateway off the same store
    # A store that is missing (or holds no limit) at start: "fallback" applies fallback_limit_w until
    # a DSO setpoint arrives (the safe side); "initial" applies initial_limit_w. Either way: a WARNING.
    missing_start: MissingStart = "fallback"


@dataclass(frozen=True, config=_STRICT)
class SharingConfig:
    """How the limit follows what the EVs really take (see gateway/core/demand.py)."""

    follow_demand: bool = True  # idle and EV-limited stations give room to those that can use it
    idle_share_w: float = 0.0  # a station with no EV charging keeps this much (0: its min_power_w)
    headroom_w: float = 1000.0  # an EV-limited station keeps its draw plus this
    window_s: float = 120.0  # ... judged on its peak over this long
    raise_interval_s: float = 30.0  # a station's raises at most this often (cuts never wait)


@dataclass(frozen=True, config=_STRICT)
class MetricsConfig:
    """The HTTP listener: /metrics, the status page (/ and /status) and /healthz."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    port: Port = 9108
    # HTTP Basic Auth on every path but /healthz; both or neither (empty: no auth). Plain HTTP
    # carries them in clear: keep the listener on loopback or behind a TLS reverse proxy.
    username: str = ""
    password: str = ""


@dataclass(frozen=True, config=_STRICT)
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


def _check_values(config: Config, fail: Callable[[str, str], None]) -> None:

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

    iec = config.iec104
    seen: dict[int, str] = {}
    for role in PointMap.__dataclass_fields__:
        point: PointConfig = getattr(iec.points, role)
        if not 1 <= point.ioa <= 0xFFFFFF:
            fail(f"iec104.points.{role}.ioa", f"{point.ioa} is outside 1..16777215")
        if point.ioa in seen:
            fail(f"iec104.points.{role}.ioa", f"IOA {point.ioa} is already used by {seen[point.ioa]}")
        seen[point.ioa] = role
    if not 1 <= iec.common_address <= 65534:
        fail("iec104.common_address", f"{iec.common_address} is outside 1..65534")
    if not iec.t1_s > iec.t2_s:
        fail("iec104.t2_s", f"must be below t1_s={iec.t1_s} (IEC 60870-5-104 5.3)")
    if not 1 <= iec.w <= iec.k * 2 // 3:
        fail("iec104.w", f"must be within 1..2/3 of k={iec.k}")
    if iec.max_connections < 1:
        fail("iec104.max_connections", "must be >= 1")
    for name in ("deadband_w", "periodic_interval_s", "command_timeout_s"):
        if not getattr(iec, name) >= 0:
            fail(f"iec104.{name}", "must be >= 0")
    _check_iec104(iec, fail)
    _check_tls(iec.tls, "iec104.tls", fail)

    oc = config.ocpp
    for key, port in (
        ("iec104.port", iec.port),
        ("ocpp.port", oc.port),
        ("metrics.port", config.metrics.port),
    ):
        if not 0 <= port <= 65535:
            fail(key, f"{port} is outside 0..65535")
    if oc.security_profile >= 2 and not oc.tls.enabled:
        fail("ocpp.tls.enabled", f"security_profile={oc.security_profile} needs TLS")
    _check_tls(oc.tls, "ocpp.tls", fail)
    if oc.station_min_power_w > oc.station_max_power_w:
        fail("ocpp.station_min_power_w", "is above ocpp.station_max_power_w")
    if not oc.profile_validity_s > oc.profile_refresh_s > 0:
        fail("ocpp.profile_validity_s", "must be above profile_refresh_s, which must be > 0")
    sh = config.sharing
    for name in ("idle_share_w", "headroom_w", "window_s", "raise_interval_s"):
        value = getattr(sh, name)
        if not math.isfinite(value) or value < 0:
            fail(f"sharing.{name}", f"must be a finite number >= 0, got {value}")
    for station_id, station in oc.stations.items():
        if not 0 < len(station_id) <= 48 or ":" in station_id:
            fail(f"ocpp.stations.{station_id}", "a station id has 1..48 characters and no ':'")
        if oc.security_profile in (1, 2) and not station.password:
            fail(f"ocpp.stations.{station_id}.password", "security profiles 1 and 2 need a password")
        if not (math.isfinite(station.weight) and 0.01 <= station.weight <= 100):
            fail(f"ocpp.stations.{station_id}.weight", f"{station.weight:g} is outside 0.01..100")
        lo = station.min_power_w if station.min_power_w is not None else oc.station_min_power_w
        hi = station.max_power_w if station.max_power_w is not None else oc.station_max_power_w
        if lo > hi:
            fail(f"ocpp.stations.{station_id}.min_power_w", f"{lo:g} is above max_power_w {hi:g}")
    if oc.meter_stale_after_s <= 0:
        fail("ocpp.meter_stale_after_s", "must be > 0")
    if not (math.isfinite(oc.meter_plausible_factor) and oc.meter_plausible_factor >= 1):
        fail("ocpp.meter_plausible_factor", "must be a finite number >= 1")
    _check_ocpp(oc, fail)

    _check_metrics(config.metrics, fail)

    if not config.store.path.strip():
        fail("store.path", "must name a file")

    url = config.upstream.csms_url
    if url and not url.startswith(("ws://", "wss://")):
        fail("upstream.csms_url", "must start with ws:// or wss://")
    _check_upstream(config.upstream, fail)
    _check_legacy(config.legacy, fail)


def _check_metrics(metrics: MetricsConfig, fail: Callable[[str, str], None]) -> None:
    if bool(metrics.username) != bool(metrics.password):
        key = "metrics.password" if metrics.username else "metrics.username"
        fail(key, "username and password go together")
    if ":" in metrics.username:
        fail("metrics.username", "must not contain ':' (HTTP Basic Auth's separator)")
    for name in ("username", "password"):
        value: str = getattr(metrics, name)
        if not value.isprintable():
            fail(f"metrics.{name}", "must be printable characters only")


def _check_upstream(up: UpstreamConfig, fail: Callable[[str, str], None]) -> None:
    for name in ("close_grace_s", "reconnect_min_s", "reconnect_max_s", "connect_wait_s", "call_timeout_s"):
        value = getattr(up, name)
        if not (math.isfinite(value) and value > 0):
            fail(f"upstream.{name}", "must be a finite number > 0")
    if up.reconnect_min_s > up.reconnect_max_s:
        fail("upstream.reconnect_min_s", "must not exceed reconnect_max_s")
    if up.gateway_id and (len(up.gateway_id) > 48 or ":" in up.gateway_id or "/" in up.gateway_id):
        fail("upstream.gateway_id", "must be 1..48 characters without ':' or '/'")
    if bool(up.cert_file) != bool(up.key_file):
        fail("upstream.cert_file", "cert_file and key_file go together")
    if up.csms_url and not up.outbox_path:
        fail("upstream.outbox_path", "a relay needs an outbox file")
    if not (math.isfinite(up.limit_change_significance) and 0 <= up.limit_change_significance < 1):
        fail("upstream.limit_change_significance", "must be a fraction in [0, 1)")


def _check_legacy(legacy: LegacyConfig, fail: Callable[[str, str], None]) -> None:
    try:
        pattern = re.compile(legacy.hello_pattern)
    except re.error as exc:
        fail("legacy.hello_pattern", f"does not compile: {exc}")
    else:
        if "serial" not in pattern.groupindex:
            fail("legacy.hello_pattern", "needs a named group (?P<serial>...)")
    try:
        identity = legacy.identity_template.format(serial="VX4-000123")
    except (KeyError, IndexError, ValueError) as exc:
        fail("legacy.identity_template", f"may use only {{serial}}: {exc!r}")
    else:
        if (
            not identity
            or len(identity) > 48
            or any(c in identity for c in ":/\\%")
            or not identity.isprintable()
        ):
            fail("legacy.identity_template", "must give 1..48 printable characters without : / \\ %")
    try:
        zoneinfo.ZoneInfo(legacy.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        fail("legacy.timezone", f"unknown time zone {legacy.timezone!r} (an IANA name such as Europe/Berlin)")


def _check_iec104(iec: Iec104Config, fail: Callable[[str, str], None]) -> None:
    for name in ("t0_s", "t1_s", "t2_s", "t3_s", "k", "select_timeout_ms"):
        if getattr(iec, name) < 1:
            fail(f"iec104.{name}", "must be >= 1")
    if iec.tick_rate_ms < 50:
        fail("iec104.tick_rate_ms", "must be >= 50 (c104's minimum)")
    for name in ("command_timeout_s", "link_poll_s"):
        value = getattr(iec, name)
        if not (math.isfinite(value) and value > 0):
            fail(f"iec104.{name}", "must be a finite number > 0")
    if not math.isfinite(iec.deadband_w):
        fail("iec104.deadband_w", "must be finite")
    for address in iec.allowed_masters:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            fail("iec104.allowed_masters", f"{address!r} is not an IP address")
    if iec.tls.enabled and not iec.tls.require_client_cert:
        # lib60870's mbedTLS server in c104 2.2.1 always demands one; IEC 62351-3 wants mutual TLS anyway.
        fail("iec104.tls.require_client_cert", "c104 always requires a client certificate: must be true")
    for role in ("fallback_active", "limit_enforced"):
        point: PointConfig = getattr(iec.points, role)
        if point.unit != "W":
            fail(f"iec104.points.{role}.unit", "a single-point status has no unit")
    for role in ("total_power", "limit_in_force", "fallback_active", "limit_enforced"):
        if getattr(iec.points, role).select_before_operate:
            fail(
                f"iec104.points.{role}.select_before_operate",
                "only setpoint (command) points can be selected",
            )


def _check_ocpp(oc: OcppConfig, fail: Callable[[str, str], None]) -> None:
    for name in ("live_profile_id", "fallback_profile_id"):
        if not 0 < getattr(oc, name) <= 0x7FFFFFFF:
            fail(f"ocpp.{name}", "must be within 1..2147483647")
    if oc.live_profile_id == oc.fallback_profile_id:
        fail("ocpp.fallback_profile_id", "must differ from live_profile_id")
    if not 0 <= oc.fallback_stack_level < oc.live_stack_level:
        fail("ocpp.fallback_stack_level", "must be >= 0 and below live_stack_level")
    for name in ("call_timeout_s", "profile_retry_base_s", "station_voltage_v", "handshake_timeout_s"):
        if not getattr(oc, name) > 0:
            fail(f"ocpp.{name}", "must be > 0")
    for name in ("boot_wait_s", "meter_sample_interval_s", "clock_aligned_interval_s"):
        if getattr(oc, name) < 0:
            fail(f"ocpp.{name}", "must be >= 0")
    if oc.heartbeat_interval_s < 1:
        fail("ocpp.heartbeat_interval_s", "must be >= 1")
    if oc.max_message_bytes < 4096:
        fail("ocpp.max_message_bytes", "must be >= 4096")
    if not oc.measurands or any(not m or "," in m for m in oc.measurands):
        fail("ocpp.measurands", "must list at least one measurand, none empty or with a ','")
    if oc.authorize == "local_list" and not oc.local_id_tags:
        fail("ocpp.local_id_tags", "authorize = local_list needs at least one id tag")
    for station_id, station in {"": None, **oc.stations}.items():
        key = f"ocpp.stations.{station_id}." if station_id else "ocpp.station_"
        phases = oc.station_phases if station is None else station.phases
        voltage = oc.station_voltage_v if station is None else station.voltage_v
        if phases is not None and not 1 <= phases <= 3:
            fail(f"{key}phases", f"{phases} is outside 1..3")
        if voltage is not None and not voltage > 0:
            fail(f"{key}voltage_v", "must be > 0")


def _check_tls(tls: TlsConfig, key: str, fail: object) -> None:
    if tls.enabled:
        for name in ("cert_file", "key_file"):
            if not getattr(tls, name):
                fail(f"{key}.{name}", "TLS is enabled but no file is given")  # type: ignore[operator]
        if tls.require_client_cert and not tls.ca_file:
            fail(f"{key}.ca_file", "require_client_cert needs a CA file")  # type: ignore[operator]
