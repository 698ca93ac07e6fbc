"""OCPP fan-out benchmark: ``python -m bench.fanout`` prints one report per mode.

Modes (``--modes``): ``fanout`` (below), ``actcon`` (ACT_CON from the IEC 104 wire while
fan-outs run, ``bench.actcon``), ``reconnect`` (a gateway restart under N connected
stations, plain and TLS, ``bench.restart``), ``soak`` (``--soak-minutes N``,
``bench.soak``) and ``relay`` (direct relay, translated relay and no relay against stations
talking straight to a CSMS, ``bench.relay``). The fanout mode:

For each number of simulated stations and each central system under test (the
plain ``ocpp``-library baseline and the ocpp809 gateway's station server), in
separate processes on 127.0.0.1:

* connect + boot: from the first connection attempt to the last BootNotification
  Accepted (measured by the station process);
* setpoint -> all stations Accepted, measured in the server process: from the
  setpoint's submission to each station's Accepted reaching the server (baseline:
  its gather; gateway: the ProfileResult into the core, the clock stopped by the
  core's AllStationsEnforced). Per round: p50/p99/max over the stations; the
  table shows the median of each over the rounds;
* MeterValues ingestion: every station sends its share back to back, one CALL
  outstanding per connection; messages answered per second, and server CPU per
  message (from /proc, steadier than wall time on a shared machine);
* server RSS per station: (RSS with every station connected, booted and holding
  its profile - RSS after a warm-up with no station) / N;
* join -> share Accepted (gateway): one more station joins the N connected ones
  (websocket open + BootNotification); the core cuts the others, gives the joiner
  0 W, then its share once the cuts are Accepted. Timed by the joining station, from
  its connection attempt to its Accepted answer to the profile carrying its final
  share; p50/p90 over a bounded number of joins, one at a time.

Every process started here is stopped here; every wait is bounded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from bench.actcon import ActconOptions, ActconResult, render_actcon, run_actcon_case
from bench.harness import BenchError, Child, cpu_s, percentile, rss_kb
from bench.relay import RelayOptions, RelayResult, render_relay, run_relay
from bench.restart import TRANSPORTS, RestartOptions, RestartResult, render_restart, run_restart_case
from bench.server_process import SYSTEMS, run_server
from bench.soak import SoakOptions, SoakResult, render_soak, run_soak
from bench.stations import POWER_W, V16, V201, run_simulator

SHARES_W = (10000.0, 11000.0)  # per-station shares the rounds alternate between
STORM_SHARES_W = (10500.0, 11500.0, 10500.0, 11500.0, 12000.0)  # 5 setpoints ...
STORM_GAP_S = 0.005  # ... 5 ms apart: faster than a fan-out to many stations completes
WARMUP_SHARE_W = 9000.0  # differs from both, so the first round changes every allocation
WARMUP_STATIONS = 5
MIN_METER_PER_STATION = 10
# Between joins: above the core's reallocation_settle_s (0.25 s), so each join is reallocated at once.
JOIN_GAP_S = 0.3

TARGETS = {
    1000: 0.100,  # setpoint -> all 1,000 stations Accepted, seconds
    5000: 0.500,
}
TARGET_METER_RATE = 10000.0  # MeterValues/s
TARGET_RSS_KB = 40.0  # per connected station
RSS_MIN_STATIONS = 1000  # below this, heap freed at start-up and reused makes RSS/station read low


@dataclass
class Options:
    stations: tuple[int, ...] = (100, 1000, 5000)
    systems: tuple[str, ...] = SYSTEMS
    versions: tuple[str, ...] = (V16,)  # the baseline speaks 1.6 only
    rounds: int = 7
    meter_messages: int = 20000
    connect_concurrency: int = 100
    timeout_s: float = 120.0
    reject_profiles: bool = False  # stations answer Rejected: the harness must notice
    profile: bool = False  # cProfile the server during fan-out and ingestion
    gc_freeze: bool = False  # what-if: gc.freeze() in the server once the stations are connected
    joins: int = 20  # stations joining one at a time after the other phases (gateway only)
    modes: tuple[str, ...] = ("fanout",)  # what runs: fanout, actcon, reconnect, soak
    mode_stations: tuple[int, ...] = (1000, 5000)  # station counts of the actcon and reconnect modes
    transports: tuple[str, ...] = TRANSPORTS  # reconnect: ws (plain), wss (TLS, security profile 2)
    actcon: ActconOptions = field(default_factory=ActconOptions)
    restart: RestartOptions = field(default_factory=RestartOptions)
    soak: SoakOptions = field(default_factory=SoakOptions)
    relay: RelayOptions = field(default_factory=RelayOptions)


@dataclass
class CaseResult:
    system: str
    stations: int
    version: str
    connect_boot_s: float | None = None
    fanout_p50_s: float | None = None
    fanout_p99_s: float | None = None
    fanout_max_s: float | None = None
    fanout_cpu_us_per_station: float | None = None  # server CPU per setpoint round / N
    fanout_sim_cpu_us_per_station: float | None = None  # the station process's share of the same
    fanout_gc_s: float | None = None  # server time in the garbage collector per round (median)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    not_accepted: int = 0
    storm_after_last_s: float | None = None  # last of the storm's setpoints -> all Accepted on it
    storm_profiles_per_station: float | None = None  # SetChargingProfile per station during the storm
    meter_rate: float | None = None
    meter_answered: int = 0
    server_cpu_us_per_msg: float | None = None
    meter_gc_s: float | None = None  # server time in the garbage collector during the burst
    sim_cpu_share: float | None = None  # station process CPU / wall time during the burst
    rss_kb_per_station: float | None = None
    join_p50_s: float | None = None  # join (connection attempt) -> final share Accepted, median of the joins
    join_p90_s: float | None = None
    join_boot_p50_s: float | None = None  # ... -> BootNotification Accepted
    join_first_profile_p50_s: float | None = None  # ... -> first SetChargingProfile answered (0 W or final)
    joins: list[dict[str, Any]] = field(default_factory=list)
    load_avg_1m: float | None = None  # the machine's load when the case ended (shared, noisy)
    profiles_held: dict[str, int] = field(default_factory=dict)
    server_calls: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    profile_connect: str = ""
    profile_fanout: str = ""
    profile_meter: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def run_case(system: str, stations: int, opts: Options, version: str = V16) -> CaseResult:
    """Measure one central system with ``stations`` simulated stations; never raises BenchError."""
    result = CaseResult(system, stations, version)
    server = Child(f"server-{system}", run_server, system, stations)
    sim: Child | None = None
    try:
        url = f"ws://127.0.0.1:{server.request('start', 60)['port']}"
        sim = Child("stations", run_simulator)
        case = _Case(opts, result, server, sim, url)
        rss_before = case.warm_up()
        case.connect()
        case.fan_out_rounds()
        held = case.check_held(f"{SHARES_W[(opts.rounds - 1) % 2]:g} W", "after the rounds")
        result.profiles_held = held["top_level_limits"]
        time.sleep(0.3)
        server.request("settle_memory", 30)
        result.rss_kb_per_station = (rss_kb(server.pid) - rss_before) / stations
        case.storm()
        case.meter_burst()
        if system == "gateway" and opts.joins:
            case.joins()
    except BenchError as exc:
        result.errors.append(str(exc))
    finally:
        result.load_avg_1m = os.getloadavg()[0]
        if sim is not None:
            try:
                server.request("quiet", 10)  # stations about to leave: no WARNING per station
            except BenchError:
                pass
            sim.close()
        server.close()
    return result


class _Case:
    """The phases of one case, in the order ``run_case`` calls them."""

    def __init__(self, opts: Options, result: CaseResult, server: Child, sim: Child, url: str) -> None:
        self.opts, self.result, self.server, self.sim, self.url = opts, result, server, sim, url
        self.n = result.stations
        self.t = opts.timeout_s

    def _connect(self, prefix: str, count: int, wait_s: float, **extra: Any) -> dict[str, Any]:
        return dict(
            self.sim.request(
                "connect",
                wait_s,
                url=self.url,
                version=self.result.version,
                prefix=prefix,
                count=count,
                concurrency=self.opts.connect_concurrency,
                **extra,
            )
        )

    def warm_up(self) -> int:
        """Load schemas, code paths and caches with a few stations, then return the idle RSS."""
        server, t = self.server, self.t
        warm = self._connect("W", WARMUP_STATIONS, t, timeout_s=t / 2)
        if warm["failed"]:
            raise BenchError(f"warm-up connections failed: {warm['errors']}")
        if not server.request("wait_ready", t, stations=WARMUP_STATIONS, timeout_s=t / 2)["ok"]:
            raise BenchError("warm-up stations never became ready")
        server.request("fan_out", t, site_limit_w=WARMUP_STATIONS * WARMUP_SHARE_W, timeout_s=t / 2)
        self.sim.request("meter_burst", t, prefix="W", per_station=2, timeout_s=t / 2)
        self.sim.request("close", t, prefix="W")
        deadline = time.monotonic() + 30
        while server.request("connected", 10) != 0:
            if time.monotonic() > deadline:
                raise BenchError("warm-up stations still connected after closing them")
            time.sleep(0.05)
        # The gateway keeps a departed station's commitment (it may charge offline) until an
        # operator releases it: release the warm-up stations, or their 9 kW each stay reserved.
        server.request("release_offline", 30)
        time.sleep(0.3)
        server.request("settle_memory", 30)
        return rss_kb(server.pid)

    def connect(self) -> None:
        """Connect and boot every station (timed), then wait until each holds its allocation."""
        opts, result, server, t = self.opts, self.result, self.server, self.t
        if opts.profile:
            server.request("profile_start", 10)
        boot = self._connect("S", self.n, t * 2, timeout_s=t, reject_profiles=opts.reject_profiles)
        result.connect_boot_s = boot["elapsed_s"]
        if boot["failed"]:
            raise BenchError(f"{boot['failed']} of {self.n} stations did not boot: {boot['errors']}")
        ready = server.request("wait_ready", t, stations=self.n, timeout_s=t / 2)
        if not ready["ok"]:
            if not opts.reject_profiles:
                raise BenchError(
                    f"server not ready with {self.n} stations: {ready}; {server.request('diagnose', 30)}"
                )
            result.notes.append("not ready: stations reject profiles")
        if opts.profile:
            result.profile_connect = server.request("profile_stop", 30)
        time.sleep(0.5)  # let connect-time configuration traffic drain before timing
        if opts.gc_freeze:
            frozen = server.request("gc_freeze", 60)
            result.notes.append(f"what-if run: gc.freeze() after connecting ({frozen:,} objects frozen)")

    def fan_out_rounds(self) -> None:
        opts, result, server, sim, n = self.opts, self.result, self.server, self.sim, self.n
        if opts.profile:
            server.request("profile_start", 10)
        share_before = WARMUP_SHARE_W * WARMUP_STATIONS / n  # the warm-up's limit, split over the N stations
        for index in range(opts.rounds):
            cpu_before, sim_cpu_before = cpu_s(server.pid), cpu_s(sim.pid)
            server.request("gc_time", 10)
            answer = server.request(
                "fan_out", self.t, site_limit_w=n * SHARES_W[index % 2], timeout_s=self.t / 2
            )
            gc_round = server.request("gc_time", 10)
            cpu_round = cpu_s(server.pid) - cpu_before  # clock-tick resolution: meaningful from ~100 stations
            sim_cpu_round = cpu_s(sim.pid) - sim_cpu_before
            times = sorted(answer["accept_times_s"])
            result.not_accepted += answer["not_accepted"]
            share = SHARES_W[index % 2]
            round_stats: dict[str, Any] = {
                "direction": "raise" if share > share_before else "cut",
                "elapsed_s": answer["elapsed_s"],
                "answers": len(times),
                "cpu_us_per_station": cpu_round / n * 1e6,
                "sim_cpu_us_per_station": sim_cpu_round / n * 1e6,
                "gc_s": sum(gc_round["seconds"]),
                "gc_full_runs": gc_round["runs"][2],
            }
            if times:
                round_stats.update(p50_s=percentile(times, 50), p99_s=percentile(times, 99), max_s=times[-1])
            result.rounds.append(round_stats)
            share_before = share
            time.sleep(0.2)
        if opts.profile:
            result.profile_fanout = server.request("profile_stop", 30)
        if result.not_accepted:
            result.errors.append(
                f"{result.not_accepted} station answers over all rounds were not Accepted in time"
            )
        rounds = result.rounds
        result.fanout_max_s = statistics.median(r["elapsed_s"] for r in rounds)
        result.fanout_cpu_us_per_station = statistics.median(r["cpu_us_per_station"] for r in rounds)
        result.fanout_gc_s = statistics.median(r["gc_s"] for r in rounds)
        result.fanout_sim_cpu_us_per_station = statistics.median(r["sim_cpu_us_per_station"] for r in rounds)
        with_answers = [r for r in rounds if "p50_s" in r]
        if with_answers:
            result.fanout_p50_s = statistics.median(r["p50_s"] for r in with_answers)
            result.fanout_p99_s = statistics.median(r["p99_s"] for r in with_answers)
        elif not result.not_accepted:
            result.notes.append("per-station answer times not observable; max only")
        by_direction = {
            direction: [r["elapsed_s"] for r in rounds if r["direction"] == direction]
            for direction in ("cut", "raise")
        }
        if all(by_direction.values()):
            result.notes.append(
                "setpoint → all Accepted, median of the "
                + " and of the ".join(
                    f"{len(times)} {direction} rounds {_ms(statistics.median(times))} ms"
                    for direction, times in by_direction.items()
                )
            )

    def check_held(self, expected: str, when: str) -> dict[str, Any]:
        """Every station must hold ``expected`` at the top of its profile stack."""
        held: dict[str, Any] = self.sim.request("profile_summary", 30, prefix="S")
        if not self.opts.reject_profiles and held["top_level_limits"].get(expected, 0) != self.n:
            self.result.errors.append(
                f"{when}, stations hold {held['top_level_limits']}: expected {self.n} x {expected}"
            )
        return held

    def storm(self) -> None:
        """Setpoints faster than a fan-out: each station should end on the last, not work through a queue."""
        result = self.result
        received_before = self.sim.request("profile_summary", 30, prefix="S")["profiles_received"]
        storm = self.server.request(
            "storm",
            self.t,
            site_limits_w=[self.n * share for share in STORM_SHARES_W],
            gap_s=STORM_GAP_S,
            timeout_s=self.t / 2,
        )
        result.storm_after_last_s = storm["after_last_s"]
        errors_before = len(result.errors)
        held = self.check_held(f"{STORM_SHARES_W[-1]:g} W", "after the storm")
        result.storm_profiles_per_station = (held["profiles_received"] - received_before) / self.n
        result.server_calls = held["server_calls"]  # everything the server asked since connecting
        if len(result.errors) == errors_before and not storm["all_accepted"]:
            result.errors.append("the storm's last setpoint was not Accepted by every station in time")

    def joins(self) -> None:
        """Stations join one at a time; each is timed from its connection attempt to its final share Accepted."""
        opts, result, server, sim, t = self.opts, self.result, self.server, self.sim, self.t
        final_w: float | None = None
        for index in range(opts.joins):
            time.sleep(JOIN_GAP_S)
            station_id = f"J{index:05d}"
            server.request("join_start", 10, station_id=station_id)
            joined = sim.request(
                "join", t, url=self.url, version=result.version, station_id=station_id, timeout_s=t / 2
            )
            settled = server.request("join_wait", t, timeout_s=t / 2)
            if not settled["ok"]:
                result.errors.append(f"join {station_id}: the site did not settle in time ({settled})")
                return
            profiles = sim.request("profile_log", 10, station_id=station_id)
            final_w = settled["limit_w"]
            if not profiles or final_w is None:
                result.errors.append(f"join {station_id}: no profile reached the station ({settled})")
                return
            top = max(level for _t, level, _unit, _limit in profiles)
            live = [(at, unit, limit) for at, level, unit, limit in profiles if level == top]
            # The first answer carrying the final share after the last one carrying anything else.
            final_at = None
            for at, unit, limit in live:
                if unit == "W" and limit is not None and abs(limit - final_w) < 0.05:
                    final_at = at if final_at is None else final_at
                else:
                    final_at = None
            if final_at is None:
                result.errors.append(
                    f"join {station_id}: the core wants {final_w:g} W, the station holds {live[-1:]}"
                )
                return
            result.joins.append(
                {
                    **joined,
                    "first_profile_s": profiles[0][0],
                    "final_s": final_at,
                    "final_w": final_w,
                    "profiles": len(profiles),
                    "allocations": settled["allocations"],
                    "stations_profiled": settled["stations_profiled"],
                    "server_settled_s": settled["server_elapsed_s"],
                }
            )
        finals = sorted(j["final_s"] for j in result.joins)
        result.join_p50_s = statistics.median(finals)
        result.join_p90_s = percentile(finals, 90)
        result.join_boot_p50_s = statistics.median(j["boot_s"] for j in result.joins)
        result.join_first_profile_p50_s = statistics.median(j["first_profile_s"] for j in result.joins)
        # Every station, old and joined, ends on the same share (equal weights, one limit).
        held = sim.request("profile_summary", 30, prefix="")["top_level_limits"]
        expected = {f"{final_w:g} W": self.n + opts.joins}
        if held != expected:
            result.errors.append(f"after the joins, stations hold {held}: expected {expected}")

    def meter_burst(self) -> None:
        opts, result, server, sim, n = self.opts, self.result, self.server, self.sim, self.n
        # At least a few messages each, so the ramp-up and tail of the burst do not set the rate.
        per_station = max(MIN_METER_PER_STATION, math.ceil(opts.meter_messages / n))
        counted_before = server.request("ingestion", 30)["meter_values"]
        if opts.profile:
            server.request("profile_start", 10)
        cpu_before, sim_cpu_before = cpu_s(server.pid), cpu_s(sim.pid)
        server.request("gc_time", 10)
        burst = sim.request("meter_burst", self.t * 2, prefix="S", per_station=per_station, timeout_s=self.t)
        cpu_used = cpu_s(server.pid) - cpu_before
        sim_cpu_used = cpu_s(sim.pid) - sim_cpu_before
        result.meter_gc_s = sum(server.request("gc_time", 10)["seconds"])
        if opts.profile:
            result.profile_meter = server.request("profile_stop", 30)
        result.meter_answered = burst["answered"]
        if burst["failed"]:
            result.errors.append(f"{burst['failed']} MeterValues failed: {burst['errors']}")
        if burst["answered"]:
            result.meter_rate = burst["answered"] / burst["elapsed_s"]
            result.server_cpu_us_per_msg = cpu_used / burst["answered"] * 1e6
            result.sim_cpu_share = sim_cpu_used / burst["elapsed_s"]
            if result.sim_cpu_share > 0.9:
                result.notes.append(
                    f"station process used {result.sim_cpu_share:.0%} of a core during the MeterValues burst:"
                    " the rate may be bounded by the simulator, not the server"
                )
        ingestion = server.request("ingestion", 30)
        counted = ingestion["meter_values"] - counted_before
        if counted < burst["answered"]:
            result.errors.append(f"server counted {counted} MeterValues of {burst['answered']} answered")
        if abs(ingestion["total_power_w"] - n * POWER_W) > 1:
            result.errors.append(f"server total {ingestion['total_power_w']:g} W, expected {n * POWER_W:g} W")


# -- output --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def machine_description() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("ocpp", "websockets", "orjson"))
    return (
        f"{platform.node() or 'host'}: {model}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}; {versions}"
    )


def render_table(results: list[CaseResult]) -> str:
    head = (
        "| stations | system | OCPP | connect+boot (s) | setpoint→Accepted p50 / p99 / max (ms) "
        "| fan-out CPU µs/station | join→share Accepted p50 / p90 (ms) "
        "| MeterValues/s | server CPU µs/msg | RSS KB/station | load | status |"
    )
    lines = [head, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        fan = f"{_ms(r.fanout_p50_s)} / {_ms(r.fanout_p99_s)} / {_ms(r.fanout_max_s)}"
        status = "ok" if r.ok else "FAILED: " + "; ".join(r.errors)[:200]
        join = "—" if r.join_p50_s is None else f"{_ms(r.join_p50_s)} / {_ms(r.join_p90_s)}"
        lines.append(
            f"| {r.stations} | {r.system} | {r.version.removeprefix('ocpp')} | {_num(r.connect_boot_s, '.2f')} | {fan} "
            f"| {_num(r.fanout_cpu_us_per_station, ',.0f')} | {join} "
            f"| {_num(r.meter_rate, ',.0f')} | {_num(r.server_cpu_us_per_msg, ',.0f')} "
            f"| {_num(r.rss_kb_per_station, '.1f')} | {_num(r.load_avg_1m, '.1f')} | {status} |"
        )
    by_key = {(r.stations, r.system): r for r in results if r.version == V16}
    ratio_lines = []
    for n in sorted({r.stations for r in results}):
        g, b = by_key.get((n, "gateway")), by_key.get((n, "baseline"))
        if g is None or b is None:
            continue
        fan = (
            f"{_ratio(g.fanout_p50_s, b.fanout_p50_s)} / {_ratio(g.fanout_p99_s, b.fanout_p99_s)}"
            f" / {_ratio(g.fanout_max_s, b.fanout_max_s)}"
        )
        ratio_lines.append(
            f"| {n} | gateway/baseline | 1.6 | {_ratio(g.connect_boot_s, b.connect_boot_s)} | {fan} "
            f"| {_ratio(g.fanout_cpu_us_per_station, b.fanout_cpu_us_per_station)} | "
            f"| {_ratio(g.meter_rate, b.meter_rate)} | {_ratio(g.server_cpu_us_per_msg, b.server_cpu_us_per_msg)} "
            f"| {_ratio(g.rss_kb_per_station, b.rss_kb_per_station)} | | |"
        )
    return "\n".join(lines + ratio_lines)


def render_storm(results: list[CaseResult]) -> str:
    shares = ", ".join(f"{w / 1000:g}" for w in STORM_SHARES_W)
    head = (
        f"| stations | system | OCPP | storm: {len(STORM_SHARES_W)} setpoints {STORM_GAP_S * 1000:.0f} ms apart "
        f"({shares} kW/station), last setpoint → all Accepted on it (ms) | SetChargingProfile per station |"
    )
    lines = [head, "|---:|---|---|---:|---:|"]
    for r in results:
        if r.storm_profiles_per_station is None:
            continue
        lines.append(
            f"| {r.stations} | {r.system} | {r.version.removeprefix('ocpp')} | {_ms(r.storm_after_last_s)} "
            f"| {r.storm_profiles_per_station:.2f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def render_targets(results: list[CaseResult]) -> str:
    lines = ["| target (gateway, strict validation on) | measured | met |", "|---|---:|---|"]
    for r in results:
        if r.system != "gateway":
            continue
        ocpp = f"OCPP {r.version.removeprefix('ocpp')}"
        if r.stations in TARGETS:
            limit = TARGETS[r.stations]
            met = r.fanout_max_s is not None and r.ok and r.fanout_max_s <= limit
            lines.append(
                f"| setpoint → all {r.stations:,} Accepted ≤ {limit * 1000:.0f} ms ({ocpp}) "
                f"| {_ms(r.fanout_max_s)} ms | {'yes' if met else 'no'} |"
            )
        met = r.meter_rate is not None and r.meter_rate >= TARGET_METER_RATE
        lines.append(
            f"| MeterValues ≥ {TARGET_METER_RATE:,.0f}/s ({r.stations:,} stations, {ocpp}) "
            f"| {_num(r.meter_rate, ',.0f')}/s | {'yes' if met else 'no'} |"
        )
        if r.stations < RSS_MIN_STATIONS:
            continue  # the allocator's start-up slack hides a few hundred stations' memory
        met = r.rss_kb_per_station is not None and r.rss_kb_per_station <= TARGET_RSS_KB
        lines.append(
            f"| RSS ≤ {TARGET_RSS_KB:.0f} KB/station ({r.stations:,} stations, {ocpp}) "
            f"| {_num(r.rss_kb_per_station, '.1f')} KB | {'yes' if met else 'no'} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


# -- command line --------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes",
        default=None,
        help="what to run, comma-separated: fanout, actcon, reconnect, soak, relay (default fanout,actcon,reconnect;"
        " with --soak-minutes alone: soak)",
    )
    parser.add_argument(
        "--stations",
        default=None,
        help="comma-separated station counts (default 100,1000,5000 for fanout, 1000,5000 for actcon and reconnect,"
        " 1000 for relay)",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="baseline,gateway (either or both)")
    parser.add_argument(
        "--versions", default="1.6", help="1.6, 2.0.1 or 1.6,2.0.1 (2.0.1 cases run the gateway only)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="setpoint rounds per case (default 7, quick 3)"
    )
    parser.add_argument(
        "--meter-messages", type=int, default=None, help="MeterValues per case (default 20000)"
    )
    parser.add_argument(
        "--joins",
        type=int,
        default=None,
        help="stations joining one at a time per gateway case (default 20, quick 5)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds, 5,000 MeterValues and 5 joins per case"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the servers (times inflated)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="what-if: gc.freeze() in the server once the stations are connected (not the product as shipped)",
    )
    parser.add_argument(
        "--actcon-setpoints",
        type=int,
        default=None,
        help="actcon: setpoints in the stream, 100-200 ms apart (default 200, quick 60)",
    )
    parser.add_argument(
        "--actcon-pairs",
        type=int,
        default=None,
        help="actcon: a setpoint starting a fan-out + one inside it, settled between pairs (default 40, quick 15)",
    )
    parser.add_argument(
        "--actcon-rest", type=int, default=None, help="actcon: setpoints at rest (default 50, quick 20)"
    )
    parser.add_argument(
        "--transports", default="ws,wss", help="reconnect: ws (plain), wss (TLS, security profile 2), or both"
    )
    parser.add_argument(
        "--reconnect-spread-s",
        type=float,
        default=3.0,
        help="reconnect: a station comes back within this many seconds of losing its connection (default 3)",
    )
    parser.add_argument(
        "--reconnect-timeout-s",
        type=float,
        default=240.0,
        help="reconnect: how long every wait may take, the storm's included (default 240: 5,000 stations over TLS"
        " took 171 s on the 2-core VM)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="soak: run the gateway this long under a steady load, RSS/FDs/tasks per minute (default off)",
    )
    parser.add_argument("--soak-stations", type=int, default=1000, help="soak: stations (default 1000)")
    parser.add_argument(
        "--soak-csms-drop-s",
        type=float,
        default=120.0,
        help="soak: the CSMS drops this often (default 120 s)",
    )
    parser.add_argument(
        "--soak-master-reconnect-s",
        type=float,
        default=90.0,
        help="soak: the IEC 104 master reconnects this often (default 90 s)",
    )
    parser.add_argument(
        "--relay-rate",
        type=float,
        default=200.0,
        help="relay: paced load, calls a second from all stations together (default 200)",
    )
    parser.add_argument(
        "--relay-paced-s",
        type=float,
        default=None,
        help="relay: how long the paced load runs (default 30, quick 10)",
    )
    parser.add_argument(
        "--relay-burst-calls",
        type=int,
        default=None,
        help="relay: calls per station back to back in the burst (default 24, quick 12)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="write each mode's report into its block of FILE (bench/README.md): results, actcon, reconnect, soak,"
        " relay",
    )
    args = parser.parse_args(argv)
    if args.modes is None:
        modes: tuple[str, ...] = ("soak",) if args.soak_minutes > 0 else ("fanout", "actcon", "reconnect")
    else:
        modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        for mode in modes:
            if mode not in MODES:
                parser.error(f"--modes: unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if args.soak_minutes > 0 and "soak" not in modes:
            modes += ("soak",)
    if "soak" in modes and not args.soak_minutes > 0:
        parser.error("the soak needs --soak-minutes N (N > 0)")
    stations: tuple[int, ...] = (100, 1000, 5000)
    mode_stations: tuple[int, ...] = (1000, 5000)
    relay_stations: tuple[int, ...] = (1000,)
    if args.stations is not None:
        try:
            stations = mode_stations = relay_stations = tuple(
                int(n) for n in args.stations.split(",") if n.strip()
            )
        except ValueError:
            parser.error(f"--stations: not a list of integers: {args.stations!r}")
        if not stations or min(stations) < 1:
            parser.error("--stations: give at least one count >= 1")
    transports = tuple(t.strip() for t in args.transports.split(",") if t.strip())
    if not transports or any(t not in TRANSPORTS for t in transports):
        parser.error(f"--transports: give ws, wss or both, not {args.transports!r}")
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    for system in systems:
        if system not in SYSTEMS:
            parser.error(f"--systems: unknown system {system!r}")
    names = {"1.6": V16, "2.0.1": V201}
    versions = tuple(names.get(v.strip(), "") for v in args.versions.split(",") if v.strip())
    if not versions or "" in versions:
        parser.error(f"--versions: give 1.6, 2.0.1 or both, not {args.versions!r}")
    if versions == (V201,) and systems == ("baseline",):
        parser.error("--versions 2.0.1: the baseline speaks 1.6 only")
    opts = Options(
        stations=stations,
        systems=systems,
        versions=versions,
        rounds=args.rounds or (3 if args.quick else 7),
        meter_messages=args.meter_messages or (5000 if args.quick else 20000),
        profile=args.profile,
        gc_freeze=args.gc_freeze,
        joins=(5 if args.quick else 20) if args.joins is None else args.joins,
        modes=modes,
        mode_stations=mode_stations,
        transports=transports,
        actcon=ActconOptions(
            at_rest=(20 if args.quick else 50) if args.actcon_rest is None else args.actcon_rest,
            pairs=(15 if args.quick else 40) if args.actcon_pairs is None else args.actcon_pairs,
            stream=(60 if args.quick else 200) if args.actcon_setpoints is None else args.actcon_setpoints,
        ),
        restart=RestartOptions(spread_s=args.reconnect_spread_s, timeout_s=args.reconnect_timeout_s),
        soak=SoakOptions(
            minutes=args.soak_minutes,
            stations=args.soak_stations,
            csms_drop_every_s=args.soak_csms_drop_s,
            master_reconnect_every_s=args.soak_master_reconnect_s,
        ),
        relay=RelayOptions(
            stations=relay_stations,
            rate_per_s=args.relay_rate,
            paced_s=(10.0 if args.quick else 30.0) if args.relay_paced_s is None else args.relay_paced_s,
            burst_calls=(12 if args.quick else 24)
            if args.relay_burst_calls is None
            else args.relay_burst_calls,
            profile=args.profile,
        ),
    )
    return opts, args


@dataclass
class Report:
    """Everything one invocation measured, mode by mode."""

    fanout: list[CaseResult] = field(default_factory=list)
    actcon: list[ActconResult] = field(default_factory=list)
    reconnect: list[RestartResult] = field(default_factory=list)
    soak: SoakResult | None = None
    relay: list[RelayResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        cases: list[Any] = [*self.fanout, *self.actcon, *self.reconnect, *self.relay]
        if self.soak is not None:
            cases.append(self.soak)
        return all(c.ok for c in cases)


def _timed(progress: Any, label: str, work: Any) -> Any:
    if progress is not None:
        progress(f"{label} ... (load {os.getloadavg()[0]:.1f})")
    started = time.monotonic()
    result = work()
    if progress is not None:
        state = "ok" if result.ok else f"FAILED: {result.errors}"
        progress(f"  done in {time.monotonic() - started:.0f} s, {state}")
    return result


def run_modes(opts: Options, progress: Any = None) -> Report:
    report = Report()
    if "fanout" in opts.modes:
        report.fanout = run(opts, progress)
    if "actcon" in opts.modes:
        for n in opts.mode_stations:
            report.actcon.append(
                _timed(progress, f"actcon: {n} stations", lambda n=n: run_actcon_case(n, opts.actcon))
            )
    if "reconnect" in opts.modes:
        for n in opts.mode_stations:
            for transport in opts.transports:
                report.reconnect.append(
                    _timed(
                        progress,
                        f"reconnect: {n} stations, {transport}",
                        lambda n=n, transport=transport: run_restart_case(n, transport, opts.restart),
                    )
                )
    if "soak" in opts.modes:
        report.soak = _timed(
            progress,
            f"soak: {opts.soak.minutes:g} min, {opts.soak.stations} stations",
            lambda: run_soak(opts.soak),
        )
    if "relay" in opts.modes:
        for n in opts.relay.stations:
            report.relay.append(run_relay(n, opts.relay, progress))
    return report


def run(opts: Options, progress: Any = None) -> list[CaseResult]:
    results = []
    for stations in opts.stations:
        for version, system in itertools.product(opts.versions, opts.systems):
            if system == "baseline" and version != V16:
                continue  # the baseline is written on ocpp.v16 only
            if progress is not None:
                progress(f"{system}: {stations} stations ({version}) ...")
            started = time.monotonic()
            result = run_case(system, stations, opts, version)
            if progress is not None:
                state = "ok" if result.ok else f"FAILED: {result.errors}"
                progress(f"  done in {time.monotonic() - started:.0f} s, {state}")
            results.append(result)
    return results


def code_state() -> str:
    """The commit measured, and whether the code under test had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway", "ocpp_side", "bench"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "code: not a git checkout"
    changed = sorted({line[3:] for line in dirty if line.strip() and not line.endswith(".md")})
    if not changed:
        return f"code: commit {head}"
    return f"code: commit {head} plus uncommitted changes in {', '.join(changed)}"


