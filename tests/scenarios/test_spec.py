"""Scenario files parse into frozen dataclasses, and every mistake is one precise error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from scenarios.run_config import gateway_config
from scenarios.spec import (
    SCENARIO_DIR,
    SITE_SCENARIO_DIR,
    CapInvariant,
    DsoShortSessionStep,
    EvDemandStep,
    EvLeavesStep,
    Expectation,
    ScenarioError,
    SetpointStep,
    SiteConfig,
    StationConnectStep,
    StationDisconnectStep,
    WaitStep,
    load_scenario,
    parse_scenario,
    scenario_files,
    shipped_scenarios,
    site_scenarios,
    target_refusal,
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


# -- the site file, configuration references, --target ------------------------------------


def site(data: dict[str, Any]) -> SiteConfig:
    return SiteConfig("site.toml", data, "0" * 64)


def test_references_name_the_configuration_in_use_site_file_then_scenario_overrides() -> None:
    steps = [
        {"do": "wait", "for_s": "limits.hold_timeout_s * 0.8"},
        {"do": "setpoint", "value_w": "limits.min_limit_w - 1", "expect_confirm": "negative"},
        {"expect": "telemetry", "point": "limit_in_force", "equals": "limits.fallback_limit_w"},
        {"expect": "telemetry", "point": "total_power", "at_least": 0, "at_most": "limits.max_limit_w"},
        {
            "expect": "telemetry",
            "ioa": 200,
            "at_most": 100000,
            "max_tag_age_s": "ocpp.meter_sample_interval_s + 10",
        },
    ]
    data = minimal(steps=steps, gateway={"limits": {"fallback_limit_w": 12000}})
    the_site = site(
        {
            "limits": {"hold_timeout_s": 100, "min_limit_w": 8000, "fallback_limit_w": 9000},
            "iec104": {"points": {"limit_in_force": {"ioa": 2201}, "total_power": {"unit": "kW"}}},
            "ocpp": {"meter_sample_interval_s": 15},
        }
    )
    wait, setpoint, in_force, total, tagged = parse_scenario(data, "x.toml", the_site).steps
    assert isinstance(wait, WaitStep) and wait.for_s == 80  # the site's hold time, before scaling
    assert isinstance(setpoint, SetpointStep) and setpoint.value_w == 7999
    assert isinstance(in_force, Expectation) and (in_force.ioa, in_force.equals) == (2201, 12000)
    assert isinstance(total, Expectation) and (total.ioa, total.at_least, total.at_most) == (200, 0, 100000)
    assert total.describe() == "IOA 200 in [0, 100000] within 5 s"  # a band
    assert isinstance(tagged, Expectation) and tagged.max_tag_age_s == 25
    defaults = parse_scenario(data, "x.toml").steps  # no site file: the defaults
    assert isinstance(defaults[0], WaitStep) and defaults[0].for_s == Config().limits.hold_timeout_s * 0.8


@pytest.mark.parametrize(
    ("step", "key", "reason"),
    [
        ({"do": "wait", "for_s": "limits.hold_timeot_s"}, "steps[0].for_s", "names no number"),
        ({"do": "wait", "for_s": "limits.hold_timeout_s / 2"}, "steps[0].for_s", "neither a number"),
        ({"do": "wait", "for_s": "iec104.tls"}, "steps[0].for_s", "names no number"),
        ({"expect": "telemetry", "point": "nowhere", "equals": 1}, "steps[0].point", "unknown point"),
        (
            {"expect": "telemetry", "point": "total_power", "ioa": 200, "equals": 1},
            "steps[0].point",
            "not both",
        ),
        ({"expect": "site_power_w", "at_least": 2, "at_most": 1}, "steps[0]", "band [2, 1] is empty"),
        ({"do": "setpoint", "value_w": 1, "point": "total_power"}, "steps[0].point", "unknown key"),
    ],
)
def test_reference_mistakes_are_one_error_each(step: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(minimal(steps=[step]), "bad.toml")
    assert (info.value.key, reason in info.value.reason) == (key, True), info.value


def test_an_override_the_site_file_makes_impossible_names_the_site_file() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            minimal(gateway={"limits": {"min_limit_w": 60000}}),
            "x.toml",
            site({"limits": {"max_limit_w": 50000}}),
        )
    assert info.value.key.startswith("gateway.limits") and "(with --config site.toml)" in info.value.reason


def test_a_simulated_run_takes_the_site_file_but_keeps_to_loopback_and_its_own_peers() -> None:
    base = {
        "limits": {"hold_timeout_s": 120, "min_limit_w": 5000},
        "iec104": {
            "listen_host": "0.0.0.0",
            "port": 2404,
            "allowed_masters": ["10.0.0.1"],
            "tls": {"enabled": True},
        },
        "ocpp": {
            "port": 9000,
            "security_profile": 2,
            "accepted_stations": ["CS-1"],
            "tls": {"enabled": True},
        },
        "upstream": {"csms_url": "wss://csms.example/ocpp", "gateway_id": "gw", "on_outage": "close_station"},
        "store": {"path": "/var/lib/ocpp809/site.sqlite3", "missing_start": "initial"},
        "metrics": {"enabled": True, "port": 9108},
    }
    config = gateway_config({"ocpp": {"meter_sample_interval_s": 10}}, "s.sqlite3", time_scale=60, base=base)
    assert config.limits.hold_timeout_s == 2  # the site's 120 s, scaled
    assert config.limits.min_limit_w == 5000 and config.ocpp.meter_sample_interval_s == 10  # site + scenario
    assert (config.iec104.listen_host, config.iec104.port, config.ocpp.port) == ("127.0.0.1", 0, 0)
    assert config.iec104.allowed_masters == ("127.0.0.1",) and not config.iec104.tls.enabled
    assert (config.ocpp.security_profile, config.ocpp.accepted_stations) == (0, ())
    assert not config.ocpp.tls.enabled
    assert (config.upstream.csms_url, config.upstream.gateway_id) == ("", "")  # never the site's CSMS
    assert config.upstream.on_outage == "close_station"
    assert (config.store.path, config.store.missing_start) == ("s.sqlite3", "initial")
    assert not config.metrics.enabled
    own = gateway_config({"iec104": {"allowed_masters": ["127.0.0.2"]}}, "s.sqlite3", 1.0, base=base)
    assert own.iec104.allowed_masters == ("127.0.0.2",)  # the scenario's own choice wins over the runner


def test_the_site_variants_run_against_a_target_and_the_others_are_refused_naming_a_step() -> None:
    for path in site_scenarios():
        assert target_refusal(load_scenario(path)) is None, path
    names = [load_scenario(path).name for path in site_scenarios()]
    for prefix in ("T1 site", "T2 site", "T3 site", "T4 site"):
        assert any(n.startswith(prefix) for n in names), names
    for path in shipped_scenarios():
        refusal = target_refusal(load_scenario(path))
        assert refusal is not None and refusal.key.startswith("steps["), (path, refusal)
        assert str(refusal).endswith("; refused with --target") and "\n" not in str(refusal)
    t1 = target_refusal(load_scenario(SCENARIO_DIR / "t1_setpoint_change.toml"))
    assert t1 is not None and t1.key == "steps[1]"
    assert t1.reason == 'expect = "site_power_w" needs the simulated stations; refused with --target'
    steps = [{"do": "setpoint", "value_w": 20000}, {"expect": "mode", "equals": "hold"}]
    mode = target_refusal(parse_scenario(minimal(steps=steps), "x.toml"))
    assert mode is not None and mode.key == "steps[1]" and "point = 'fallback_active'" in mode.reason
    station = [{"do": "station_disconnect", "station": "cs1", "away_s": 1, "name": "unplug"}]
    refused = target_refusal(parse_scenario(minimal(steps=station), "x.toml"))
    assert refused is not None and refused.key == "steps[0] (unplug)"
    with_overrides = minimal(steps=steps[:1], gateway={"limits": {"min_limit_w": 1000}})
    overrides = target_refusal(parse_scenario(with_overrides, "x.toml"))
    assert overrides is not None and overrides.key == "gateway"


def test_directories_stand_for_their_scenario_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text("")
    (tmp_path / "a.toml").write_text("")
    (tmp_path / "notes.txt").write_text("")
    single = tmp_path / "elsewhere" / "single.toml"
    assert scenario_files([tmp_path, single]) == [tmp_path / "a.toml", tmp_path / "b.toml", single]
    assert scenario_files([str(SITE_SCENARIO_DIR)]) == site_scenarios()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScenarioError, match=r"no scenario files \(\*\.toml\)"):
        scenario_files([empty])
