"""What a simulated charger does with its charging profiles and its EV (pure: time is passed in).

A real charger obeys the *composite* of the profiles installed on it: for every
purpose the active profile with the highest ``stackLevel`` wins, and the station
draws no more than the smallest of the purposes' limits (max profile, external
constraints, and the transaction profile or else the TxDefault). A profile is
active from ``validFrom`` (or its installation) until ``validTo``; within it the
schedule period in effect gives the limit, in W or in A (A × numberPhases × 230 V).

The EV draws ``min(demand, limit, station max)``, reached along a linear ramp of
``ramp_w_per_s`` (real EVs need seconds, not milliseconds, to follow a new limit).
Energy is the exact integral of that piecewise-linear power.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

NOMINAL_VOLTAGE_V = 230.0


class Purpose(StrEnum):
    """Profile purposes of both versions, folded onto the roles they play in the composite."""

    STATION_MAX = "station_max"  # 1.6 ChargePointMaxProfile, 2.0.1 ChargingStationMaxProfile
    EXTERNAL = "external"  # 2.0.1 ChargingStationExternalConstraints
    TX_DEFAULT = "tx_default"
    TX = "tx"


_PURPOSES: Mapping[str, Purpose] = {
    "ChargePointMaxProfile": Purpose.STATION_MAX,
    "ChargingStationMaxProfile": Purpose.STATION_MAX,
    "ChargingStationExternalConstraints": Purpose.EXTERNAL,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}


class RateUnit(StrEnum):
    W = "W"
    A = "A"


class ProfileError(ValueError):
    """A profile the station cannot use (answered Rejected, never a crash)."""


@dataclass(frozen=True, slots=True)
class Period:
    start_s: float  # offset from the schedule's start
    limit: float  # in the schedule's unit
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    profile_id: int
    stack_level: int
    purpose: Purpose
    unit: RateUnit
    periods: tuple[Period, ...]
    start_s: float  # absolute start of the schedule (startSchedule, else installation time)
    kind: str = "Absolute"  # Absolute | Relative | Recurring
    recurrency_s: float | None = None  # 86400 (Daily) or 604800 (Weekly) when Recurring
    duration_s: float | None = None
    valid_from_s: float | None = None
    valid_to_s: float | None = None
    evse_id: int = 0  # 1.6 connectorId / 2.0.1 evseId the profile was installed on
    transaction_id: str | None = None

    def is_valid_at(self, now_s: float) -> bool:
        if self.valid_from_s is not None and now_s < self.valid_from_s:
            return False
        return self.valid_to_s is None or now_s < self.valid_to_s

    def limit_w_at(
        self, now_s: float, default_phases: int, voltage_v: float = NOMINAL_VOLTAGE_V
    ) -> float | None:
        """This profile's limit in watts at ``now_s``, or None when it sets none then."""
        if not self.is_valid_at(now_s):
            return None
        offset = self._offset(now_s)
        if offset is None:
            return None
        current: Period | None = None
        for period in self.periods:  # sorted by start_s when built
            if period.start_s <= offset:
                current = period
            else:
                break
        if current is None:
            return None
        if self.unit is RateUnit.W:
            return current.limit
        # A current limit is per phase: a station cannot draw on more phases than it has.
        phases = min(current.number_phases or default_phases, default_phases)
        return current.limit * phases * voltage_v

    def changes_after(self, now_s: float) -> float | None:
        """The first instant after ``now_s`` at which this profile's limit may change."""
        candidates: list[float] = []
        for edge in (self.valid_from_s, self.valid_to_s):
            if edge is not None and edge > now_s:
                candidates.append(edge)
        offset = self._offset(now_s)
        base = now_s - offset if offset is not None else self.start_s
        if offset is None and self.start_s > now_s:
            candidates.append(self.start_s)
        if offset is not None:
            for period in self.periods:
                if period.start_s > offset:
                    candidates.append(base + period.start_s)
                    break
            if self.duration_s is not None and offset < self.duration_s:
                candidates.append(base + self.duration_s)
            if self.recurrency_s is not None:
                candidates.append(base + self.recurrency_s)
        return min(candidates) if candidates else None

    def _offset(self, now_s: float) -> float | None:
        """Seconds into the schedule at ``now_s``; None before it starts or after its duration."""
        offset = now_s - self.start_s
        if offset < 0:
            return None
        if self.recurrency_s is not None:
            offset = math.fmod(offset, self.recurrency_s)
        if self.duration_s is not None and offset >= self.duration_s:
            return None
        return offset


