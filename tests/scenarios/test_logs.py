"""The gateway's logs as an operator reads them: JSON lines carry a limit decision's source,
reason and mode as fields, and every timestamp (human and JSON) carries its zone."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.gateway_process import loopback_config, run_cli, running_gateway

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+00:00$")


def _iec_port(lines: list[str]) -> int:
    for line in lines:
        found = re.search(r"IEC 104 outstation on 127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("no IEC 104 listener logged:\n" + "".join(lines))


@pytest.mark.timeout(120)
def test_json_logs_carry_source_reason_mode_and_zoned_timestamps(tmp_path: Path) -> None:
    config = loopback_config(
        tmp_path, '[limits]\nmin_limit_w = 6000\n[iec104.points.total_power]\nunit = "W"\n'
    )
    with running_gateway(config, "--log-format", "json") as (proc, seen):
        port = _iec_port(seen)
        dso = run_cli("sim", "dso", "--port", str(port), "--setpoint", "20000", "--listen", "0.5")
        assert dso.returncode == 0, dso.stderr
    assert proc.stderr is not None
    rest = proc.stderr.read()  # the gateway has stopped: the pipe ends
    records = [json.loads(line) for line in [*seen, *rest.splitlines()] if line.strip()]
    assert records
    for record in records:
        assert ISO_UTC.match(record["asctime"]), record
        datetime.fromisoformat(record["asctime"])  # ISO 8601 with its offset
    limits = [r for r in records if r["message"].startswith("limit in force")]
    # Start (no store: fallback), the setpoint, and the hold if the master's leaving was
    # noticed before the gateway stopped.
    assert [r["source"] for r in limits][:2] == ["fallback", "dso_setpoint"], limits
    start, setpoint, *hold = limits
    assert start["mode"] == "fallback" and "did not exist" in start["reason"]
    assert setpoint["mode"] == "normal" and setpoint["levelname"] == "INFO"
    assert all(r["mode"] == r["source"] == "hold" and r["levelname"] == "WARNING" for r in hold), hold
    for record in limits:
        assert record["reason"] and record["message"].endswith(record["reason"])


@pytest.mark.timeout(120)
def test_human_logs_start_with_a_zoned_timestamp(tmp_path: Path) -> None:
    with running_gateway(loopback_config(tmp_path)) as (_, seen):
        pass
    assert seen
    for line in seen:
        stamp = line.split(" ", 1)[0]
        assert ISO_UTC.match(stamp), line
