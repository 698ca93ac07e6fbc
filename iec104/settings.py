"""The ``[iec104]`` section: the outstation's settings and point map, and their rules."""

from __future__ import annotations

import ipaddress
import math

from pydantic.dataclasses import dataclass

from gateway.config_base import STRICT, Fail, Port, TlsConfig, Unit, check_port, check_tls


@dataclass(frozen=True, config=STRICT)
class PointConfig:
    ioa: int
    unit: Unit = "W"
    select_before_operate: bool = False


@dataclass(frozen=True, config=STRICT)
class PointMap:
    limit_setpoint: PointConfig = PointConfig(100)  # C_SE_NC_1
    limit_setpoint_time_tagged: PointConfig = PointConfig(101)  # C_SE_TC_1
    total_power: PointConfig = PointConfig(200)  # M_ME_TF_1
    limit_in_force: PointConfig = PointConfig(201)  # M_ME_TF_1
    fallback_active: PointConfig = PointConfig(300)  # M_SP_TB_1
    limit_enforced: PointConfig = PointConfig(301)  # M_SP_TB_1
    time_to_comply: PointConfig = PointConfig(202)  # M_ME_TF_1, seconds (``unit`` does not apply)


@dataclass(frozen=True, config=STRICT)
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


def check(iec: Iec104Config, fail: Fail) -> None:
    """Every rule of the section; the keys in ``fail`` are the file's (``iec104....``)."""
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
    check_port("iec104.port", iec.port, fail)
    _check_c104(iec, fail)
    check_tls(iec.tls, "iec104.tls", fail)


def _check_c104(iec: Iec104Config, fail: Fail) -> None:
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
