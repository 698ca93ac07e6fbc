"""The simulated charger's physics and profile composite, with explicit time (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scenarios.charging import (
    ChargerModel,
    Period,
    Profile,
    ProfileError,
    Purpose,
    Ramp,
    RateUnit,
    composite_limit_w,
    profile_from_ocpp,
    station_max_limit_w,
)

T0 = 1_800_000_000.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def max_profile(pid: int, stack: int, limit: float, unit: RateUnit = RateUnit.W, **kw: object) -> Profile:
    return Profile(pid, stack, Purpose.STATION_MAX, unit, (Period(0, limit),), T0, **kw)  # type: ignore[arg-type]


def test_highest_stack_level_of_the_max_profile_wins_even_when_higher() -> None:
    profiles = [max_profile(1, 1, 5000), max_profile(2, 2, 8000)]
    assert composite_limit_w(profiles, T0 + 1, 3) == 8000


def test_expired_top_level_falls_back_to_the_lower_one() -> None:
    profiles = [max_profile(1, 1, 5000), max_profile(2, 2, 8000, valid_to_s=T0 + 10)]
    assert composite_limit_w(profiles, T0 + 9.9, 3) == 8000
    assert composite_limit_w(profiles, T0 + 10, 3) == 5000


def test_not_yet_valid_profile_is_ignored() -> None:
    profiles = [max_profile(1, 1, 5000), max_profile(2, 2, 8000, valid_from_s=T0 + 5)]
    assert composite_limit_w(profiles, T0 + 1, 3) == 5000
    assert composite_limit_w(profiles, T0 + 5, 3) == 8000


def test_amperes_use_number_of_phases_times_230_volts() -> None:
    three = Profile(1, 1, Purpose.STATION_MAX, RateUnit.A, (Period(0, 16),), T0)
    assert composite_limit_w([three], T0, 3) == pytest.approx(16 * 3 * 230)
    explicit_one = Profile(1, 1, Purpose.STATION_MAX, RateUnit.A, (Period(0, 16, 1),), T0)
    assert composite_limit_w([explicit_one], T0, 3) == pytest.approx(16 * 230)
    # A single-phase station given a three-phase current limit still uses one phase.
    assert composite_limit_w([three], T0, 1) == pytest.approx(16 * 230)


def test_periods_and_duration() -> None:
    p = Profile(
        1, 1, Purpose.STATION_MAX, RateUnit.W, (Period(0, 9000), Period(60, 4000)), T0, duration_s=120
    )
    assert composite_limit_w([p], T0 + 59, 3) == 9000
    assert composite_limit_w([p], T0 + 60, 3) == 4000
    assert composite_limit_w([p], T0 + 120, 3) is None
    assert p.changes_after(T0 + 10) == T0 + 60
    assert p.changes_after(T0 + 61) == T0 + 120


def test_the_smallest_purpose_limit_binds_and_tx_profile_overrides_tx_default() -> None:
    station_max = max_profile(1, 0, 11000)
    tx_default = Profile(2, 0, Purpose.TX_DEFAULT, RateUnit.W, (Period(0, 7000),), T0)
    tx = Profile(3, 0, Purpose.TX, RateUnit.W, (Period(0, 9000),), T0)
    assert composite_limit_w([station_max, tx_default], T0, 3) == 7000
    assert composite_limit_w([station_max, tx_default, tx], T0, 3) == 9000
    assert composite_limit_w([], T0, 3) is None


def test_ramp_moves_at_its_rate_and_integrates_energy() -> None:
    ramp = Ramp(10000, 4000, T0, 3000)
    assert ramp.power_at(T0 + 1) == 7000
    assert ramp.settles_at() == T0 + 2
    assert ramp.power_at(T0 + 5) == 4000
    # 2 s trapezoid (10 kW -> 4 kW) = 14 kJ, then 2 s at 4 kW = 8 kJ
    assert ramp.energy_wh(T0, T0 + 4) == pytest.approx(22000 / 3600)


def test_charger_follows_the_limit_along_the_ramp() -> None:
    ev = ChargerModel(max_power_w=22000, phases=3, ramp_w_per_s=2000, demand_w=11000, now_s=T0)
    assert ev.power_w(T0 + 1) == 2000  # ramping up from zero
    assert ev.power_w(T0 + 10) == 11000
    changed = ev.install(max_profile(7, 3, 5000), T0 + 10)
    assert changed
    assert ev.power_w(T0 + 11) == 9000
    assert ev.next_event_s(T0 + 11) == T0 + 13
    assert ev.power_w(T0 + 13) == 5000
    sample = ev.sample(T0 + 13)
    assert sample.current_a == pytest.approx((5000 / 690,) * 3)
    assert sample.offered_w == 5000


def test_validto_lapse_is_noticed_at_update() -> None:
    ev = ChargerModel(max_power_w=22000, phases=3, ramp_w_per_s=1e9, demand_w=11000, now_s=T0)
    ev.install(max_profile(1, 1, 4000), T0)
    ev.install(max_profile(2, 2, 8000, valid_to_s=T0 + 30), T0)
    assert ev.target_w(T0 + 1) == 8000
    assert ev.next_event_s(T0 + 1) == T0 + 30
    assert ev.update(T0 + 30)
    assert ev.power_w(T0 + 30.01) == 4000


def test_same_purpose_and_stack_replaces_and_clear_matches_criteria() -> None:
    ev = ChargerModel(max_power_w=22000, phases=3, ramp_w_per_s=1e9, demand_w=22000, now_s=T0)
    ev.install(max_profile(1, 1, 4000), T0)
    ev.install(max_profile(2, 1, 6000), T0)
    assert list(ev.profiles) == [(0, 2)]
    assert ev.clear(T0, stack_level=5) == 0
    assert ev.clear(T0, purpose=Purpose.STATION_MAX) == 1
    assert ev.target_w(T0) == 22000


def test_profile_from_ocpp_16_and_201_payloads() -> None:
    v16 = {
        "charging_profile_id": 809,
        "stack_level": 2,
        "charging_profile_purpose": "ChargePointMaxProfile",
        "charging_profile_kind": "Absolute",
        "valid_to": iso(T0 + 900),
        "charging_schedule": {
            "charging_rate_unit": "A",
            "start_schedule": iso(T0),
            "charging_schedule_period": [{"start_period": 0, "limit": 10.0, "number_phases": 3}],
        },
    }
    p16 = profile_from_ocpp(v16, 0, T0, [RateUnit.A, RateUnit.W])
    assert (p16.profile_id, p16.stack_level, p16.purpose) == (809, 2, Purpose.STATION_MAX)
    assert p16.valid_to_s == T0 + 900
    assert p16.limit_w_at(T0, 3) == pytest.approx(6900)
    assert p16.limit_w_at(T0, 1) == pytest.approx(2300)  # a single-phase station uses one phase
    v201 = {
        "id": 810,
        "stack_level": 1,
        "charging_profile_purpose": "ChargingStationMaxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": [
            {
                "id": 1,
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 7200}],
            }
        ],
    }
    p201 = profile_from_ocpp(v201, 0, T0, [RateUnit.W])
    assert p201.limit_w_at(T0 + 1, 3) == 7200
    with pytest.raises(ProfileError, match="not supported"):
        profile_from_ocpp(v16, 0, T0, [RateUnit.W])
    with pytest.raises(ProfileError, match="timezone"):
        profile_from_ocpp({**v16, "valid_to": "2027-01-01T00:00:00"}, 0, T0, [RateUnit.A])


def test_the_station_cap_is_its_max_profiles_alone_live_while_valid_then_fallback() -> None:
    tx = Profile(3, 1, Purpose.TX_DEFAULT, RateUnit.W, (Period(0, 2000),), T0)
    profiles = [max_profile(1, 7, 5000), max_profile(2, 8, 10000, valid_to_s=T0 + 300), tx]
    assert composite_limit_w(profiles, T0 + 1, 3) == 2000  # what the EV may draw
    assert station_max_limit_w(profiles, T0 + 1, 3) == 10000  # what the gateway bound it to
    assert station_max_limit_w(profiles, T0 + 300, 3) == 5000  # the live one lapsed
    assert station_max_limit_w([tx], T0 + 1, 3) is None
