"""meter.py: sampled values to watts, per OCPP version and the 1.6 defaults."""

from __future__ import annotations

import math

import pytest

from ocpp_side.meter import StationMeter, power_w


def _mv(*sampled: dict, timestamp: str = "2026-01-01T00:00:00Z") -> list[dict]:  # type: ignore[type-arg]
    return [{"timestamp": timestamp, "sampledValue": list(sampled)}]


P = "Power.Active.Import"


@pytest.mark.parametrize(
    ("sampled", "watts"),
    [
        ([{"value": "7200", "measurand": P, "unit": "W"}], 7200.0),
        ([{"value": "7200", "measurand": P}], 7200.0),  # a power measurand without a unit is in W
        ([{"value": "7.2", "measurand": P, "unit": "kW"}], 7200.0),
        ([{"value": 7.2, "measurand": P, "unitOfMeasure": {"unit": "kW"}}], 7200.0),  # 2.0.1: numbers
        ([{"value": 72, "measurand": P, "unitOfMeasure": {"unit": "W", "multiplier": 2}}], 7200.0),
        ([{"value": "2400", "measurand": P, "phase": ph} for ph in ("L1", "L2", "L3")], 7200.0),
        (
            [{"value": "2.4", "measurand": P, "unit": "kW", "phase": ph} for ph in ("L1-N", "L2-N", "L3-N")],
            7200.0,
        ),
        # The total wins over the phases when both are given.
        ([{"value": "7000", "measurand": P}, {"value": "2400", "measurand": P, "phase": "L1"}], 7000.0),
        # Line-to-line readings are not summed with phase readings.
        (
            [
                {"value": "2400", "measurand": P, "phase": "L1"},
                {"value": "999", "measurand": P, "phase": "L1-L2"},
            ],
            2400.0,
        ),
        # No power, but current and voltage per phase: estimated as sum(I x V).
        (
            [{"value": "10", "measurand": "Current.Import", "phase": p, "unit": "A"} for p in ("L1", "L2")]
            + [
                {"value": "230", "measurand": "Voltage", "phase": f"{p}-N", "unit": "V"} for p in ("L1", "L2")
            ],
            4600.0,
        ),
        ([{"value": "-50", "measurand": P}], 0.0),  # never negative draw
    ],
)
def test_power(sampled: list[dict], watts: float) -> None:  # type: ignore[type-arg]
    assert power_w(_mv(*sampled)) == pytest.approx(watts)


@pytest.mark.parametrize(
    "sampled",
    [
        [{"value": "7200"}],  # 1.6 default measurand: the energy register, not power
        [{"value": "7200", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
        [{"value": "7200", "measurand": P, "unit": "Wh"}],  # a unit power is never in
        [{"value": "n/a", "measurand": P, "unit": "W"}],  # not a number: no reading
        [{"value": 7, "measurand": P, "unitOfMeasure": {"unit": "W", "multiplier": "x"}}],  # unknown unit
        [{"value": "7200", "measurand": P, "unit": "W", "location": "EV"}],
        [{"value": "10", "measurand": "Current.Import", "phase": "L1"}],  # current without voltage
    ],
)
def test_no_power(sampled: list[dict]) -> None:  # type: ignore[type-arg]
    assert power_w(_mv(*sampled)) is None


def test_last_entry_with_power_wins() -> None:
    values = (
        _mv({"value": "1000", "measurand": P}) + _mv({"value": "2000", "measurand": P}) + _mv({"value": "5"})
    )
    assert power_w(values) == 2000.0


def test_station_meter_sums_outlets_unless_main_meter() -> None:
    meter = StationMeter()
    assert meter.update(1, 3000.0) == 3000.0
    assert meter.update(2, 4000.0) == 7000.0
    assert meter.update(1, 1000.0) == 5000.0
    assert meter.update(0, 6000.0) == 6000.0  # connector/EVSE 0 is the station's own meter
    assert meter.update(2, 0.0) == 6000.0


@pytest.mark.parametrize(
    "sampled",
    [
        # 2.0.1: a multiplier whose power of ten overflows a float (OverflowError before).
        [{"value": 5, "measurand": P, "unitOfMeasure": {"unit": "W", "multiplier": 400}}],
        [{"value": 0, "measurand": P, "unitOfMeasure": {"unit": "kW", "multiplier": 10**20}}],
        [{"value": 5, "measurand": P, "unitOfMeasure": {"unit": "W", "multiplier": 1e300}}],
        # 1.6: numbers that are not finite, or not once scaled.
        [{"value": "1e39", "measurand": P, "unit": "kW"}],
        [{"value": "1e308", "measurand": P, "unit": "kW"}],
        [{"value": "nan", "measurand": P, "unit": "W"}],
        [{"value": "inf", "measurand": P}],
        [{"value": "-inf", "measurand": P}],
        [{"value": "1e400", "measurand": P}],
        [{"value": "inf", "measurand": P, "phase": "L1"}, {"value": "-inf", "measurand": P, "phase": "L2"}],
        [
            {"value": "1e200", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
            {"value": "1e200", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
        ],
    ],
)
def test_numeric_trouble_reaches_the_core_to_be_refused(sampled: list[dict]) -> None:  # type: ignore[type-arg]
    """Never an exception, never a silent 0 W or "no reading": a value the core refuses."""
    watts = power_w(_mv(*sampled))
    assert watts is not None
    assert not math.isfinite(watts) or abs(watts) > 1e30


def test_a_tiny_multiplier_is_just_small() -> None:
    sampled = {"value": 5, "measurand": P, "unitOfMeasure": {"unit": "W", "multiplier": -400}}
    assert power_w(_mv(sampled)) == 0.0


def test_station_meter_carries_a_non_finite_outlet() -> None:
    meter = StationMeter()
    meter.update(1, 3000.0)
    assert math.isnan(meter.update(2, math.nan))  # refused by the core until outlet 2 reads again
    assert meter.update(2, 1000.0) == 4000.0
