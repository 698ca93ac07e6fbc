"""Decisions: commands the arbiter hands back to the shell and the adapters."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.model import LimitSource, Mode, Quality, RejectReason


@dataclass(frozen=True, slots=True)
class ConfirmSetpoint:
    """Positive activation confirmation: the setpoint is the limit in force."""

    value_w: float


@dataclass(frozen=True, slots=True)
class RejectSetpoint:
    """Negative activation confirmation; nothing changed."""

    value_w: float
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """The site limit in force, its source and why (also drives fallback telemetry)."""

    limit_w: float
    source: LimitSource
    mode: Mode
    reason: str


@dataclass(frozen=True, slots=True)
class ApplyStationLimit:
    """Install this station's share: ``limit_w`` live until ``valid_until_s`` (the live
    profile's validTo, epoch seconds), ``fallback_w`` when the gateway is gone."""

    station_id: str
    limit_w: float
    fallback_w: float
    seq: int
    source: LimitSource
    valid_until_s: float = float("inf")


@dataclass(frozen=True, slots=True)
class TimeToComply:
    """A DSO command's compliance record closed (told by the shell's proof recorder,
    ``gateway/proof.py``, not by the core): how long the measured site total took to stay
    at or below the command's limit, or None if it never did."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class PublishTotalPower:
    """Sum of the connected stations' measured active power, with its quality."""

    power_w: float
    quality: Quality


@dataclass(frozen=True, slots=True)
class EnforcementChanged:
    """Whether the stations' commitments fit the limit in force, every connected station
    being bound by a profile it accepted (IOA 301)."""

    enforced: bool


@dataclass(frozen=True, slots=True)
class AllStationsEnforced:
    """Every station accepted the allocation that followed a limit change ``elapsed_s`` ago."""

    elapsed_s: float


@dataclass(frozen=True, slots=True)
class MeterRefused:
    """A station's reading was not finite or not plausible: it does not count, its quality is invalid."""

    station_id: str
    power_w: float
    detail: str


@dataclass(frozen=True, slots=True)
class StationReleaseRefused:
    """An operator's release was not applied (the station is online, or unknown)."""

    station_id: str
    detail: str


Decision = (
    ConfirmSetpoint
    | RejectSetpoint
    | LimitChanged
    | ApplyStationLimit
    | PublishTotalPower
    | EnforcementChanged
    | AllStationsEnforced
    | StationReleaseRefused
    | MeterRefused
    | TimeToComply
)
