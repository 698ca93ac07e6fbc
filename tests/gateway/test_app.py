"""The composition root: the whole gateway starts from a config, serves metrics, stops."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.config import parse_config
from gateway.core.decisions import Decision, LimitChanged
from gateway.core.events import DsoLinkLost, DsoLinkUp, SetpointReceived
from gateway.core.model import Mode
from gateway.errors import StoreError


def loopback_config(tmp_path: Path, metrics: bool = True) -> dict[str, object]:
    return {
        "iec104": {"listen_host": "127.0.0.1", "port": 0},
        "ocpp": {"listen_host": "127.0.0.1", "port": 0},
        "metrics": {"enabled": metrics, "listen_host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp_path / "store.sqlite3")},
    }


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return str(response.read().decode())


async def test_metrics_endpoint_reports_the_limit_and_setpoints(tmp_path: Path) -> None:
    gateway = build_gateway(parse_config(loopback_config(tmp_path)))
    await gateway.start()
    try:
        port = gateway.metrics_port
        assert port
        outcome = await gateway.runtime.submit_setpoint(SetpointReceived(20000))
        assert outcome.accepted
        await gateway.runtime.submit_setpoint(SetpointReceived(0))
        text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
        assert "ocpp809_limit_w 20000.0" in text
        assert 'ocpp809_mode{mode="normal"} 1.0' in text
        assert 'ocpp809_limit_source{source="dso_setpoint"} 1.0' in text
        assert 'ocpp809_setpoints_total{reason="below_min",result="rejected"} 1.0' in text
        assert 'ocpp809_setpoints_total{reason="ok",result="accepted"} 1.0' in text
    finally:
        await gateway.stop()


async def test_a_missing_store_is_a_loud_start_on_the_fallback_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(loopback_config(tmp_path, metrics=False))
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        gateway = build_gateway(config)
    try:
        path = tmp_path / "store.sqlite3"
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert f"store {path} did not exist" in warning.getMessage()
        view = gateway.runtime.view()
        assert (view.mode, view.limit_w) == (Mode.FALLBACK, config.limits.fallback_limit_w)
        seen: list[Sequence[Decision]] = []
        gateway.runtime.add_listener(seen.append)
        await gateway.start()
        [announced] = [d for batch in seen for d in batch if isinstance(d, LimitChanged)]
        assert announced.mode is Mode.FALLBACK and "did not exist" in announced.reason
        assert (await gateway.runtime.submit_setpoint(SetpointReceived(20000))).accepted  # a DSO lifts it
        assert gateway.runtime.view().mode is Mode.NORMAL
    finally:
        await gateway.stop()


async def test_missing_start_initial_starts_on_the_initial_limit_and_still_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = loopback_config(tmp_path, metrics=False)
    data["store"] = {"path": str(tmp_path / "store.sqlite3"), "missing_start": "initial"}
    config = parse_config(data)
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        gateway = build_gateway(config)
    try:
        assert any("did not exist" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        view = gateway.runtime.view()
        assert (view.mode, view.limit_w) == (Mode.INITIAL, config.limits.initial_limit_w)
    finally:
        await gateway.runtime.close()


async def test_a_second_gateway_on_the_same_store_fails_and_touches_nothing(tmp_path: Path) -> None:
    config = parse_config(loopback_config(tmp_path, metrics=False))
    first = build_gateway(config)
    await first.start()
    try:
        assert (await first.runtime.submit_setpoint(SetpointReceived(20000))).accepted
        files = {
            p.name: p.read_bytes()
            for p in tmp_path.iterdir()
            if p.name.startswith("store.sqlite3") and p.is_file()
        }
        with pytest.raises(StoreError, match=r"is in use by another ocpp809 \(pid \d+\)"):
            build_gateway(config)
        assert {
            p.name: p.read_bytes()
            for p in tmp_path.iterdir()
            if p.name.startswith("store.sqlite3") and p.is_file()
        } == files
        stored = first.runtime.store.load_limit()
        assert stored is not None and (stored.mode, stored.setpoint_w) == (Mode.NORMAL, 20000)
    finally:
        await first.stop()


async def test_a_restart_resumes_the_hold_from_when_the_master_was_last_seen(tmp_path: Path) -> None:
    config = parse_config(loopback_config(tmp_path, metrics=False))
    clock = [1000.0]
    first = build_gateway(config, clock=lambda: clock[0])
    try:
        first.runtime.submit(DsoLinkUp())
        assert (await first.runtime.submit_setpoint(SetpointReceived(20000))).accepted
        clock[0] = 1030.0
        first.runtime.submit(DsoLinkLost())
    finally:
        await first.runtime.close()
    clock[0] = 1100.0
    second = build_gateway(config, clock=lambda: clock[0])
    try:
        view = second.runtime.view()
        assert (view.mode, view.limit_w) == (Mode.HOLD, 20000)
        assert second.runtime.arbiter.next_deadline() == 1030.0 + config.limits.hold_timeout_s
        assert second.runtime.start_reason is not None and "70.0 s ago" in second.runtime.start_reason
    finally:
        await second.runtime.close()