def run_line() -> str:
    """When, where, and which code: the first line of every recorded block."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"Run {when} on {machine_description()}; {code_state()}."


def render_report(opts: Options, results: list[CaseResult]) -> str:
    """Machine, settings, the table, the targets and the notes, as Markdown."""
    systems = "both systems" if len(opts.systems) > 1 else "the system"
    parts = [
        run_line(),
        (
            f"{opts.rounds} setpoint rounds per case (medians shown), the larger of {opts.meter_messages:,} "
            f"and {MIN_METER_PER_STATION} × N MeterValues per case, {opts.joins} joins per gateway case, "
            f"strict schema validation on in {systems}."
        ),
        "",
        render_table(results),
    ]
    for table in (render_storm(results), render_targets(results)):
        if table:
            parts += ["", table]
    extra = []
    for r in results:
        case = f"{r.system} ({r.version}), {r.stations} stations"
        extra += [f"- note: {case}: {note}" for note in r.notes]
        if r.joins:
            allocations = statistics.median(j["allocations"] for j in r.joins)
            extra.append(
                f"- joins, {case}: {len(r.joins)} one at a time; connection attempt → BootNotification Accepted"
                f" {_ms(r.join_boot_p50_s)} ms, → first profile answered {_ms(r.join_first_profile_p50_s)} ms,"
                f" → final share answered {_ms(r.join_p50_s)} ms (p50); {allocations:,.0f} allocations per join"
            )
        if r.server_calls:
            extra.append(f"- server→station calls, {case}: {r.server_calls}")
    if extra:
        parts += ["", *extra]
    return "\n".join(parts)


RECORD_START, RECORD_END = "<!-- results:start -->", "<!-- results:end -->"
MODES = ("fanout", "actcon", "reconnect", "soak", "relay")
BLOCKS = {"fanout": "results", "actcon": "actcon", "reconnect": "reconnect", "soak": "soak", "relay": "relay"}


def record(path: str, report: str, block: str = "results") -> None:
    """Replace the recorded ``block`` between its markers in ``path`` (bench/README.md)."""
    start_marker, end_marker = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, start, rest = text.partition(start_marker)
    _old, end, tail = rest.partition(end_marker)
    if not start or not end:
        raise BenchError(f"{path} has no {start_marker} ... {end_marker} block")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{head}{start_marker}\n{report}\n{end_marker}{tail}")


def render_modes(opts: Options, report: Report) -> dict[str, str]:
    """Each mode's Markdown, keyed by mode."""
    parts: dict[str, str] = {}
    if report.fanout:
        parts["fanout"] = render_report(opts, report.fanout)
    if report.actcon:
        a = opts.actcon
        parts["actcon"] = "\n".join(
            [
                run_line(),
                (
                    f"IEC 104 master → gateway (c104 outstation, production defaults) with N stations (OCPP 1.6); "
                    f"{a.at_rest} setpoints at rest, {a.pairs} pairs, a stream of {a.stream}; gaps "
                    f"{a.gap_min_s * 1000:.0f}–{a.gap_max_s * 1000:.0f} ms; store on disk (fsync in every ACT_CON)."
                ),
                "",
                render_actcon(report.actcon, a),
            ]
        )
    if report.reconnect:
        parts["reconnect"] = "\n".join([run_line(), "", render_restart(report.reconnect, opts.restart)])
    if report.soak is not None:
        parts["soak"] = "\n".join([run_line(), "", render_soak(report.soak, opts.soak)])
    if report.relay:
        parts["relay"] = "\n".join([run_line(), "", render_relay(report.relay, opts.relay)])
    return parts


def main(argv: list[str] | None = None) -> int:
    opts, args = parse_args(argv)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_modes(opts, progress)
    results = report.fanout
    parts = render_modes(opts, report)
    print("\n\n".join(parts.values()))
    if args.record:
        for mode, text in parts.items():
            record(args.record, text, BLOCKS[mode])
    if opts.profile:
        for r in results:
            print(f"\n### profile: {r.system}, {r.stations} stations, connect + boot\n{r.profile_connect}")
            print(f"\n### profile: {r.system}, {r.stations} stations, fan-out rounds\n{r.profile_fanout}")
            print(f"\n### profile: {r.system}, {r.stations} stations, MeterValues burst\n{r.profile_meter}")
        for relay in report.relay:
            for c in relay.cases:
                if c.profile_burst:
                    print(f"\n### profile: relay, {c.case}, {c.stations} stations, burst\n{c.profile_burst}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "machine": machine_description(),
                    "results": [asdict(r) for r in results],
                    "actcon": [asdict(r) for r in report.actcon],
                    "reconnect": [asdict(r) for r in report.reconnect],
                    "soak": None if report.soak is None else asdict(report.soak),
                    "relay": [asdict(r) for r in report.relay],
                },
                out,
                indent=1,
            )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
