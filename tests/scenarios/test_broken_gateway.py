"""The scenarios can fail: a gateway that does not enforce the limit fails T1."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.decisions import Decision
from ocpp_side.server import StationServer
from scenarios.runner import ScenarioRun
from scenarios.spec import SCENARIO_DIR, load_scenario


@pytest.mark.timeout(120)
async def test_t1_fails_when_the_ocpp_side_never_sends_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def ignore_allocations(self: StationServer, decisions: Sequence[Decision]) -> None:
        return None  # the core decides, the stations never hear of it

    monkeypatch.setattr(StationServer, "_on_decisions", ignore_allocations)
    result = await ScenarioRun(load_scenario(SCENARIO_DIR / "t1_setpoint_change.toml"), time_scale=60).run()

    assert not result.passed
    rows = {r.step: r for r in result.rows}
    assert rows["DSO sends 20 kW"].passed  # the DSO side still confirms ...
    assert not rows["profiles installed"].passed
    total = rows["site total <= 20 kW"]
    assert not total.passed  # ... but the site keeps drawing 44 kW
    assert total.measured.startswith("44000.0 W")
    assert not rows["check all within allocation"].passed
    assert not rows["DSO reads the reduced total"].passed
