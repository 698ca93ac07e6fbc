"""Every shipped scenario, time-scaled, against the whole gateway on loopback: CI proves T1-T4.

The site variants (``scenarios/site/``) run here too, as a dry run with their stand-in
stations: what they expect must hold for a gateway that works."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.runner import ScenarioRun
from scenarios.spec import load_scenario, shipped_scenarios, site_scenarios

TIME_SCALE = 60.0  # T2's ten minutes of hold become ten seconds


def _table(result: object) -> str:
    rows = result.rows
    return "\n".join(
        f"{'PASS' if r.passed else 'FAIL'} {r.step}: expected {r.expected}, measured {r.measured}"
        for r in rows
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", shipped_scenarios() + site_scenarios(), ids=lambda p: Path(p).stem)
async def test_shipped_scenario_passes(path: Path) -> None:
    scenario = load_scenario(path)
    result = await ScenarioRun(scenario, time_scale=TIME_SCALE).run()
    assert result.passed, _table(result)
    assert result.rows[0].step == "setup"
    watched = int(scenario.cap_invariant.check)  # one more row: the cap invariant over the run
    assert len(result.rows) == len(scenario.steps) + 1 + watched  # every step judged, nothing skipped
