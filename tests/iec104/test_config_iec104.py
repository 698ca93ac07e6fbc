"""The [iec104] configuration checks that c104 or the standard would otherwise trip over at run time."""

from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ({"allowed_masters": ["scada.example"]}, "iec104.allowed_masters", "not an IP address"),
        ({"tick_rate_ms": 20}, "iec104.tick_rate_ms", ">= 50"),
        ({"link_poll_s": 0.0}, "iec104.link_poll_s", "> 0"),
        ({"command_timeout_s": 0.0}, "iec104.command_timeout_s", "> 0"),
        ({"t3_s": 0}, "iec104.t3_s", ">= 1"),
        (
            {"points": {"fallback_active": {"ioa": 300, "unit": "kW"}}},
            "iec104.points.fallback_active.unit",
            "no unit",
        ),
        (
            {"points": {"total_power": {"ioa": 200, "select_before_operate": True}}},
            "iec104.points.total_power.select_before_operate",
            "only setpoint",
        ),
        ({"points": {"total_power": {"ioa": 100}}}, "iec104.points.total_power.ioa", "already used"),
        (
            {
                "tls": {
                    "enabled": True,
                    "cert_file": "c",
                    "key_file": "k",
                    "ca_file": "ca",
                    "require_client_cert": False,
                }
            },
            "iec104.tls.require_client_cert",
            "must be true",
        ),
    ],
)
def test_bad_iec104_settings_are_one_precise_error(section: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"iec104": section})
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_good_settings_pass() -> None:
    config = parse_config(
        {
            "iec104": {
                "allowed_masters": ["10.0.0.5", "::1"],
                "points": {"limit_setpoint": {"ioa": 100, "unit": "kW"}},
            }
        }
    )
    assert config.iec104.points.limit_setpoint.unit == "kW"
