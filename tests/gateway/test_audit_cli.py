"""``ocpp809 audit``: list, show, export and verify, as subprocesses, on stopped and running gateways."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.audit_cli import REASON_WORDS, iso, parse_time
from gateway.config import parse_config
from gateway.core.events import DsoLinkUp, MeterSampled, ProfileResult, SetpointReceived, StationConnected
from gateway.core.model import OcppVersion, ProfileOutcome, RejectReason
from gateway.store import SCHEMA_VERSION
from tests.gateway.test_audit_proof import Clock, Stations, make_runtime
from tests.gateway.test_store import write_release_0_1_store

OCPP809 = [sys.executable, "-m", "gateway.cli"]
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCPP809, "audit", *args], capture_output=True, text=True, timeout=60, check=False)


async def write_site_history(path: Path) -> None:
    """A gateway run with explicit time: two stations, a cut they obey, a refusal, a raise, a stop."""
    clock = Clock(T0)
    runtime = make_runtime(path, clock)
    stations = Stations(runtime)
    try:
        runtime.submit(DsoLinkUp())
        await stations.connect("cp1", 11000)
        clock.now = T0 + 1
        await stations.connect("cp2", 11000)
        clock.now = T0 + 10
        await runtime.submit_setpoint(SetpointReceived(10000, peer="scada"))  # entry 2
        clock.now = T0 + 10.25
        await stations.accept_all()
        clock.now = T0 + 12.5
        runtime.submit(MeterSampled("cp1", 5000))
        runtime.submit(MeterSampled("cp2", 5000))
        clock.now = T0 + 20
        await runtime.submit_setpoint(SetpointReceived(1.0, peer="scada"))  # entry 3: below the minimum
        clock.now = T0 + 60
        await runtime.submit_setpoint(SetpointReceived(16000, peer="scada"))  # entry 4, closes 2's record (5)
        await stations.accept_all()
        clock.now = T0 + 70
    finally:
        await runtime.close()  # closes 4's record (6)


@pytest.fixture
async def history(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite3"
    await write_site_history(path)
    return path


async def test_list_says_each_entry_in_words_with_utc_times(history: Path) -> None:
    result = audit("list", "--store", str(history))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("#1      2027-01-15T08:00:00.000Z  start")
    assert "gateway started" in lines[0]
    assert lines[1].startswith("#2      2027-01-15T08:00:10.000Z  C_SE_NC_1")
    assert "setpoint 10000 W from scada: accepted; complied after 2.50 s" in lines[1]
    assert "setpoint 1 W from scada: refused: below the minimum limit (limits.min_limit_w)" in lines[2]
    assert "record of #2: command limit 10000 W: enforced after 0.25 s, complied after 2.50 s" in lines[4]
    assert "site drew 22000 W before; complied" in lines[4]
    last = audit("list", "--store", str(history), "--last", "2", "--since", "2027-01-15T08:00:30Z")
    assert [line[:2] for line in last.stdout.splitlines()] == ["#4", "#6"]  # 6: the record of 4


async def test_show_gives_an_entry_with_its_record_and_stations(history: Path) -> None:
    result = audit("show", "2", "--store", str(history))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "entry           #2" in text and "outcome         accepted" in text
    assert "compliance      command record of #2, closed 2027-01-15T08:01:00.000Z" in text
    assert "complied        2027-01-15T08:00:12.500Z (+2.500 s)" in text
    assert "enforced        2027-01-15T08:00:10.250Z (+0.250 s)" in text
    assert "site before     22000 W (good)" in text
    station_lines = [line.split() for line in text.splitlines() if line.startswith("  cp")]
    assert [(s[0], s[1], s[5]) for s in station_lines] == [
        ("cp1", "5000", "accepted"),
        ("cp2", "5000", "accepted"),
    ]
    missing = audit("show", "99", "--store", str(history))
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: no audit entry #99")


async def test_export_json_gives_each_command_its_record(history: Path) -> None:
    result = audit("export", "--format", "json", "--store", str(history))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["chain"]["ok"] and doc["chain"]["entries"] == 6
    assert doc["open_record"] is None
    commands = {e["id"]: e for e in doc["entries"] if e["kind"] == "C_SE_NC_1"}
    first, refused, raised = commands[2], commands[3], commands[4]
    assert first["time"] == "2027-01-15T08:00:10.000Z" and first["reason_text"] == "accepted"
    assert first["record"]["time_to_comply_s"] == 2.5 and first["record"]["time_to_enforce_s"] == 0.25
    assert first["record"]["complied_at"] == "2027-01-15T08:00:12.500Z"
    assert first["record"]["outcome"] == "complied" and first["record"]["power_before_w"] == 22000
    assert [s["answer"] for s in first["record"]["stations"]] == ["accepted", "accepted"]
    assert refused["reason"] == "below_min" and "record" not in refused
    assert raised["record"]["close_reason"] == "the gateway stopped"
    start = doc["entries"][0]
    assert start["kind"] == "start" and start["entry"]["mode"] == "initial" and start["entry"]["at"]
    assert all(len(e["hash"]) == 64 for e in doc["entries"])

    window = audit(
        "export", "--store", str(history), "--since", "2027-01-15T08:00:15", "--until", "2027-01-15T08:01:00Z"
    )
    assert [e["id"] for e in json.loads(window.stdout)["entries"]] == [3]


async def test_export_csv_has_one_row_per_entry(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.csv"
    result = audit("export", "--format", "csv", "--store", str(history), "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert (rows[1]["time_to_comply_s"], rows[1]["outcome"], rows[1]["stations"]) == (
        "2.5",
        "complied",
        "accepted: 2",
    )
    assert (
        rows[2]["reason_text"] == REASON_WORDS[RejectReason.BELOW_MIN] and rows[2]["time_to_comply_s"] == ""
    )


async def test_verify_passes_then_finds_an_edited_row(history: Path) -> None:
    ok = audit("verify", "--store", str(history))
    assert ok.returncode == 0 and ok.stdout.startswith("audit log intact: 6 entries, head #6 sha256 ")
    db = sqlite3.connect(history)
    db.execute("UPDATE audit SET value_w = 22000 WHERE id = 2")  # "the DSO asked for more"
    db.commit()
    db.close()
    broken = audit("verify", "--store", str(history))
    assert broken.returncode == 1
    assert (
        broken.stdout.strip()
        == "audit log broken at entry #2: its contents do not match its hash: it was edited"
    )


async def test_the_store_is_found_through_the_config(history: Path, tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[store]\npath = "{history}"\n')
    result = audit("verify", "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_errors_are_one_line_with_their_own_exit_codes(tmp_path: Path) -> None:
    missing = audit("list", "--store", str(tmp_path / "nope.sqlite3"))
    assert (missing.returncode, missing.stderr.strip()) == (
        3,
        f"error: no store at {tmp_path / 'nope.sqlite3'}",
    )
    old = tmp_path / "old.sqlite3"
    write_release_0_1_store(old)
    before = old.read_bytes()
    upgrade = audit("verify", "--store", str(old))
    assert upgrade.returncode == 3 and "start the gateway once with this ocpp809" in upgrade.stderr
    assert old.read_bytes() == before and not Path(f"{old}-wal").exists()  # read, never changed
    bad_time = audit("list", "--store", str(old), "--since", "yesterday")
    assert bad_time.returncode == 2 and "not an ISO 8601 time" in bad_time.stderr


def test_times_and_reasons() -> None:
    assert iso(T0 + 0.5) == "2027-01-15T08:00:00.500Z"
    assert parse_time("2027-01-15T08:00:00Z") == parse_time("2027-01-15T09:00:00+01:00") == T0
    assert parse_time("2027-01-15") == T0 - 8 * 3600  # a date, in UTC
    assert all(reason.value in REASON_WORDS for reason in RejectReason)


# -- beside a running gateway ----------------------------------------------------------------


async def test_reading_a_running_gateways_store_does_not_disturb_it(tmp_path: Path) -> None:
    config = parse_config(
        {
            "iec104": {"listen_host": "127.0.0.1", "port": 0},
            "ocpp": {"listen_host": "127.0.0.1", "port": 0},
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )
    gateway = build_gateway(config)
    await gateway.start()
    try:
        runtime = gateway.runtime
        path = config.store.path
        files = {s: os.stat(path + s).st_ino for s in ("", "-wal", "-shm")}
        assert (await runtime.submit_setpoint(SetpointReceived(20000, peer="scada"))).accepted
        for _ in range(100):  # the open record is written once nothing is on its way (bounded)
            if runtime.store.load_open_record() is not None:
                break
            await asyncio.sleep(0.02)
        runtime.submit(StationConnected("cp1", OcppVersion.V16, 22000, 4140))
        listed = await asyncio.to_thread(audit, "list", "--store", path)
        assert listed.returncode == 0, listed.stderr
        assert "C_SE_NC_1 setpoint 20000 W from scada: accepted" in listed.stdout
        assert listed.stdout.splitlines()[-1].startswith("open ")  # the record still open, provisional
        exported = json.loads((await asyncio.to_thread(audit, "export", "--store", path)).stdout)
        assert exported["open_record"]["limit_w"] == 20000
        # The gateway goes on as if nobody had looked: its file checks pass, setpoints are stored.
        for value in (21000.0, 22000.0):
            assert (await runtime.submit_setpoint(SetpointReceived(value, peer="scada"))).accepted
            verified = await asyncio.to_thread(audit, "verify", "--store", path)
            assert verified.returncode == 0, verified.stdout
        runtime.submit(ProfileResult("cp1", 1, ProfileOutcome.ACCEPTED))
        assert runtime.store.failure is None
        assert {s: os.stat(path + s).st_ino for s in ("", "-wal", "-shm")} == files
        assert [r.value_w for r in runtime.store.audit()] == [20000.0, 21000.0, 22000.0]
    finally:
        await gateway.stop()