def composite_limit_w(
    profiles: Iterable[Profile], now_s: float, default_phases: int, voltage_v: float = NOMINAL_VOLTAGE_V
) -> float | None:
    """The station-wide limit in watts at ``now_s``; None when no profile limits it."""
    best: dict[Purpose, tuple[int, float]] = {}
    for profile in profiles:
        limit = profile.limit_w_at(now_s, default_phases, voltage_v)
        if limit is None:
            continue
        held = best.get(profile.purpose)
        if held is None or profile.stack_level > held[0]:
            best[profile.purpose] = (profile.stack_level, limit)
    limits = [best[p][1] for p in (Purpose.STATION_MAX, Purpose.EXTERNAL) if p in best]
    tx = best.get(Purpose.TX) or best.get(Purpose.TX_DEFAULT)  # a TxProfile overrides the default
    if tx is not None:
        limits.append(tx[1])
    return min(limits) if limits else None


def station_max_limit_w(
    profiles: Iterable[Profile], now_s: float, default_phases: int, voltage_v: float = NOMINAL_VOLTAGE_V
) -> float | None:
    """What the station-wide maximum profiles alone bind the station to at ``now_s``.

    The valid one with the highest stack level wins (the gateway's live profile while it
    is valid, else its fallback one); None when the station holds none in force.
    """
    maxima = (p for p in profiles if p.purpose is Purpose.STATION_MAX)
    return composite_limit_w(maxima, now_s, default_phases, voltage_v)


def next_profile_change_s(profiles: Iterable[Profile], now_s: float) -> float | None:
    changes = [c for c in (p.changes_after(now_s) for p in profiles) if c is not None]
    return min(changes) if changes else None


# -- reading OCPP payloads (snake_case, as the ocpp library hands them to handlers) --------

_RECURRENCY_S = {"Daily": 86400.0, "Weekly": 604800.0}


