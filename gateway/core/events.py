"""Events: past-tense facts the shell feeds into the arbiter, each with its time passed separately."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.model import OcppVersion, ProfileOutcome, SetpointKind


@dataclass(frozen=True, slots=True)
class SetpointReceived:
    """The DSO asked for a site limit. ``time_tag_s`` is the C_SE_TC_1 tag (epoch seconds)."""

    value_w: float
    kind: SetpointKind = SetpointKind.PLAIN
    time_tag_s: float | None = None
    peer: str = ""


@dataclass(frozen=True, slots=True)
class DsoLinkUp:
    """At least one master has started data transfer (STARTDT)."""


@dataclass(frozen=True, slots=True)
class DsoLinkLost:
    """No master has an active connection any more."""


@dataclass(frozen=True, slots=True)
class Tick:
    """The shell came back at (or after) ``next_deadline()``."""


@dataclass(frozen=True, slots=True)
class StationConnected:
    """A station connected (or reconnected); its power range bounds its allocation.

    ``priority`` decides who is paused last when minimums do not fit (higher: later);
    ``weight`` scales its share against the others'.
    """

    station_id: str
    version: OcppVersion
    max_power_w: float
    min_power_w: float
    priority: int = 0
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class StationDisconnected:
    station_id: str


@dataclass(frozen=True, slots=True)
class StationActivity:
    """Whether an EV is charging at the station (a transaction runs, or a connector is in use)."""

    station_id: str
    charging: bool


@dataclass(frozen=True, slots=True)
class StationReleased:
    """An operator declared an offline station gone: its commitment no longer counts."""

    station_id: str
    reason: str
    by: str = "operator"


@dataclass(frozen=True, slots=True)
class MeterSampled:
    """A station reported the active power it draws now, in watts."""

    station_id: str
    power_w: float


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """What the station answered to the allocation numbered ``seq``."""

    station_id: str
    seq: int
    outcome: ProfileOutcome


Event = (
    SetpointReceived
    | DsoLinkUp
    | DsoLinkLost
    | Tick
    | StationConnected
    | StationDisconnected
    | StationActivity
    | StationReleased
    | MeterSampled
    | ProfileResult
)
