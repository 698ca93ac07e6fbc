"""Smoke tests of the benchmark's other modes: ACT_CON from the IEC 104 wire, the reconnect
storm after a gateway restart, and the soak. Five real stations, real processes, real
sockets, each bounded well under 30 s; they prove each mode measures real answers and that
its figures hang together. Speed is never asserted (``python -m bench.fanout`` measures it).
"""

from __future__ import annotations

import shutil

import pytest

from bench.actcon import SERIES, ActconOptions, render_actcon, run_actcon_case
from bench.restart import RestartOptions, render_restart, run_restart_case
from bench.soak import SoakOptions, render_soak, run_soak

STATIONS = 5


def test_actcon_is_timed_from_the_wire_and_split_into_its_parts() -> None:
    opts = ActconOptions(at_rest=4, pairs=2, stream=4, timeout_s=20.0)
    r = run_actcon_case(STATIONS, opts)
    assert r.ok, r.errors
    assert {name: len(rows) for name, rows in r.series.items()} == {
        "rest": 4,
        "start": 2,
        "inside": 2,
        "stream": 4,
    }
    for name in SERIES:
        for row in r.series[name]:
            assert row["positive"] and row["accepted_by_core"]
            # The core's time is inside c104's callback, which is inside the master's round trip.
            assert 0 < row["core_s"] <= row["thread_s"] <= row["latency_s"]
    assert r.profiles["rest"] == 0  # repeating the limit in force sends nothing
    assert r.profiles["pairs"] >= STATIONS * 2  # each pair moved every station at least once
    assert r.fan_out_s is not None and r.fan_out_s > 0
    table = render_actcon([r], opts)
    assert "inside a running fan-out" in table and "ACT_CON p99" in table


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_a_restart_is_timed_until_every_station_is_reprofiled(transport: str) -> None:
    if transport == "wss" and shutil.which("openssl") is None:
        pytest.skip("the TLS case issues its certificates with openssl")
    opts = RestartOptions(spread_s=1.0, retry_s=0.3, timeout_s=20.0)
    r = run_restart_case(STATIONS, transport, opts)
    # The restarted gateway restores every station's commitment: the cap holds throughout.
    assert not r.errors, r.errors
    assert r.handshakes == STATIONS and r.attempts >= STATIONS
    assert r.restart_s is not None and r.restart_s > 0
    assert r.reprofiled_s is not None and 0 < r.booted_s <= r.reprofiled_s  # type: ignore[operator]
    assert r.both_levels_s is not None and r.both_levels_s <= r.reprofiled_s
    assert r.cpu_ms_per_handshake is not None
    # Every station Accepted both levels again on its new connection, and the watch saw it.
    assert r.server_calls.get("SetChargingProfile", 0) >= 2 * STATIONS
    # Each station is re-sent the share it held: the stations' summed caps never left the limit.
    assert r.cap["limit_w"] == STATIONS * 10000.0 and r.cap["updates"] >= 1
    assert r.cap["violations"] == 0 and r.cap["max_sum_w"] <= r.cap["limit_w"]
    assert "re-profiled" in render_restart([r], opts)


def test_the_soak_samples_the_gateway_while_the_csms_drops_and_the_master_reconnects() -> None:
    opts = SoakOptions(
        minutes=0.2,
        stations=STATIONS,
        meter_every_s=1.0,
        setpoint_every_s=1.0,
        csms_first_drop_s=3.0,
        csms_drop_every_s=5.0,
        csms_down_s=1.0,
        master_reconnect_every_s=4.0,
        sample_every_s=3.0,
        warmup_s=3.0,
        timeout_s=20.0,
    )
    r = run_soak(opts)
    assert r.ok, r.errors
    assert len(r.samples) >= 4
    for sample in r.samples:
        assert sample["rss_kb"] > 0 and sample["fds"] > 0 and sample["tasks"] > 0
    assert r.csms_drops >= 2 and r.master["reconnects"] >= 1
    assert r.master["positive"] == r.master["sent"] > 0
    assert r.meter["answered"] > 0 and r.meter["failed"] == 0
    assert r.samples[-1]["meter_values"] >= r.meter["answered"] - STATIONS  # counted by the gateway
    assert r.verdict and "rss_flat" in r.verdict
    assert "open FDs" in render_soak(r, opts)
