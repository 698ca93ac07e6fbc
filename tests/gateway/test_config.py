"""Configuration: defaults, strict types, unknown keys, impossible combinations, the example."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from gateway.config import Config, load_config, parse_config
from gateway.errors import ConfigError, ConfigErrors

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ocpp809.toml"


def test_no_file_means_built_in_defaults() -> None:
    config = load_config(None)
    assert config == Config()
    assert (config.iec104.port, config.ocpp.port, config.metrics.listen_host) == (2404, 9000, "127.0.0.1")


def _keys(cls: type, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for field in dataclasses.fields(cls):
        name = f"{prefix}{field.name}"
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else field.default_factory()  # type: ignore[misc]
            if field.default_factory is not dataclasses.MISSING
            else None
        )
        if dataclasses.is_dataclass(default):
            keys |= _keys(type(default), f"{name}.")
        elif name != "ocpp.stations":
            keys.add(name)
    return keys


def _flatten(data: dict[str, object], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in ("ocpp.stations", "upstream.passwords"):
            keys |= _flatten(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_example_file_is_valid_and_names_every_key() -> None:
    load_config(EXAMPLE)
    with open(EXAMPLE, "rb") as handle:
        written = _flatten(tomllib.load(handle))
    missing = _keys(Config) - written
    assert not missing, f"examples/ocpp809.toml lacks {sorted(missing)}"


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"limits": {"min_limt_w": 1}}, "limits.min_limt_w", "unknown key"),
        ({"limit": {}}, "limit", "unknown key"),
        ({"limits": {"min_limit_w": "6000"}}, "limits.min_limit_w", "valid number"),
        ({"iec104": {"port": 2404.5}}, "iec104.port", "valid integer"),
        ({"metrics": {"enabled": 1}}, "metrics.enabled", "valid boolean"),
        ({"limits": {"fallback_limit_w": 1000}}, "limits.fallback_limit_w", "outside"),
        ({"limits": {"min_limit_w": 200000}}, "limits.min_limit_w", "above limits.max_limit_w"),
        ({"limits": {"hold_timeout_s": 0}}, "limits.hold_timeout_s", "> 0"),
        (
            {"iec104": {"points": {"total_power": {"ioa": 100}}}},
            "iec104.points.total_power.ioa",
            "already used by limit_setpoint",
        ),
        (
            {"iec104": {"points": {"total_power": {"ioa": 1, "unit": "MW"}}}},
            "iec104.points.total_power.unit",
            "'W'",
        ),
        ({"iec104": {"t2_s": 20}}, "iec104.t2_s", "below t1_s"),
        ({"iec104": {"tls": {"enabled": True}}}, "iec104.tls.cert_file", "no file"),
        ({"ocpp": {"security_profile": 2}}, "ocpp.tls.enabled", "needs TLS"),
        ({"ocpp": {"security_profile": 4}}, "ocpp.security_profile", "Input should be"),
        (
            {"ocpp": {"security_profile": 1, "stations": {"cp1": {}}}},
            "ocpp.stations.cp1.password",
            "password",
        ),
        ({"ocpp": {"stations": {"a:b": {}}}}, "ocpp.stations.a:b", "no ':'"),
        (
            {"ocpp": {"stations": {"cp1": {"max_power_w": 1000, "min_power_w": 2000}}}},
            "ocpp.stations.cp1.min_power_w",
            "above",
        ),
        ({"upstream": {"csms_url": "http://x"}}, "upstream.csms_url", "ws://"),
        ({"upstream": {"csms_protocol": "ocpp1.6"}}, "upstream.csms_protocol", "Input should be"),
        ({"upstream": {"limit_change_significance": 1.0}}, "upstream.limit_change_significance", "[0, 1)"),
        ({"legacy": {"hello_pattern": "serial=(["}}, "legacy.hello_pattern", "does not compile"),
        ({"legacy": {"hello_pattern": "s=(?P<sn>.+)"}}, "legacy.hello_pattern", "(?P<serial>"),
        ({"legacy": {"identity_template": "{sn}"}}, "legacy.identity_template", "only {serial}"),
        ({"legacy": {"identity_template": "x/{serial}"}}, "legacy.identity_template", "printable"),
        ({"legacy": {"timezone": "Mars/Base"}}, "legacy.timezone", "unknown time zone"),
    ],
)
def test_bad_configuration_names_the_key(data: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.toml")
    assert (info.value.file, info.value.key) == ("site.toml", key)
    assert reason in info.value.reason
    # One line per problem: the first is the one named; every one is a single line.
    lines = info.value.lines() if isinstance(info.value, ConfigErrors) else [str(info.value)]
    assert all("\n" not in line for line in lines) and lines[0] == f"site.toml: {key}: {info.value.reason}"


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[limits\n")
    with pytest.raises(ConfigError, match=r"broken.toml: \(syntax\)"):
        load_config(broken)
