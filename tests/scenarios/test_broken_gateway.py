"""The scenarios can fail: a gateway that does not enforce the limit fails T1, an impatient one T2."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from gateway.config import Config
from gateway.core.arbiter import ArbiterSettings
from gateway.core.decisions import Decision
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


@pytest.mark.timeout(120)
async def test_t2_fails_when_the_core_falls_back_before_the_hold_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.core_build

    real = gateway.core_build.arbiter_settings

    def impatient(config: Config) -> ArbiterSettings:
        settings = real(config)
        return replace(settings, hold_timeout_s=settings.hold_timeout_s / 2)

    monkeypatch.setattr(gateway.core_build, "arbiter_settings", impatient)
    result = await ScenarioRun(load_scenario(SCENARIO_DIR / "t2_link_failure.toml"), time_scale=60).run()

    rows = {r.step: r for r in result.rows}
    assert rows["hold detected"].passed
    assert not rows["limit held"].passed  # 10000 W arrived halfway through the hold
    assert rows["limit held"].measured.startswith("10000.0 W after 5.")
    assert not rows["stations untouched during hold"].passed
    assert not result.passed


@pytest.mark.timeout(120)
async def test_v8_fails_when_the_core_gives_an_offline_stations_share_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.core.fleet import Fleet, Station

    real = Fleet._account  # where each station's reserve enters the fleet's sums (since 45ce9ad)

    def forgetful(self: Fleet, station: Station, now_s: float, reserve_w: float | None = None) -> None:
        real(self, station, now_s, reserve_w if station.online else 0.0)  # gone means free: wrong

    monkeypatch.setattr(Fleet, "_account", forgetful)
    result = await ScenarioRun(load_scenario(SCENARIO_DIR / "v8_offline_station.toml"), time_scale=60).run()

    rows = {r.step: r for r in result.rows}
    assert rows["v8-off vanishes (TCP reset)"].passed
    assert not rows["others stay at 10 kW"].passed  # v8-cs1 got more while v8-off still holds 10 kW
    watch = rows["cap invariant"]
    assert not watch.passed
    assert "> limit 30000.0 W" in watch.measured
    assert not result.passed
