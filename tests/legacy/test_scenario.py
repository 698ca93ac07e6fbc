"""A scenario with Series 4 units (``version = "legacy"``) beside a 1.6 station, whole gateway on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.runner import ScenarioRun
from scenarios.spec import load_scenario

SCENARIO = """
name = "legacy units follow the DSO"
description = "Two Series 4 units and a 1.6 station share 20 kW."

[gateway.ocpp]
meter_sample_interval_s = 10

[gateway.iec104]
link_poll_s = 0.1

[gateway.legacy]
timezone = "Europe/Berlin"

[[stations]]
id = "VX4-00"
count = 2
version = "legacy"
demand_w = 11000

[[stations]]
id = "cp16-"
count = 1
version = "1.6"
demand_w = 11000

[[steps]]
do = "setpoint"
value_w = 40000

[[steps]]
expect = "site_power_w"
equals = 33000
tolerance = 1
within_s = 20

[[steps]]
name = "DSO sends 20 kW"
do = "setpoint"
value_w = 20000

[[steps]]
expect = "site_power_w"
at_most = 20000
within_s = 5

[[steps]]
expect = "all_within_allocation"
since = "DSO sends 20 kW"
within_s = 5
"""


@pytest.mark.timeout(120)
async def test_legacy_units_in_a_scenario(tmp_path: Path) -> None:
    path = tmp_path / "legacy.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    result = await ScenarioRun(load_scenario(path), time_scale=60.0).run()
    table = "\n".join(f"{r.passed} {r.step}: {r.expected} / {r.measured}" for r in result.rows)
    assert result.passed, table
    assert result.rows[0].measured == "3 booted", table
