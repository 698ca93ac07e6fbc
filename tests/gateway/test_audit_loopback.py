"""Proof of execution end to end on 127.0.0.1: a DSO master, the whole gateway, two metering stations.

The stations draw what their EVs want up to the live profile they accepted, and report it
every 0.1 s; the DSO cuts the site. ``ocpp809 audit export`` (another process, reading the
running gateway's store) then shows the command's record with its time to comply, and
``ocpp809 audit verify`` passes, until a row is edited with sqlite3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocpp.v16 import call as call16

from gateway.app import Gateway, build_gateway
from gateway.config import parse_config
from iec104.master import Iec104Master
from iec104.outstation import Iec104Outstation
from ocpp_side.server import StationServer
from tests.ocpp.stations import Station16, boot, station

OCPP809 = [sys.executable, "-m", "gateway.cli"]
DEMAND_W = 11000.0  # what each EV would take
METER_EVERY_S = 0.1
WAIT_S = 15.0


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCPP809, "audit", *args], capture_output=True, text=True, timeout=60, check=False)


def draw_w(cp: Station16, live_profile_id: int) -> float:
    """What the station draws: its EV's demand, capped by the live profile it accepted last."""
    installed = [p for p in cp.log.profiles if p.installed and p.profile_id == live_profile_id]
    return DEMAND_W if not installed else min(DEMAND_W, installed[-1].limit_w)


async def report_meter(cp: Station16, live_profile_id: int) -> None:
    while True:
        sampled = [
            {"value": f"{draw_w(cp, live_profile_id):.0f}", "measurand": "Power.Active.Import", "unit": "W"}
        ]
        now = datetime.now(UTC).isoformat()
        await cp.call(
            call16.MeterValues(connector_id=1, meter_value=[{"timestamp": now, "sampled_value": sampled}])
        )
        await asyncio.sleep(METER_EVERY_S)


@contextlib.asynccontextmanager
async def metering_station(port: int, station_id: str, live_profile_id: int) -> AsyncIterator[Station16]:
    async with station(port, station_id) as cp:
        await boot(cp)
        task = asyncio.create_task(report_meter(cp, live_profile_id))
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.02)


def adapter(gateway: Gateway, kind: type) -> Any:
    return next(a for a in gateway.adapters if isinstance(a, kind))


async def test_a_cut_is_proven_with_its_time_to_comply(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    config = parse_config(
        {
            "limits": {"initial_limit_w": 50000.0},
            "iec104": {
                "listen_host": "127.0.0.1",
                "port": 0,
                "allowed_masters": ["127.0.0.1"],
                "link_poll_s": 0.05,
            },
            "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 1.0},
            "metrics": {"enabled": False},
            "store": {"path": str(store), "missing_start": "initial"},
        }
    )
    gateway = build_gateway(config)
    await gateway.start()
    try:
        runtime, live_id = gateway.runtime, config.ocpp.live_profile_id
        ocpp_port = adapter(gateway, StationServer).port
        async with (
            metering_station(ocpp_port, "cp1", live_id),
            metering_station(ocpp_port, "cp2", live_id),
            Iec104Master("127.0.0.1", adapter(gateway, Iec104Outstation).port) as master,
        ):
            view = runtime.view
            await until(lambda: view().enforced and len(view().stations) == 2, "both stations bound")
            await until(lambda: view().total_power_w == 2 * DEMAND_W, "both EVs charging")

            assert (await master.send_setpoint(100, 12000.0)).positive  # the cut: 22 kW -> 12 kW
            await until(
                lambda: (r := runtime.store.load_open_record()) is not None and r.complied_at_s is not None,
                "the site complied",
            )
            await asyncio.sleep(0.3)  # it stays there
            assert (await master.send_setpoint(100, 30000.0)).positive  # the next command closes the record

            exported = await asyncio.to_thread(audit, "export", "--format", "json", "--store", str(store))
            assert exported.returncode == 0, exported.stderr
            doc = json.loads(exported.stdout)
            [cut, lift] = [e for e in doc["entries"] if e["kind"] == "C_SE_NC_1"]
            record = cut["record"]
            assert (cut["value_w"], cut["accepted"], record["outcome"]) == (12000.0, True, "complied")
            assert record["power_before_w"] == 2 * DEMAND_W and record["power_before_quality"] == "good"
            assert record["peak_power_w"] == 2 * DEMAND_W and record["power_w"] <= 12000
            ttc, tte = record["time_to_comply_s"], record["time_to_enforce_s"]
            assert 0 < tte <= ttc < WAIT_S, record
            stations = {s["station_id"]: s for s in record["stations"]}
            assert sorted(stations) == ["cp1", "cp2"]
            for s in stations.values():
                assert s["share_w"] == 6000 and s["answer"] == "accepted"
                assert record["opened_at_s"] <= s["sent_at_s"] <= s["answered_at_s"]
            assert lift["record"]["outcome"] == "open"  # the raise's record is still provisional
            print(
                f"\ntime to enforce {tte:.3f} s, time to comply {ttc:.3f} s (meters every {METER_EVERY_S} s)"
            )

            verified = await asyncio.to_thread(audit, "verify", "--store", str(store))
            assert verified.returncode == 0, verified.stdout
    finally:
        await gateway.stop()

    # After the run: the chain still holds, and an edited row is found.
    assert audit("verify", "--store", str(store)).returncode == 0
    db = sqlite3.connect(store)
    db.execute(
        "UPDATE audit SET detail = 'complied after 0.01 s' WHERE kind = 'compliance' AND value_w = 12000"
    )
    db.commit()
    edited = db.execute("SELECT id FROM audit WHERE kind = 'compliance' AND value_w = 12000").fetchone()[0]
    db.close()
    broken = audit("verify", "--store", str(store))
    assert broken.returncode == 1
    assert broken.stdout.startswith(f"audit log broken at entry #{edited}: ")
