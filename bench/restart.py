"""Reconnect storm: the gateway process restarts with N stations connected; time until every
station is re-profiled at both levels, and the cap invariant throughout (station side).

One case, plain websockets (``ws``) or TLS with security profile 2 (``wss``: server
certificate from a throwaway openssl CA, ``tests/support/pki.py``; HTTP Basic Auth with a
password per station):

1. gateway A (a child process; its store a file on disk the harness keeps, a fixed port)
   takes N stations (100 handshakes at a time) and one setpoint: N x 10 kW, so every
   station holds a 10 kW live profile and a 0 W fallback one, and the store holds the limit;
2. the stations start watching the sum of what they are bound by (the top of each one's
   profile stack, at most its rating) against that limit after every profile any of them
   Accepts, and arm their reconnection;
3. gateway A stops as a service manager would stop it (its exit command: listener closed,
   every connection closed, store closed), and gateway B starts on the same store and port;
4. once B listens, every station comes back after a random delay in [0, spread] (3 s: N
   arrivals within a few seconds) and retries every ~retry (jittered) if refused. One
   process simulates every station, so the stations wait for B rather than burn that
   process's CPU on refused attempts while B starts (for the gateway a refused connection
   costs nothing); the station process's CPU and loop lag are reported to show it kept up;
5. timed from the moment B listens: every station reconnected and booted, re-profiled at
   both levels (a live and a fallback profile Accepted on the new connection), and holding
   the resumed share (10 kW) at the top; B's CPU over that time per handshake.

The stations see every profile, so the watch sees every change of the sum; the limit in
force does not change across the restart (B resumes A's setpoint), so any moment above it
is a violation. It does change if the case outlasts B's hold (no IEC 104 master here: after
``limits.hold_timeout_s``, 300 s, B falls back to the fallback limit, and the stations still
away keep what they hold): the case then fails saying so, and the watch's "held" is not given.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BenchError, Child, connect_fleet, cpu_s, free_port, load_avg_1m, percentile
from bench.server_process import run_server
from bench.stations import V16, W_PER_A, run_simulator

SHARE_W = 10000.0
TARGET_S = 5.0  # issue 13: all re-profiled within 5 s of the restart (plain websockets)
PASSWORD_PREFIX = "bench-secret-"  # security profile 2: each station's password is this + its id
TRANSPORTS = ("ws", "wss")


@dataclass
class RestartOptions:
    spread_s: float = 3.0  # once the new gateway listens, every station comes back within this ...
    retry_s: float = 0.5  # ... and retries about this often if refused
    concurrency: int = 0  # handshakes in flight from the station process at once (0: no bound)
    connect_concurrency: int = 100  # the first connection of the N stations, before the restart
    timeout_s: float = 120.0


@dataclass
class RestartResult:
    stations: int
    transport: str
    version: str = V16
    connect_boot_s: float | None = None
    connect_cpu_ms_per_station: float | None = None  # gateway A while the N first connected and booted
    stop_s: float | None = None  # A's exit command -> A gone
    restart_s: float | None = None  # A's exit command -> B listening
    reconnect_first_s: float | None = None  # B listening -> first / last station's websocket open
    reconnect_last_s: float | None = None
    booted_s: float | None = None  # B listening -> last station's BootNotification Accepted
    both_levels_s: float | None = None  # ... -> last station with both levels Accepted
    reprofiled_s: float | None = None  # ... -> last station holding the resumed share at both levels
    reprofiled_p50_s: float | None = None
    reprofiled_p90_s: float | None = None
    per_station_p50_s: float | None = None  # a station's own reconnection -> its re-profiling
    handshakes: int = 0  # websocket connections opened to B
    attempts: int = 0  # connection attempts (refused ones included)
    failures: dict[str, int] = field(default_factory=dict)  # failed attempts by exception type
    lost: int = 0  # stations that had lost their connection when the new gateway listened
    in_amperes: int = 0  # re-profiled in A: the gateway's unit discovery failed for them
    sim_cpu_s: float | None = None  # the station process's CPU over the storm
    sim_lag_max_s: float | None = None  # its event loop, late by at most this during the storm
    last_failure_s: float | None = None  # B listening -> the last failed attempt
    cpu_s: float | None = None  # B's CPU from listening to all re-profiled
    cpu_ms_per_handshake: float | None = None
    cap: dict[str, Any] = field(default_factory=dict)
    # gateway B once the watch stopped: its mode and limit in force. Without an IEC 104 master
    # the resumed hold runs out after limits.hold_timeout_s (300 s) and B falls back; the watch
    # judges against the limit of the restart, so a case that outlasts the hold is not judged.
    after: dict[str, Any] = field(default_factory=dict)
    server_calls: dict[str, int] = field(default_factory=dict)
    load_start: float | None = None
    load_end: float | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def limit_changed(self) -> bool:
        """Gateway B ended on another limit than the restart's (its hold ran out): the watch's
        verdict, judged against the restart's limit, does not hold for the whole case."""
        if not self.after or not self.cap:
            return False
        return abs(float(self.after.get("limit_w") or 0.0) - float(self.cap["limit_w"])) > 0.5


