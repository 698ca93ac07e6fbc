"""V12: a mixed fleet (2.0.1, 1.6, Series 4 units) behind a CSMS that speaks only 2.0.1,
through a DSO change and a CSMS outage, the whole gateway on loopback: every row passes.

Also the scenario keys it brought: ``[csms] subprotocols`` and the expectations
``csms_transactions``, ``csms_schema_failures``, ``csms_refused`` and ``csms_caps_told``."""

from __future__ import annotations

from typing import Any

import pytest

from scenarios.runner import ScenarioResult, ScenarioRun
from scenarios.spec import SCENARIO_DIR, Expectation, ScenarioError, load_scenario, parse_scenario

TIME_SCALE = 60.0  # as tests/scenarios/test_scenarios.py runs the shipped ones
V12 = SCENARIO_DIR / "v12_translated_mixed_fleet.toml"


def _table(result: ScenarioResult) -> str:
    return "\n".join(
        f"{'PASS' if r.passed else 'FAIL'} {r.step}: expected {r.expected}, measured {r.measured}"
        for r in result.rows
    )


@pytest.mark.timeout(180)
async def test_v12_every_row_passes() -> None:
    scenario = load_scenario(V12)
    versions = sorted({group.version for group in scenario.stations})
    assert versions == ["1.6", "2.0.1", "legacy"] and scenario.csms.subprotocols == ("ocpp2.0.1",)
    result = await ScenarioRun(scenario, time_scale=TIME_SCALE).run()
    table = _table(result)
    assert result.passed, table
    assert len(result.rows) == len(scenario.steps) + 2, table  # setup, every step, cap invariant
    rows = {r.step: r for r in result.rows}
    assert rows["setup"].measured == "6 booted", table
    assert rows["every transaction whole at the CSMS"].measured.startswith("9 whole (9 ended, 0 open"), table
    assert rows["the CSMS found every frame valid"].measured.startswith("0 in "), table
    assert "(6 on ocpp2.0.1)" in rows["the CSMS found every frame valid"].measured, table
    assert rows["no station refused by the 2.0.1 CSMS"].measured == "0 refused", table
    assert rows["the CSMS cannot know the cut yet"].measured.startswith("0 of 6 within 10%"), table
    assert rows["the CSMS knows each station's cap"].measured == "6 of 6 within 10%", table


def _doc(*steps: dict[str, Any], **csms: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "csms": {"enabled": True, **csms},
        "stations": [{"id": "cs", "count": 2}],
        "steps": list(steps),
    }


def test_csms_subprotocols_and_the_new_expectations_parse() -> None:
    scenario = parse_scenario(
        _doc(
            {"expect": "csms_transactions", "equals": 2, "within_s": 20},
            {"expect": "csms_schema_failures", "equals": 0},
            {"expect": "csms_refused", "at_most": 0},
            {"expect": "csms_caps_told", "at_least": 1},
            subprotocols=["ocpp2.0.1"],
        ),
        "x.toml",
    )
    assert scenario.csms.subprotocols == ("ocpp2.0.1",)
    whole, failures, refused, told = scenario.steps
    assert isinstance(whole, Expectation)
    assert whole.describe() == (
        "transactions whole at CSMS = 2, in order, none twice, none missing within 20 s"
    )
    assert isinstance(failures, Expectation) and failures.describe().startswith("schema failures at CSMS = 0")
    assert isinstance(refused, Expectation) and refused.describe().startswith(
        "handshakes refused by CSMS <= 0"
    )
    assert isinstance(told, Expectation) and told.describe().startswith("stations' caps told to CSMS >= 1")
    assert parse_scenario(_doc({"expect": "csms_refused", "equals": 0}), "x.toml").csms.subprotocols == (
        "ocpp2.0.1",
        "ocpp1.6",
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc({"expect": "csms_transactions"}), "give exactly one of equals"),
        (_doc({"expect": "csms_schema_failures", "equals": True}), "must be a number|valid number"),
        (_doc({"expect": "csms_refused", "equals": 0}, subprotocols=["ocpp1.5"]), r"csms\.subprotocols"),
        (_doc({"expect": "csms_refused", "equals": 0}, subprotocols=[]), r"csms\.subprotocols"),
        (
            {**_doc({"expect": "csms_transactions", "equals": 1}), "csms": {"enabled": False}},
            r"csms_transactions needs \[csms\] enabled",
        ),
    ],
)
def test_mistakes_are_one_precise_error(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(doc, "x.toml")
