"""The ``[ocpp]``, ``[upstream]`` and ``[legacy]`` sections: stations, the relay to the
operator's CSMS and the legacy listener, and their rules."""

from __future__ import annotations

import math
import re
import zoneinfo
from typing import Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from gateway.config_base import STRICT, Fail, Port, TlsConfig, check_port, check_tls

RateUnitChoice = Literal["auto", "W", "A"]


@dataclass(frozen=True, config=STRICT)
class StationConfig:
    password: str = ""  # HTTP Basic Auth, security profiles 1 and 2
    max_power_w: float | None = None
    min_power_w: float | None = None
    rate_unit: RateUnitChoice | None = None  # None: ocpp.station_rate_unit
    phases: int | None = None  # None: ocpp.station_phases
    voltage_v: float | None = None  # None: ocpp.station_voltage_v
    priority: int = 0  # when minimums do not fit, lower priorities are paused first
    weight: float = 1.0  # its share against the others' (2.0: twice as much)


@dataclass(frozen=True, config=STRICT)
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


@dataclass(frozen=True, config=STRICT)
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


@dataclass(frozen=True, config=STRICT)
class LegacyConfig:
    """A second station listener for legacy 1.5-dialect units (one hello line before the upgrade)."""

    enabled: bool = False
    listen_port: Port = 9001  # on ocpp.listen_host
    # The unit's hello line; the named group ``serial`` becomes its identity through identity_template.
    hello_pattern: str = "serial=(?P<serial>[A-Za-z0-9-]+)"
    identity_template: str = "{serial}"
    timezone: str = "UTC"  # of the unit's timestamps that carry no zone (an IANA name)


def check_ocpp(oc: OcppConfig, fail: Fail) -> None:
    """Every rule of ``[ocpp]``; the keys in ``fail`` are the file's (``ocpp....``)."""
    check_port("ocpp.port", oc.port, fail)
    if oc.security_profile >= 2 and not oc.tls.enabled:
        fail("ocpp.tls.enabled", f"security_profile={oc.security_profile} needs TLS")
    check_tls(oc.tls, "ocpp.tls", fail)
    if oc.station_min_power_w > oc.station_max_power_w:
        fail("ocpp.station_min_power_w", "is above ocpp.station_max_power_w")
    if not oc.profile_validity_s > oc.profile_refresh_s > 0:
        fail("ocpp.profile_validity_s", "must be above profile_refresh_s, which must be > 0")
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
    _check_profiles_and_station_defaults(oc, fail)


def _check_profiles_and_station_defaults(oc: OcppConfig, fail: Fail) -> None:
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


def check_upstream(up: UpstreamConfig, fail: Fail) -> None:
    """Every rule of ``[upstream]``."""
    if up.csms_url and not up.csms_url.startswith(("ws://", "wss://")):
        fail("upstream.csms_url", "must start with ws:// or wss://")
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


def check_legacy(legacy: LegacyConfig, fail: Fail) -> None:
    """Every rule of ``[legacy]``."""
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
