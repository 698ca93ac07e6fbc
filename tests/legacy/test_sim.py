"""``ocpp809 sim stations --legacy``: simulated Series 4 units against the gateway on loopback."""

from __future__ import annotations

import argparse

import pytest

from scenarios.cli import _sim_stations, register
from scenarios.sim_station import SimStation
from scenarios.station_spec import StationSpec
from tests.legacy.conftest import SiteFactory

WAIT_S = 10.0


async def test_a_simulated_unit_boots_charges_under_the_dso_cap_and_meters(make_site: SiteFactory) -> None:
    site = await make_site({"timezone": "America/New_York"}, limits={"initial_limit_w": 9000.0})
    unit = SimStation(
        StationSpec("S4-SIM-7", legacy=True, timezone="America/New_York", demand_w=11000.0),
        f"ws://127.0.0.1:{site.legacy_port}",
    )
    unit.start()
    try:
        await site.until(lambda: site.station("S4-SIM-7") is not None, WAIT_S)
        await site.until(lambda: unit.cap_w() == 9000.0, WAIT_S)  # the DSO cap, in a 1.6 profile
        await site.until(lambda: (site.online("S4-SIM-7").power_w or 0.0) > 0.0, WAIT_S)
        assert site.runtime.view().total_power_w == site.online("S4-SIM-7").power_w
    finally:
        await unit.stop()
    for kind in ("string_number", "naive_timestamp", "unknown_field", "boot_without_serial"):
        assert site.metric("ocpp809_legacy_leniencies_total", {"kind": kind}) >= 1, kind
    errors = [
        m
        for metric in site.runtime.metrics.registry.collect()
        if metric.name == "ocpp809_ocpp_call_errors_sent"
        for m in metric.samples
        if m.name.endswith("_total") and m.value
    ]
    assert not errors  # every loosened frame was mended into valid 1.6


async def test_the_cli_plays_series_4_units(
    make_site: SiteFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    site = await make_site()
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "sim",
            "stations",
            "--legacy",
            "--count",
            "2",
            "--id-prefix",
            "VX4-00000",
            "--url",
            f"ws://127.0.0.1:{site.legacy_port}",
            "--duration",
            "1",
            "--status-every",
            "0.2",
        ]
    )
    assert await _sim_stations(args) == 0
    assert "connected 2/2" in capsys.readouterr().out
    assert site.metric("ocpp809_ocpp_calls_received_total", {"action": "BootNotification"}) == 2
    assert site.metric("ocpp809_legacy_leniencies_total", {"kind": "boot_without_serial"}) == 2
    assert site.metric("ocpp809_legacy_refused_total", {"reason": "no_hello"}) == 0


def test_the_cli_refuses_an_unknown_time_zone(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sim", "stations", "--legacy", "--timezone", "Mars/Olympus"])
    assert args.handler(args) == 2
    assert "Mars/Olympus" in capsys.readouterr().err
