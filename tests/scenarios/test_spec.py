"""Scenario files parse into frozen dataclasses, and every mistake is one precise error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from scenarios.runner import gateway_config
from scenarios.spec import (
    CapInvariant,
    DsoShortSessionStep,
    EvDemandStep,
    EvLeavesStep,
    Expectation,
    ScenarioError,
    SetpointStep,
    StationConnectStep,
    StationDisconnectStep,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)


def minimal(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "x",
        "stations": [{"id": "cs", "count": 2}],
        "steps": [{"do": "setpoint", "value_w": 20000}, {"expect": "site_power_w", "at_most": 20000}],
    }
    doc.update(extra)
    return doc


def test_every_shipped_scenario_parses_and_t1_to_t4_are_there() -> None:
    names = [load_scenario(path).name for path in shipped_scenarios()]
    for prefix in ("T1 ", "T2 ", "T3 ", "T4 "):
        assert any(n.startswith(prefix) for n in names), names


def test_minimal_scenario() -> None:
    scenario = parse_scenario(minimal(), "x.toml")
    assert scenario.station_ids() == ["cs1", "cs2"]
    assert isinstance(scenario.steps[0], SetpointStep)
    assert isinstance(scenario.steps[1], Expectation)
    with pytest.raises(AttributeError):
        scenario.steps[0].value_w = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"steps": [{"do": "explode"}]}, "steps[0].do", "unknown action"),
        ({"steps": [{"do": "setpoint"}]}, "steps[0].value_w", "required"),
        ({"steps": [{"do": "setpoint", "value_w": "20 kW"}]}, "steps[0].value_w", "number"),
        ({"steps": [{"expect": "site_power_w"}]}, "steps[0]", "exactly one of equals"),
        ({"steps": [{"expect": "mode", "equals": "panic"}]}, "steps[0].equals", "mode is one of"),
        ({"steps": [{"expect": "telemetry", "equals": 1}]}, "steps[0].ioa", "needs an ioa"),
        (
            {"steps": [{"expect": "station_power_w", "station": "nope", "at_most": 1}]},
            "steps[0].station",
            "no station",
        ),
        (
            {"steps": [{"expect": "mode", "equals": "hold", "since": "later"}]},
            "steps[0].since",
            "no earlier step",
        ),
        (
            {"steps": [{"do": "wait", "for_s": 1, "expect": "mode"}]},
            "steps[0]",
            "exactly one of 'do' or 'expect'",
        ),
        ({"steps": [{"do": "dso_short_session"}]}, "steps[0].value_w", "required"),
        (
            {"steps": [{"do": "dso_short_session", "value_w": 20000, "how": "stopdt"}]},
            "steps[0].how",
            "Input should be",
        ),
        ({"steps": []}, "steps", "at least one step"),
        ({"stations": [{"id": "a:b"}]}, "stations[0].id", "no ':'"),
        ({"stations": [{"id": "cs", "phases": 4}]}, "stations[0].phases", "Input should be"),
        ({"gateway": {"limits": {"hold_timeout": 5}}}, "gateway.limits.hold_timeout", "unknown key"),
        ({"gateway": {"limits": {"min_limit_w": 200000}}}, "gateway.limits.min_limit_w", "above"),
    ],
)
def test_errors_name_the_file_the_key_and_the_reason(change: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(minimal(**change), "bad.toml")
    assert info.value.file == "bad.toml"
    assert info.value.key == key
    assert reason in info.value.reason


def test_load_reports_syntax_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ScenarioError, match="syntax"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "missing.toml")


def test_time_scale_divides_the_gateway_timeouts_and_forces_loopback() -> None:
    config = gateway_config({"limits": {"hold_timeout_s": 600}}, "s.sqlite3", time_scale=60)
    assert config.limits.hold_timeout_s == 10
    assert config.ocpp.profile_refresh_s == Config().ocpp.profile_refresh_s / 60  # a default too
    assert config.limits.max_command_age_s == 30  # not a scenario-time duration: untouched
    assert (config.iec104.listen_host, config.ocpp.listen_host) == ("127.0.0.1", "127.0.0.1")
    assert (config.iec104.port, config.ocpp.port, config.metrics.enabled) == (0, 0, False)
    assert config.store.path == "s.sqlite3"
    assert config.upstream.outbox_path == "outbox.sqlite3"  # next to the store, never the cwd
    assert config.upstream.csms_url == ""  # standalone unless the scenario has a CSMS


def test_csms_steps_need_the_csms_simulator() -> None:
    steps = [{"do": "csms_down"}]
    with pytest.raises(ScenarioError, match=r"csms_down needs \[csms\] enabled"):
        parse_scenario(minimal(steps=steps), "x.toml")
    counted = [{"expect": "csms_stations_sent", "equals": 2}]
    with pytest.raises(ScenarioError, match="needs an action"):
        parse_scenario(minimal(steps=counted, csms={"enabled": True}), "x.toml")
    ok = parse_scenario(minimal(steps=steps, csms={"enabled": True}), "x.toml")
    assert ok.csms.enabled


def test_quality_belongs_to_telemetry_and_may_stand_alone() -> None:
    alone = [{"expect": "telemetry", "ioa": 200, "quality": "not_topical"}]
    assert parse_scenario(minimal(steps=alone), "x.toml").steps[0].quality == "not_topical"  # type: ignore[union-attr]
    wrong = [{"expect": "site_power_w", "at_most": 1, "quality": "invalid"}]
    with pytest.raises(ScenarioError, match="only telemetry has a quality"):
        parse_scenario(minimal(steps=wrong), "x.toml")


def test_a_short_dso_session_drops_with_a_reset_unless_told_to_close() -> None:
    steps = [
        {"do": "dso_short_session", "value_w": 20000},
        {"do": "dso_short_session", "value_w": 0, "how": "close", "expect_confirm": "negative"},
    ]
    first, second = parse_scenario(minimal(steps=steps), "x.toml").steps
    assert isinstance(first, DsoShortSessionStep) and isinstance(second, DsoShortSessionStep)
    assert (first.how, first.expect_confirm, first.within_s) == ("abort", "positive", 5.0)
    assert (second.how, second.expect_confirm) == ("close", "negative")
    names = [load_scenario(path).name for path in shipped_scenarios()]
    assert "V7 short DSO session" in names


def test_a_station_drops_with_a_close_frame_unless_told_to_abort() -> None:
    steps = [
        {"do": "station_disconnect", "station": "cs1", "away_s": 2},
        {"do": "station_disconnect", "station": "cs2", "away_s": 3600, "how": "abort"},
    ]
    closed, aborted = parse_scenario(minimal(steps=steps), "x.toml").steps
    assert isinstance(closed, StationDisconnectStep) and isinstance(aborted, StationDisconnectStep)
    assert (closed.how, aborted.how) == ("close", "abort")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(minimal(steps=[{**steps[0], "how": "silent"}]), "bad.toml")
    assert (info.value.key, info.value.reason.startswith("Input should be")) == ("steps[0].how", True)


def test_a_station_joins_once_at_a_station_connect_step() -> None:
    stations = [{"id": "cs", "count": 2}, {"id": "late", "connect_at_start": False}]
    joined = [{"do": "station_connect", "station": "late"}, {"do": "setpoint", "value_w": 20000}]
    scenario = parse_scenario(minimal(stations=stations, steps=joined), "x.toml")
    assert isinstance(scenario.steps[0], StationConnectStep)
    assert [g.connect_at_start for g in scenario.stations] == [True, False]
    assert scenario.station_ids() == ["cs1", "cs2", "late"]
    for steps, reason in (
        ([{"do": "station_connect", "station": "cs1"}], "not waiting to join (connect_at_start = true)"),
        ([joined[0], joined[0]], "not waiting to join (it joined at an earlier step)"),
        ([{"do": "station_connect", "station": "nope"}], "no station 'nope'"),
    ):
        with pytest.raises(ScenarioError) as info:
            parse_scenario(minimal(stations=stations, steps=steps), "bad.toml")
        assert info.value.key.endswith(".station") and reason in info.value.reason


def test_an_ev_arrives_with_a_demand_and_leaves_with_ev_leaves() -> None:
    steps = [
        {"do": "ev_demand", "station": "cs1", "demand_w": 11000},
        {"do": "ev_leaves", "station": "cs1"},
    ]
    arrives, leaves = parse_scenario(minimal(steps=steps), "x.toml").steps
    assert isinstance(arrives, EvDemandStep) and isinstance(leaves, EvLeavesStep)
    with pytest.raises(ScenarioError, match="no station 'cs9'"):
        parse_scenario(minimal(steps=[{"do": "ev_leaves", "station": "cs9"}]), "x.toml")


def test_station_caps_are_numbers_and_one_station_cap_needs_a_station() -> None:
    steps = [
        {"expect": "station_caps_total_w", "at_most": 30000, "for_s": 60},
        {"expect": "station_cap_w", "station": "cs1", "equals": 10000},
    ]
    total, one = parse_scenario(minimal(steps=steps), "x.toml").steps
    assert isinstance(total, Expectation) and total.describe() == "station caps total <= 30000 for 60 s"
    assert isinstance(one, Expectation) and one.describe() == "cap of cs1 = 10000 within 5 s"
    for step, key, reason in (
        ({"expect": "station_cap_w", "equals": 1}, "steps[0].station", "station_cap_w needs a station"),
        ({"expect": "station_caps_total_w", "equals": "full"}, "steps[0].equals", "must be a number"),
        ({"expect": "station_caps_total_w"}, "steps[0]", "exactly one of equals"),
    ):
        with pytest.raises(ScenarioError) as info:
            parse_scenario(minimal(steps=[step]), "bad.toml")
        assert (info.value.key, reason in info.value.reason) == (key, True)


def test_the_cap_invariant_watch_is_off_unless_asked_for() -> None:
    assert parse_scenario(minimal(), "x.toml").cap_invariant == CapInvariant(check=False, cut_within_s=5.0)
    on = parse_scenario(minimal(cap_invariant={"check": True, "cut_within_s": 1}), "x.toml")
    assert on.cap_invariant == CapInvariant(check=True, cut_within_s=1.0)
    for table, key in (
        ({"check": True, "cut_within_s": 0}, "cap_invariant.cut_within_s"),
        ({"check": "yes"}, "cap_invariant.check"),
        ({"window_s": 1}, "cap_invariant.window_s"),
    ):
        with pytest.raises(ScenarioError) as info:
            parse_scenario(minimal(cap_invariant=table), "bad.toml")
        assert info.value.key == key


def test_v8_to_v11_ship_and_watch_the_cap_invariant() -> None:
    scenarios = {load_scenario(path).name.split(" ")[0]: load_scenario(path) for path in shipped_scenarios()}
    for prefix in ("V8", "V9", "V10", "V11"):
        assert prefix in scenarios, sorted(scenarios)
        assert scenarios[prefix].cap_invariant.check, prefix
    steps = scenarios["V8"].steps
    assert any(isinstance(s, StationDisconnectStep) and s.how == "abort" for s in steps)
    assert any(isinstance(s, StationConnectStep) for s in scenarios["V9"].steps)
    assert any(isinstance(s, EvLeavesStep) for s in scenarios["V11"].steps)