def parse_timestamp(text: str) -> float:
    """ISO 8601 with a timezone to epoch seconds (a naive timestamp is refused, as OCPP requires)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ProfileError(f"bad timestamp {text!r}") from exc
    if moment.tzinfo is None:
        raise ProfileError(f"timestamp {text!r} has no timezone")
    return moment.timestamp()


def profile_from_ocpp(
    profile: Mapping[str, Any], evse_id: int, now_s: float, allowed_units: Iterable[RateUnit]
) -> Profile:
    """A 1.6 ``csChargingProfiles`` or 2.0.1 ``chargingProfile`` (snake_case keys) as a Profile."""
    try:
        purpose = _PURPOSES[profile["charging_profile_purpose"]]
        schedule = profile["charging_schedule"]
        if isinstance(schedule, list):  # 2.0.1 carries 1..3 schedules; a station uses the first
            schedule = schedule[0]
        unit = RateUnit(schedule["charging_rate_unit"])
        raw_periods = schedule["charging_schedule_period"]
        profile_id = int(profile.get("charging_profile_id", profile.get("id", 0)))
        stack_level = int(profile["stack_level"])
        kind = str(profile["charging_profile_kind"])
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ProfileError(f"incomplete profile: {exc}") from exc
    if unit not in set(allowed_units):
        raise ProfileError(f"charging rate unit {unit} not supported")
    periods = tuple(
        sorted(
            (
                Period(float(p["start_period"]), float(p["limit"]), p.get("number_phases"))
                for p in raw_periods
            ),
            key=lambda p: p.start_s,
        )
    )
    if not periods or periods[0].start_s != 0:
        raise ProfileError("the first schedule period must start at 0")
    if any(p.limit < 0 or not math.isfinite(p.limit) for p in periods):
        raise ProfileError("a period limit is negative or not finite")
    start_text = schedule.get("start_schedule")
    start_s = parse_timestamp(start_text) if start_text else now_s
    if kind == "Relative":
        start_s = now_s  # a max profile has no transaction to be relative to: it starts now
    recurrency = _RECURRENCY_S.get(profile.get("recurrency_kind") or "") if kind == "Recurring" else None
    if kind == "Recurring" and recurrency is None:
        raise ProfileError("a Recurring profile needs recurrencyKind Daily or Weekly")
    valid_from = profile.get("valid_from")
    valid_to = profile.get("valid_to")
    duration = schedule.get("duration")
    tx = profile.get("transaction_id")
    return Profile(
        profile_id=profile_id,
        stack_level=stack_level,
        purpose=purpose,
        unit=unit,
        periods=periods,
        start_s=start_s,
        kind=kind,
        recurrency_s=recurrency,
        duration_s=float(duration) if duration is not None else None,
        valid_from_s=parse_timestamp(valid_from) if valid_from else None,
        valid_to_s=parse_timestamp(valid_to) if valid_to else None,
        evse_id=evse_id,
        transaction_id=None if tx is None else str(tx),
    )


# -- the EV's ramp ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ramp:
    """Power moving linearly from ``from_w`` at ``start_s`` toward ``target_w``."""

    from_w: float
    target_w: float
    start_s: float
    rate_w_per_s: float

    def power_at(self, now_s: float) -> float:
        elapsed = max(0.0, now_s - self.start_s)
        if self.rate_w_per_s <= 0 or math.isinf(self.rate_w_per_s):
            return self.target_w
        step = self.rate_w_per_s * elapsed
        if self.target_w >= self.from_w:
            return min(self.target_w, self.from_w + step)
        return max(self.target_w, self.from_w - step)

    def settles_at(self) -> float:
        if self.rate_w_per_s <= 0 or math.isinf(self.rate_w_per_s):
            return self.start_s
        return self.start_s + abs(self.target_w - self.from_w) / self.rate_w_per_s

    def energy_wh(self, t0_s: float, t1_s: float) -> float:
        """Energy drawn between ``t0_s`` and ``t1_s`` (both at or after ``start_s``)."""
        if t1_s <= t0_s:
            return 0.0
        settle = self.settles_at()
        joules = 0.0
        ramp_end = min(t1_s, settle)
        if ramp_end > t0_s:  # trapezoid over the part still ramping
            joules += (self.power_at(t0_s) + self.power_at(ramp_end)) / 2 * (ramp_end - t0_s)
        flat_start = max(t0_s, settle)
        if t1_s > flat_start:
            joules += self.target_w * (t1_s - flat_start)
        return joules / 3600.0


# -- the whole charger --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One meter reading, the way a station reports it."""

    timestamp_s: float
    power_w: float
    energy_wh: float
    current_a: tuple[float, ...]  # per phase in use
    voltage_v: tuple[float, ...]
    offered_w: float  # the limit the EV is allowed (Power.Offered)