def _make_pki(folder: Path) -> dict[str, str]:
    from tests.support.pki import SERVER_EXT, issue, make_ca  # openssl, as the TLS tests do

    make_ca(folder, "ca", "/CN=ocpp809 bench CA")
    issue(folder, "server", "/CN=127.0.0.1", SERVER_EXT)
    return {
        "cert_file": str(folder / "server.crt"),
        "key_file": str(folder / "server.key"),
        "ca_file": str(folder / "ca.crt"),
    }


def run_restart_case(stations: int, transport: str, opts: RestartOptions) -> RestartResult:
    """Restart the gateway under ``stations`` connected stations; never raises BenchError."""
    result = RestartResult(stations, transport)
    result.load_start = load_avg_1m()
    t = opts.timeout_s
    folder = tempfile.TemporaryDirectory(prefix="ocpp809-restart-")
    old: Child | None = None
    new: Child | None = None
    sim: Child | None = None
    try:
        port = free_port()
        options: dict[str, Any] = {"store_dir": folder.name, "ocpp_port": port}
        connect_extra: dict[str, Any] = {}
        if transport == "wss":
            pki = Path(folder.name) / "pki"
            pki.mkdir()
            options["tls"] = _make_pki(pki)
            options["security_profile"] = 2
            options["passwords"] = {f"S{i:05d}": f"{PASSWORD_PREFIX}S{i:05d}" for i in range(stations)}
            connect_extra = {"password_prefix": PASSWORD_PREFIX, "ca_file": options["tls"]["ca_file"]}
        url = f"{transport}://127.0.0.1:{port}"

        old = Child("server-gateway", run_server, "gateway", stations, options)
        old.request("start", 60)
        sim = Child("stations", run_simulator)
        cpu_before = cpu_s(old.pid)
        boot = connect_fleet(sim, url, stations, opts.connect_concurrency, t, **connect_extra)
        result.connect_boot_s = boot["elapsed_s"]
        result.connect_cpu_ms_per_station = (cpu_s(old.pid) - cpu_before) / stations * 1000
        _ready(old, stations, t, "gateway A")
        limit_w = stations * SHARE_W
        old.request("fan_out", t, site_limit_w=limit_w, timeout_s=t / 2)  # stored: B resumes it
        _check_held(sim, stations, "before the restart", result)
        if result.errors:
            return result
        handshakes_before = sim.request("profile_summary", 30, prefix="S")
        sim.request("cap_watch_start", 10, limit_w=limit_w)
        sim.request(
            "storm_arm",
            10,
            prefix="S",
            expected_live_w=SHARE_W,
            spread_s=opts.spread_s,
            retry_s=opts.retry_s,
            timeout_s=t,
            concurrency=opts.concurrency,
        )

        stopping = time.monotonic()
        old.close(wait_s=60)
        old = None
        result.stop_s = time.monotonic() - stopping
        new = Child("server-gateway", run_server, "gateway", stations, options)
        new.request("start", 60)
        listening = time.monotonic()
        cpu_before, sim_cpu_before = cpu_s(new.pid), cpu_s(sim.pid)
        result.restart_s = listening - stopping
        result.lost = sim.request("storm_release", 10)

        storm = sim.request("storm_wait", t + 30, timeout_s=t)
        cpu_used = cpu_s(new.pid) - cpu_before
        result.sim_cpu_s = cpu_s(sim.pid) - sim_cpu_before
        settled = new.request("wait_ready", t, stations=stations, timeout_s=t / 2)
        result.cap = sim.request("cap_watch_stop", 10)
        diagnosis = new.request("diagnose", 30)
        result.after = {
            k: diagnosis.get(k) for k in ("mode", "limit_w", "reserve_sum_w", "online", "offline")
        }
        sim.request("storm_disarm", 10)
        _storm_figures(result, storm, listening, cpu_used)
        if storm["completed"] < stations:
            result.errors.append(
                f"{stations - storm['completed']} of {stations} stations not re-profiled within {t:g} s: "
                f"{storm['examples_incomplete']}"
            )
        if not settled["ok"]:
            result.errors.append(f"gateway B not settled: {diagnosis}")
        if result.limit_changed:
            result.errors.append(
                f"the limit in force changed during the case: gateway B ended in {result.after.get('mode')} at "
                f"{result.after.get('limit_w') or 0:,.0f} W ({result.after.get('offline')} stations offline, "
                f"{result.after.get('reserve_sum_w') or 0:,.0f} W reserved); the cap watch judged against "
                f"{limit_w:,.0f} W, so its verdict covers only the time before the change"
            )
        summary = _check_held(sim, stations, "after the restart", result)
        result.server_calls = {
            action: count - handshakes_before["server_calls"].get(action, 0)
            for action, count in summary["server_calls"].items()
        }
        if result.cap.get("violations"):
            result.errors.append(
                f"cap invariant broken: the stations' caps summed to {result.cap['max_sum_w']:,.0f} W against a "
                f"limit of {result.cap['limit_w']:,.0f} W, above it for {result.cap['above_s']:.2f} s "
                f"({result.cap['violations']} of {result.cap['updates']} changes)"
            )
    except BenchError as exc:
        result.errors.append(str(exc))
    finally:
        result.load_end = load_avg_1m()
        for child in (new, old):
            if child is not None:
                try:
                    child.request("quiet", 10)
                except BenchError:
                    pass
        if sim is not None:
            sim.close()
        for child in (new, old):
            if child is not None:
                child.close()
        folder.cleanup()
    return result


