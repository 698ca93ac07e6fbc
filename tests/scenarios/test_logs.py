"""The gateway's logs as an operator reads them: JSON lines carry a limit decision's source,
reason and mode as fields (other decisions their ``decision`` kind and whom they concern),
and every timestamp (human and JSON) carries its zone."""

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
        refused = run_cli("sim", "dso", "--port", str(port), "--setpoint", "0", "--listen", "0.5")
        assert refused.returncode != 0 or "negative" in refused.stdout.lower(), refused.stdout
    assert proc.stderr is not None
    rest = proc.stderr.read()  # the gateway has stopped: the pipe ends
    records = [json.loads(line) for line in [*seen, *rest.splitlines()] if line.strip()]
    assert records
    for record in records:
        assert ISO_UTC.match(record["asctime"]), record
        datetime.fromisoformat(record["asctime"])  # ISO 8601 with its offset
    limits = [r for r in records if r["message"].startswith("limit in force")]
    # Start (no store: fallback), the setpoint, then holds while no master is connected and
    # the setpoint again when the second master comes within the hold time.
    assert [r["source"] for r in limits][:2] == ["fallback", "dso_setpoint"], limits
    start, setpoint, *later = limits
    assert start["mode"] == "fallback" and "did not exist" in start["reason"]
    assert setpoint["mode"] == "normal" and setpoint["levelname"] == "INFO"
    for r in later:
        expected = ("hold", "WARNING") if r["mode"] == "hold" else ("dso_setpoint", "INFO")
        assert (r["source"], r["levelname"]) == expected and r["mode"] in ("hold", "normal"), later
    for record in limits:
        assert record["reason"] and record["message"].endswith(record["reason"])
    # Other decisions carry their kind and whom they concern as fields too.
    [refusal] = [r for r in records if r.get("decision") == "setpoint_refused"]
    assert (refusal["value_w"], refusal["code"], refusal["levelname"]) == (0.0, "below_min", "INFO"), refusal
    assert refusal["peer"].startswith("127.0.0.1")


@pytest.mark.timeout(120)
def test_human_logs_start_with_a_zoned_timestamp(tmp_path: Path) -> None:
    with running_gateway(loopback_config(tmp_path)) as (_, seen):
        pass
    assert seen
    for line in seen:
        stamp = line.split(" ", 1)[0]
        assert ISO_UTC.match(stamp), line
