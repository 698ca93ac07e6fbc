"""What the gateway sets up on a station, in version-neutral terms (pure).

Discovery: what rate unit and how many stack levels the station's smart charging takes.
Metering: MID-style sampling, periodic during transactions and clock-aligned for idle
periods. The requests and their answers are spelt by each version module
(``v16.discovery_request``, ``v201.setting_requests`` ...); the types they share live here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocpp_side.profiles import RateUnit


@dataclass(frozen=True, slots=True)
class Discovered:
    """What discovery learnt; None where the station did not say."""

    rate_units: frozenset[RateUnit] | None = None
    max_stack_level: int | None = None

    def preferred_unit(self) -> RateUnit | None:
        if self.rate_units is None:
            return None
        if RateUnit.W in self.rate_units:
            return RateUnit.W  # exact: no assumption about phases or voltage
        if RateUnit.A in self.rate_units:
            return RateUnit.A
        return None


def _units(csv: str) -> frozenset[RateUnit]:
    words = {w.strip() for w in csv.split(",")}
    units = set()
    if words & {"Power", "W"}:
        units.add(RateUnit.W)
    if words & {"Current", "A"}:
        units.add(RateUnit.A)
    return frozenset(units)


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def discovered(rate_units: str | None, max_stack_level: str | None) -> Discovered:
    """``Discovered`` from the two values a station reported (either may be missing):
    a comma-separated list of units (``Current, Power`` or ``A,W``) and an integer."""
    units = None if rate_units is None else _units(rate_units) or None
    return Discovered(units, _int(max_stack_level))


@dataclass(frozen=True, slots=True)
class MeteringPlan:
    sample_interval_s: int
    aligned_interval_s: int
    measurands: tuple[str, ...]


# One setting the gateway wants on the station: (component, variable) in 2.0.1,
# (None, key) in 1.6; ``measurands`` marks the list-valued settings a station may trim.
@dataclass(frozen=True, slots=True)
class Setting:
    component: str | None
    name: str
    value: str
    measurands: bool = False


# A setting counts as taken when the station stored it, even if it takes effect only
# after its next reboot.
TAKEN = frozenset({"Accepted", "RebootRequired"})