def _ready(server: Child, stations: int, timeout_s: float, name: str) -> None:
    ready = server.request("wait_ready", timeout_s, stations=stations, timeout_s=timeout_s / 2)
    if not ready["ok"]:
        raise BenchError(f"{name} not settled with {stations} stations: {server.request('diagnose', 30)}")


def _check_held(sim: Child, stations: int, when: str, result: RestartResult) -> dict[str, Any]:
    summary: dict[str, Any] = sim.request("profile_summary", 30, prefix="S")
    expected = {f"{SHARE_W:g} W": stations}
    held = dict(summary["top_level_limits"])
    amperes = held.pop(f"{math.floor(SHARE_W / W_PER_A * 10) / 10:g} A", 0)  # the same share in A
    if amperes:
        held[f"{SHARE_W:g} W"] = held.get(f"{SHARE_W:g} W", 0) + amperes
        result.notes.append(f"{when}, {amperes} stations hold the share in A: their unit discovery failed")
    if held != expected:
        result.errors.append(f"{when}, stations hold {summary['top_level_limits']}: expected {expected}")
    if summary["connected"] != stations:
        result.errors.append(f"{when}, {summary['connected']} of {stations} stations connected")
    return summary


def _storm_figures(result: RestartResult, storm: dict[str, Any], listening: float, cpu_used: float) -> None:
    def after(times: list[float]) -> list[float]:
        return sorted(x - listening for x in times)

    opened, booted = after(storm["opened"]), after(storm["booted"])
    both, final = after(storm["both_levels"]), after(storm["complete"])
    if opened:
        result.reconnect_first_s, result.reconnect_last_s = opened[0], opened[-1]
    result.booted_s = booted[-1] if booted else None
    result.both_levels_s = both[-1] if both else None
    if final and len(final) == result.stations:
        result.reprofiled_s = final[-1]
        result.reprofiled_p50_s = statistics.median(final)
        result.reprofiled_p90_s = percentile(final, 90)
    result.handshakes = len(storm["opened"])
    result.attempts = storm["attempts"]
    result.failures = storm["failures"]
    result.in_amperes = storm["in_amperes"]
    result.sim_lag_max_s = storm["lag_max_s"]
    if storm["last_failure"] is not None:
        result.last_failure_s = storm["last_failure"] - listening
    result.cpu_s = cpu_used
    if result.handshakes:
        result.cpu_ms_per_handshake = cpu_used / result.handshakes * 1000
    if storm["own"]:  # a station's own wait: from its reconnection to holding its share at both levels
        result.per_station_p50_s = statistics.median(storm["own"])


