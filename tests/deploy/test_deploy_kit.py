"""deploy/: the systemd unit, the Grafana dashboard and the Prometheus alert rules.

The dashboard and the rules are checked against a live ``/metrics`` scrape of a whole
gateway on loopback: every metric they read must be one the gateway exports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.app import run_until_stopped
from gateway.config import MetricsConfig, load_config
from iec104.settings import Iec104Config
from ocpp_side.settings import OcppConfig
from tests.gateway.test_status_page import families, scrape_full_gateway

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "ocpp809.service"
DASHBOARD = DEPLOY / "grafana" / "ocpp809-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "ocpp809-alerts.yml"
INSTALLED_BINARY = "/opt/ocpp809/bin/ocpp809"
CONFIG = "/etc/ocpp809/ocpp809.toml"
METRIC = re.compile(r"\bocpp809_[a-z0-9_]*[a-z0-9]\b")


# -- the systemd unit ------------------------------------------------------------------------


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """``[Section]`` -> ``(key, value)`` in order; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a key outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in unit_entries(UNIT.read_text())["Service"]:
        values.setdefault(key, []).append(value)
    return values


def test_the_unit_runs_a_dedicated_user_in_a_state_directory_with_hardening() -> None:
    s = service()
    one = {key: values[-1] for key, values in s.items()}
    assert one["User"] == one["Group"] == "ocpp809"
    assert one["StateDirectory"] == "ocpp809" and one["WorkingDirectory"] == "/var/lib/ocpp809"
    assert one["ExecStart"] == f"{INSTALLED_BINARY} run --config {CONFIG}"
    assert one["ExecStartPre"] == f"{INSTALLED_BINARY} check-config {CONFIG}"
    assert one["RestartPreventExitStatus"] == "2"  # a bad config exits 2: restarting cannot help
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in s["SystemCallFilter"]
    # No capability is needed because every default port is unprivileged.
    for port in (Iec104Config().port, OcppConfig().port, MetricsConfig().port, 19998):
        assert port > 1023


def test_the_sysusers_file_creates_the_units_user() -> None:
    lines = [ln for ln in (DEPLOY / "ocpp809.sysusers.conf").read_text().splitlines() if ln and ln[0] != "#"]
    assert [ln.split()[:2] for ln in lines] == [["u", "ocpp809"]]


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with its binary pointed at this environment's ``ocpp809``: verify checks it exists."""
    binary = Path(sys.executable).with_name("ocpp809")
    found = str(binary) if binary.exists() else shutil.which("ocpp809")
    assert found, "the ocpp809 console script is not installed (pip install .)"
    unit = tmp_path / "ocpp809.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, found))
    return unit


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (the unit's keys are checked above)")
    return binary


def test_systemd_analyze_verifies_the_unit(verifiable_unit: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_rates_the_units_exposure_low(verifiable_unit: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(verifiable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if result.returncode != 0 and found is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {result.stderr.strip()[:200]}")
    assert found is not None, result.stdout[-2000:]
    assert float(found.group(1)) <= 2.0, result.stdout  # 0 best .. 10 worst; "OK" is below 4


# -- dashboard and alert rules against a live scrape ----------------------------------------


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every family and every sample name a whole gateway exports (``_bucket``, ``_sum`` ...)."""
    with tempfile.TemporaryDirectory() as folder:
        text = asyncio.run(scrape_full_gateway(Path(folder)))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    return families(text) | samples


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))  # rows hold panels


def test_every_dashboard_panel_queries_metrics_that_exist(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    found = list(panels(dashboard["panels"]))
    assert len(found) >= 10
    read: set[str] = set()
    for panel in found:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, f"panel {panel['title']!r}: {target['expr']!r} reads no ocpp809 metric"
            assert names <= exported, f"panel {panel['title']!r} reads {sorted(names - exported)}"
            read |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert set(METRIC.findall(variable["definition"])) <= exported
    # The metrics an operator needs first are all on it.
    for name in (
        "ocpp809_limit_w",
        "ocpp809_mode",
        "ocpp809_dso_link_up",
        "ocpp809_limit_enforced",
        "ocpp809_committed_w",
        "ocpp809_total_power_w",
        "ocpp809_stations_offline_reserved",
    ):
        assert name in read, name


def alert_rules() -> list[dict[str, str]]:
    """The rules file's ``alert``/``expr``/``for`` per rule (the file keeps one-line values)."""
    rules: list[dict[str, str]] = []
    for line in ALERTS.read_text().splitlines():
        match = re.match(r"\s*(- )?(alert|expr|for): (.+)$", line)
        if match is None:
            continue
        key, value = match.group(2), match.group(3)
        if key == "alert":
            assert match.group(1), "each rule starts with '- alert:'"
            rules.append({})
        assert rules and key not in rules[-1], f"{key} out of place: {line!r}"
        rules[-1][key] = value
    return rules


def test_the_alert_rules_cover_the_failures_and_read_metrics_that_exist(exported: set[str]) -> None:
    rules = alert_rules()
    for rule in rules:
        assert "expr" in rule, rule
        names = set(METRIC.findall(rule["expr"]))
        assert names, f"{rule['alert']} reads no ocpp809 metric"
        assert names <= exported, f"{rule['alert']} reads {sorted(names - exported)}"
    by_name = {rule["alert"]: rule["expr"] for rule in rules}
    expected = {
        "Ocpp809DsoLinkDown": "ocpp809_dso_link_up",
        "Ocpp809FallbackActive": 'ocpp809_mode{mode="fallback"}',
        "Ocpp809LimitNotEnforced": "ocpp809_limit_enforced",
        "Ocpp809OfflineStationsReserved": "ocpp809_stations_offline_reserved",
        "Ocpp809OutboxGrowing": "ocpp809_upstream_outbox_appended_total",
        "Ocpp809StoreErrors": "ocpp809_store_errors_total",
    }
    for alert, reads in expected.items():
        assert reads in by_name[alert], alert


# -- what the start-up log tells an operator ------------------------------------------------


async def test_the_start_up_log_names_the_configuration_and_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "etc" / "site.toml"
    site.parent.mkdir()
    site.write_text(
        """
[iec104]
listen_host = "127.0.0.1"
port = 0
[ocpp]
listen_host = "127.0.0.1"
port = 0
[metrics]
enabled = false
[store]
path = "state.sqlite3"
"""
    )
    workdir = tmp_path / "var"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # a relative store.path is the working directory's, not the file's
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="gateway.app"):
        task = asyncio.create_task(run_until_stopped(load_config(site), stop, config_file=str(site)))
        try:
            async with asyncio.timeout(30):
                while "ocpp809 running" not in caplog.text:
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"ocpp809 {__version__}:")]
    assert f"configuration {site}," in line
    assert (
        f"store {workdir / 'state.sqlite3'} (store.path 'state.sqlite3', working directory {workdir})" in line
    )
    assert (workdir / "state.sqlite3").exists() and not (site.parent / "state.sqlite3").exists()
