"""What one simulated charger is (its rating, its EV, how it talks): the spec both the
station simulator (``sim_station``) and its protocol clients (``station_ocpp``) read."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.model import OcppVersion
from scenarios.charging import RateUnit


@dataclass(frozen=True, slots=True)
class StationSpec:
    """One simulated charger and its EV."""

    station_id: str
    version: OcppVersion = OcppVersion.V16
    demand_w: float = 11000.0  # what the EV would draw without a limit (0: no EV plugged in)
    phases: int = 3
    max_power_w: float = 22000.0  # the charger's own rating
    ramp_w_per_s: float = 3000.0
    meter_interval_s: float = 60.0  # until the central system configures another one
    measurands: tuple[str, ...] = ("Energy.Active.Import.Register", "Power.Active.Import")
    rate_units: tuple[RateUnit, ...] = (RateUnit.A, RateUnit.W)
    max_stack_level: int = 8
    max_profiles: int = 8
    password: str = ""
    id_tag: str = "SIMTAG01"
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    heartbeat_s: float = 300.0  # until BootNotification says otherwise
    legacy: bool = False  # a Series 4 unit: the hello (serial = station_id), then 1.6 loosely
    timezone: str = "UTC"  # a Series 4 unit's clock: its timestamps carry no zone

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", OcppVersion.V16 if self.legacy else OcppVersion(self.version))
        object.__setattr__(self, "rate_units", tuple(RateUnit(u) for u in self.rate_units))