# -- output ------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def render_restart(results: list[RestartResult], opts: RestartOptions) -> str:
    head = (
        "| stations | transport | restart: exit → new process listening (s) "
        "| reconnections open, first → last (s) | all booted (s) | all with both levels (s) "
        "| **all re-profiled** (s), p50 / p90 / last | gateway CPU per reconnection (ms) "
        "| Σ caps max / limit, time above | connect+boot before, 100 at a time (s) / CPU per station (ms) "
        "| load start → end | status |"
    )
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        status = "ok" if r.ok else "FAILED: " + "; ".join(r.errors)[:240]
        reprofiled = (
            "—"
            if r.reprofiled_s is None
            else f"{_s(r.reprofiled_p50_s)} / {_s(r.reprofiled_p90_s)} / **{_s(r.reprofiled_s)}**"
        )
        cap = "—"
        if r.cap:
            cap = f"{r.cap['max_sum_w'] / r.cap['limit_w']:.3f}, {r.cap['above_s']:.2f} s"
        opened = f"{_s(r.reconnect_first_s)} → {_s(r.reconnect_last_s)}"
        transport = "TLS, profile 2" if r.transport == "wss" else "plain"
        connect_cpu = "—" if r.connect_cpu_ms_per_station is None else f"{r.connect_cpu_ms_per_station:.2f}"
        lines.append(
            f"| {r.stations} | {transport} | {_s(r.restart_s)} | {opened} | {_s(r.booted_s)} "
            f"| {_s(r.both_levels_s)} | {reprofiled} "
            f"| {'—' if r.cpu_ms_per_handshake is None else f'{r.cpu_ms_per_handshake:.2f}'} | {cap} "
            f"| {_s(r.connect_boot_s)} / {connect_cpu} | {_num(r.load_start)} → {_num(r.load_end)} | {status} |"
        )
    by_key = {(r.stations, r.transport): r for r in results}
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    for r in results:
        case = f"{r.stations:,} stations, {'TLS' if r.transport == 'wss' else 'plain websockets'}"
        if r.transport == "ws":
            met = r.reprofiled_s is not None and r.reprofiled_s <= TARGET_S
            lines.append(
                f"| all re-profiled (both levels) ≤ {TARGET_S:g} s after the restart ({case}) "
                f"| {_s(r.reprofiled_s)} s | {'yes' if met else 'no'} |"
            )
        if r.cap:
            held = "no" if r.cap["violations"] else "yes"
            if held == "yes" and r.limit_changed:  # above the restart's limit is above a lower one too
                held = "not judged: the limit in force changed during the case"
            lines.append(
                f"| cap invariant held throughout the restart: Σ stations' caps ≤ limit ({case}) "
                f"| max {r.cap['max_sum_w'] / r.cap['limit_w']:.3f} × limit, {r.cap['above_s']:.2f} s above "
                f"| {held} |"
            )
    notes = [
        (
            f"- restart: the stations notice the loss; from the moment the new gateway listens each comes back "
            f"after a random delay within {opts.spread_s:g} s and retries every ~{opts.retry_s:g} s if refused; "
            "times from the new gateway listening. CPU per reconnection: the "
            "new gateway's CPU from listening to the last station re-profiled ÷ websocket handshakes (TLS, Basic "
            "Auth, BootNotification, discovery, both profiles); its start-up is not in it"
        )
    ]
    for r in results:
        case = f"{r.stations} stations, {'TLS' if r.transport == 'wss' else 'plain'}"
        notes.append(
            f"- restart, {case}: {r.handshakes:,} handshakes from {r.attempts:,} attempts (failed: {r.failures}, "
            f"the last {_s(r.last_failure_s)} s after listening); station process: {_s(r.sim_cpu_s)} s CPU, "
            f"its loop late by at most {_s(r.sim_lag_max_s)} s; "
            f"old gateway stopped in {_s(r.stop_s)} s; a station's own wait from its reconnection to "
            f"re-profiled {_s(r.per_station_p50_s)} s (p50); re-profiled in A (unit discovery failed): "
            f"{r.in_amperes}; calls on the new connections: {r.server_calls}"
        )
        if r.cap and r.cap["updates"] <= 1:  # the watch's own first reading: the sum never moved
            notes.append(
                f"- cap invariant, {case}: the stations' summed caps never moved over {r.cap['watched_s']:.1f} s "
                f"(every profile Accepted kept its station's cap): {r.cap['max_sum_w']:,.0f} W against "
                f"{r.cap['limit_w']:,.0f} W"
            )
        elif r.cap:
            notes.append(
                f"- cap invariant, {case}: {r.cap['updates']:,} changes of the stations' summed caps over "
                f"{r.cap['watched_s']:.1f} s, max {r.cap['max_sum_w']:,.0f} W against {r.cap['limit_w']:,.0f} W, "
                f"{r.cap['violations']:,} above it"
            )
        if r.limit_changed:
            notes.append(
                f"- limit in force, {case}: gateway B ended in {r.after.get('mode')} at "
                f"{float(r.after.get('limit_w') or 0):,.0f} W, not the restart's {r.cap['limit_w']:,.0f} W"
            )
        notes += [f"- note, restart, {case}: {n}" for n in r.notes]
    for n in sorted({r.stations for r in results}):
        plain, tls = by_key.get((n, "ws")), by_key.get((n, "wss"))
        if plain and tls and plain.cpu_ms_per_handshake and tls.cpu_ms_per_handshake:
            notes.append(
                f"- TLS vs plain, {n} stations: {tls.cpu_ms_per_handshake - plain.cpu_ms_per_handshake:+.2f} ms "
                f"of gateway CPU per reconnection ({tls.cpu_ms_per_handshake / plain.cpu_ms_per_handshake:.2f}×); "
                f"all re-profiled {_s(tls.reprofiled_s)} s against {_s(plain.reprofiled_s)} s"
            )
    return "\n".join(lines + [""] + notes)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
