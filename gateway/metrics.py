"""Prometheus metrics of the core shell; adapters register theirs on the same registry.

Every labelled series whose labels are known in advance exists from the start, at 0:
a dashboard or an alert sees "nothing happened yet" instead of "no data". The HTTP
listener that serves them is ``gateway.status_page``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from gateway import __version__
from gateway.core.decisions import (
    AllStationsEnforced,
    Decision,
    EnforcementChanged,
    LimitChanged,
    MeterRefused,
    PublishTotalPower,
)
from gateway.core.model import LimitSource, Mode, OcppVersion, ProfileOutcome, RejectReason

# No "<counter>_created" gauge beside every counter and histogram: they would double the
# series, no dashboard or alert of ours reads them, and the README lists what is exported.
# (prometheus_client's switch is process-wide; the gateway has one registry.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


class CoreMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.limit_w = Gauge("ocpp809_limit_w", "Site limit in force (W)", registry=r)
        self.limit_source = Gauge(
            "ocpp809_limit_source", "1 for the source of the limit in force", ["source"], registry=r
        )
        self.mode = Gauge("ocpp809_mode", "1 for the current arbitration mode", ["mode"], registry=r)
        self.dso_link_up = Gauge("ocpp809_dso_link_up", "1 while a DSO master is connected", registry=r)
        self.setpoints = Counter(
            "ocpp809_setpoints", "DSO setpoints by result and reason", ["result", "reason"], registry=r
        )
        self.stations_connected = Gauge(
            "ocpp809_stations_connected", "Connected stations by OCPP version", ["version"], registry=r
        )
        self.profile_results = Counter(
            "ocpp809_profile_results", "SetChargingProfile results by outcome", ["outcome"], registry=r
        )
        self.total_power_w = Gauge("ocpp809_total_power_w", "Measured site active power (W)", registry=r)
        self.enforced = Gauge(
            "ocpp809_limit_enforced",
            "1 when the stations' commitments fit the limit and every connected station is bound",
            registry=r,
        )
        self.enforce_seconds = Histogram(
            "ocpp809_setpoint_to_enforced_seconds",
            "Time from a limit change to every station Accepted",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.store_errors = Counter("ocpp809_store_errors", "Failed writes to the durable store", registry=r)
        self.committed_w = Gauge(
            "ocpp809_committed_w",
            "The most the stations may draw under the profiles they hold or may hold (W)",
            registry=r,
        )
        self.fallback_committed_w = Gauge(
            "ocpp809_fallback_committed_w", "Sum of the stations' fallback caps (W)", registry=r
        )
        self.offline_reserved = Gauge(
            "ocpp809_stations_offline_reserved",
            "Offline stations whose caps still count against the limit",
            registry=r,
        )
        self.offline_reserved_w = Gauge(
            "ocpp809_offline_reserved_w", "Power reserved for offline stations (W)", registry=r
        )
        self.raises_waiting = Gauge(
            "ocpp809_raises_waiting", "Stations whose raise waits for cuts to be Accepted", registry=r
        )
        self.releases = Counter(
            "ocpp809_station_releases",
            "Operator releases of offline stations by result",
            ["result"],
            registry=r,
        )
        self.meter_refused = Counter(
            "ocpp809_meter_readings_refused",
            "Station readings refused as not finite or implausible (first of each streak)",
            registry=r,
        )
        self.build_info = Gauge(
            "ocpp809_build_info", "1, labelled with the running ocpp809 version", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Create every series whose labels are known, so each reads 0 until its first event."""
        # An accepted setpoint always has reason "ok"; a refused one one of RejectReason.
        self.setpoints.labels("accepted", "ok")
        for reason in RejectReason:
            self.setpoints.labels("rejected", reason.value)
        for outcome in ProfileOutcome:
            self.profile_results.labels(outcome.value)
        for version in OcppVersion:
            self.stations_connected.labels(version.value)
        for result in ("released", "refused"):
            self.releases.labels(result)

    def observe(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            match decision:
                case LimitChanged():
                    self.limit_w.set(decision.limit_w)
                    for source in LimitSource:
                        self.limit_source.labels(source.value).set(int(source is decision.source))
                    for mode in Mode:
                        self.mode.labels(mode.value).set(int(mode is decision.mode))
                case PublishTotalPower():
                    self.total_power_w.set(decision.power_w)
                case EnforcementChanged():
                    self.enforced.set(int(decision.enforced))
                case AllStationsEnforced():
                    self.enforce_seconds.observe(decision.elapsed_s)
                case MeterRefused():
                    self.meter_refused.inc()
                case _:
                    pass
