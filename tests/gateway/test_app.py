"""The composition root: the whole gateway starts from a config, serves metrics, stops."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from gateway.app import build_gateway
from gateway.config import parse_config
from gateway.events import SetpointReceived


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