@dataclass(slots=True)
class ChargerModel:
    """A charger with one EV: profiles in, power out. Every method takes the time."""

    max_power_w: float
    phases: int
    ramp_w_per_s: float
    demand_w: float = 0.0
    voltage_v: float = NOMINAL_VOLTAGE_V
    now_s: float = 0.0
    profiles: dict[tuple[int, int], Profile] = field(default_factory=dict)  # (evse, id) -> profile
    ramp: Ramp = field(init=False)
    energy_wh_at_ramp_start: float = 0.0
    charging: bool = True  # a transaction is running (the EV is plugged in and authorised)

    def __post_init__(self) -> None:
        if self.phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, got {self.phases}")
        self.ramp = Ramp(0.0, 0.0, self.now_s, self.ramp_w_per_s)
        self.update(self.now_s)

    # -- reading --
    def limit_w(self, now_s: float) -> float | None:
        return composite_limit_w(self.profiles.values(), now_s, self.phases, self.voltage_v)

    def max_profile_limit_w(self, now_s: float) -> float | None:
        """The station-side cap: its station-wide maximum profiles only (see station_max_limit_w)."""
        return station_max_limit_w(self.profiles.values(), now_s, self.phases, self.voltage_v)

    def target_w(self, now_s: float) -> float:
        if not self.charging:
            return 0.0
        limit = self.limit_w(now_s)
        target = min(self.demand_w, self.max_power_w)
        return target if limit is None else max(0.0, min(target, limit))

    def power_w(self, now_s: float) -> float:
        return self.ramp.power_at(now_s)

    def energy_wh(self, now_s: float) -> float:
        return self.energy_wh_at_ramp_start + self.ramp.energy_wh(self.ramp.start_s, now_s)

    def sample(self, now_s: float) -> Sample:
        power = self.power_w(now_s)
        per_phase = power / (self.phases * self.voltage_v)
        limit = self.limit_w(now_s)
        return Sample(
            timestamp_s=now_s,
            power_w=power,
            energy_wh=self.energy_wh(now_s),
            current_a=(per_phase,) * self.phases,
            voltage_v=(self.voltage_v,) * self.phases,
            offered_w=self.max_power_w if limit is None else min(limit, self.max_power_w),
        )

    def next_event_s(self, now_s: float) -> float | None:
        """When to come back: the ramp settles or a profile's limit changes."""
        settle = self.ramp.settles_at()
        candidates = [settle] if settle > now_s else []
        change = next_profile_change_s(self.profiles.values(), now_s)
        if change is not None:
            candidates.append(change)
        return min(candidates) if candidates else None

    # -- changing --
    def update(self, now_s: float) -> bool:
        """Follow the composite at ``now_s``; True when the target power moved."""
        target = self.target_w(now_s)
        if target == self.ramp.target_w:
            return False
        self.energy_wh_at_ramp_start = self.energy_wh(now_s)
        self.ramp = Ramp(self.ramp.power_at(now_s), target, now_s, self.ramp_w_per_s)
        return True

    def install(self, profile: Profile, now_s: float) -> bool:
        """Install a profile; it replaces one with the same id, or the same purpose and stack level."""
        for key, held in list(self.profiles.items()):
            same_slot = held.purpose is profile.purpose and held.stack_level == profile.stack_level
            if held.profile_id == profile.profile_id or (same_slot and held.evse_id == profile.evse_id):
                del self.profiles[key]
        self.profiles[(profile.evse_id, profile.profile_id)] = profile
        return self.update(now_s)

    def clear(
        self,
        now_s: float,
        profile_id: int | None = None,
        evse_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> int:
        """Remove matching profiles (every criterion given must match); return how many."""
        doomed = [
            key
            for key, p in self.profiles.items()
            if (profile_id is None or p.profile_id == profile_id)
            and (evse_id is None or p.evse_id == evse_id)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]
        for key in doomed:
            del self.profiles[key]
        if doomed:
            self.update(now_s)
        return len(doomed)

    def set_demand(self, demand_w: float, now_s: float) -> bool:
        self.demand_w = max(0.0, demand_w)
        return self.update(now_s)

    def set_charging(self, charging: bool, now_s: float) -> bool:
        self.charging = charging
        return self.update(now_s)

    def drop_expired(self, now_s: float) -> None:
        """Forget profiles whose validTo has passed (a station deletes them)."""
        for key, p in list(self.profiles.items()):
            if p.valid_to_s is not None and p.valid_to_s <= now_s:
                del self.profiles[key]


def purpose_from_ocpp(name: str) -> Purpose:
    try:
        return _PURPOSES[name]
    except KeyError:
        raise ProfileError(f"unknown charging profile purpose {name!r}") from None
