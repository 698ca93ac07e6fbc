"""Meter readings → watts (pure): MeterValues (1.6, 2.0.1) and TransactionEvent sampled values.

Rules, per meterValue entry:
1. Only ``Power.Active.Import`` counts as power. 1.6 defaults: measurand
   ``Energy.Active.Import.Register`` and unit ``Wh`` when absent, so a bare value is
   an energy reading, never power; values are strings in 1.6, numbers in 2.0.1.
2. Units: ``W`` (the default for a power measurand without a unit) or ``kW``;
   2.0.1 adds ``unitOfMeasure.multiplier`` (a power of ten).
3. A value without a phase is the total. Only when there is none are per-phase values
   (L1, L2, L3, or L1-N ...) summed; L1-L2 style line-to-line readings are never
   summed with them.
4. When no power is reported at all but per-phase current and voltage are, the power
   is estimated as sum(I x V) (an upper bound: cos phi <= 1).
5. The last meterValue entry that yields a power wins (stations list them in time
   order); readings from the EV side (location ``EV``) are ignored.
6. Total: numeric trouble never raises. A value that is not a number is no reading
   (as if absent); a number that is not finite (``"nan"``, ``"inf"``, ``"1e400"``) or
   that overflows once scaled (``"1e39"`` kW, a multiplier of 400) comes out
   non-finite or huge, and the core refuses it as implausible (``gateway/core/arbiter.py``)
   instead of silently keeping the previous reading. Finite negative draws read 0 W.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

POWER = "Power.Active.Import"
CURRENT = "Current.Import"
VOLTAGE = "Voltage"
ENERGY = "Energy.Active.Import.Register"

_PHASES = {"L1": "L1", "L2": "L2", "L3": "L3", "L1-N": "L1", "L2-N": "L2", "L3-N": "L3"}
_POWER_SCALE = {"W": 1.0, "kW": 1000.0}


def _number(value: Any) -> float | None:
    """The sampled value as a float (possibly not finite), None when it is not a number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
    except OverflowError:  # an integer beyond the float range
        return math.inf if value > 0 else -math.inf


def _power_of_ten(exponent: Any) -> float | None:
    if isinstance(exponent, float) and exponent.is_integer():
        exponent = int(exponent)  # JSON Schema's integer takes 2.0
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        return None  # the schema says integer: anything else is an unknown unit
    try:
        return float(10.0**exponent)
    except OverflowError:
        return math.inf  # times any reading: inf (or NaN for 0), which the core refuses


def _scale(sample: Mapping[str, Any], default_unit: str) -> float | None:
    """Multiplier to watts/amps/volts for one sampled value, None for an unknown unit."""
    unit_of_measure = sample.get("unitOfMeasure")
    if isinstance(unit_of_measure, Mapping):  # 2.0.1
        unit = unit_of_measure.get("unit", default_unit)
        multiplier = _power_of_ten(unit_of_measure.get("multiplier", 0))
        if multiplier is None:
            return None
    else:
        unit = sample.get("unit", default_unit)
        multiplier = 1.0
    if default_unit == "W":
        base = _POWER_SCALE.get(unit)
        return None if base is None else base * multiplier
    return multiplier if unit == default_unit else None


def _entry_power_w(sampled: Iterable[Mapping[str, Any]]) -> float | None:
    total: float | None = None
    per_phase: dict[str, float] = {}
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for sample in sampled:
        if sample.get("location") == "EV":
            continue
        measurand = sample.get("measurand", ENERGY)
        if measurand == POWER:
            scale, target = _scale(sample, "W"), None
        elif measurand == CURRENT:
            scale, target = _scale(sample, "A"), amps
        elif measurand == VOLTAGE:
            scale, target = _scale(sample, "V"), volts
        else:
            continue
        value = _number(sample.get("value"))
        if value is None or scale is None:
            continue
        phase = sample.get("phase")
        if measurand == POWER:
            if phase is None:
                total = value * scale
            elif phase in _PHASES:
                per_phase[_PHASES[phase]] = value * scale
        elif target is not None and phase in _PHASES:
            target[_PHASES[phase]] = value * scale
    if total is not None:
        return total
    if per_phase:
        return sum(per_phase.values())
    if amps and volts and all(p in volts for p in amps):
        return sum(amps[p] * volts[p] for p in amps)
    return None


def power_w(meter_values: Iterable[Mapping[str, Any]]) -> float | None:
    """The active power drawn, in watts, from a ``meterValue`` list; None if it holds none."""
    latest: float | None = None
    for entry in meter_values:
        watts = _entry_power_w(entry.get("sampledValue", ()))
        if watts is not None:
            latest = watts
    if latest is None or not math.isfinite(latest):
        return latest  # max() would turn NaN into 0 W: let the core see it and refuse it
    return max(0.0, latest)


class StationMeter:
    """The latest power per connector/EVSE of one station, summed into the station's draw.

    Connector/EVSE 0 is the station's main meter: when it reports, it is the total.
    """

    __slots__ = ("_by_outlet",)

    def __init__(self) -> None:
        self._by_outlet: dict[int | str, float] = {}

    def update(self, outlet: int | str, watts: float) -> float:
        self._by_outlet[outlet] = watts
        return self.total_w()

    def total_w(self) -> float:
        main = self._by_outlet.get(0)
        if main is not None:
            return main
        return sum(self._by_outlet.values())
