"""Soak: the gateway under a steady, ordinary load for N minutes; its RSS, open file
descriptors and asyncio tasks sampled every minute (``--soak-minutes N``, off by default).

Four processes on 127.0.0.1, each started and stopped here:

* the gateway (``bench.gateway_under_test``, a child process): its station server with
  the Local Controller relay toward a CSMS, its IEC 104 outstation, its store on disk;
* a CSMS: the bench's baseline central system (``bench.baseline_csms``, the stock ``ocpp``
  library) taking the relay's connections, one per station; it drops every few minutes
  (every connection closed, the listener gone for a few seconds, then back on its port);
* N stations (1,000 by default) sending MeterValues every 10 s each, spread evenly;
* the DSO's master (``bench.master``) sending a setpoint every 10 s (N x 10 kW, N x 11 kW
  alternately, so each one moves every station's profile) and reconnecting now and then.

Every minute (the first sample once everything runs): the gateway's VmRSS from
``/proc/<pid>/status``, its open descriptors from ``/proc/<pid>/fd``, its asyncio tasks and
the blocks Python's allocator holds (asked over its control channel), its CPU time, and the
traffic so far. After the warm-up, the RSS trend is set against what c104 2.2.1 is known to
keep (docs/c104/README.md): about 410 B per frame the outstation writes within t1 of each
master connection (``on_send_raw`` is set then), nothing per command since the gateway stopped
reading ``IncomingMessage.raw``. The master counts those frames.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from bench.harness import (
    BenchError,
    Child,
    connect_fleet,
    cpu_s,
    fd_count,
    folder_bytes,
    load_avg_1m,
    percentile,
    rss_kb,
)
from bench.master import run_master
from bench.server_process import run_server
from bench.stations import run_simulator

SHARES_W = (10000.0, 11000.0)
C104_BYTES_PER_FRAME_IN_T1 = 410  # docs/c104/README.md: on_send_raw, set for t1 after each connect
T1_S = 15  # the gateway's iec104.t1_s (default)


@dataclass
class SoakOptions:
    minutes: float = 0.0
    stations: int = 1000
    meter_every_s: float = 10.0
    setpoint_every_s: float = 10.0
    csms_first_drop_s: float = 30.0  # away from the minute marks: a sample sees the links back up
    csms_drop_every_s: float = 120.0
    csms_down_s: float = 5.0
    master_reconnect_every_s: float = 90.0
    sample_every_s: float = 60.0
    warmup_s: float = 60.0  # samples before this are the warm-up, not judged
    connect_concurrency: int = 100
    timeout_s: float = 120.0


@dataclass
class SoakResult:
    stations: int
    minutes: float
    connect_boot_s: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    master: dict[str, Any] = field(default_factory=dict)
    meter: dict[str, Any] = field(default_factory=dict)
    csms_drops: int = 0
    csms_meter_values: int | None = None  # MeterValues the CSMS received (relayed, replayed)
    verdict: dict[str, Any] = field(default_factory=dict)
    load_start: float | None = None
    load_end: float | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def run_soak(opts: SoakOptions) -> SoakResult:
    """Run the soak; never raises BenchError (failures are in ``errors``)."""
    n = opts.stations
    result = SoakResult(n, opts.minutes)
    result.load_start = load_avg_1m()
    t = opts.timeout_s
    folder = tempfile.TemporaryDirectory(prefix="ocpp809-soak-")
    csms = Child("csms", run_server, "baseline", n)
    gateway: Child | None = None
    sim: Child | None = None
    master: Child | None = None
    try:
        csms_port = csms.request("start", 60)["port"]
        options = {"store_dir": folder.name, "iec104": True, "csms_url": f"ws://127.0.0.1:{csms_port}"}
        gateway = Child("server-gateway", run_server, "gateway", n, options)
        started = gateway.request("start", 60)
        sim = Child("stations", run_simulator)
        boot = connect_fleet(sim, f"ws://127.0.0.1:{started['port']}", n, opts.connect_concurrency, t)
        result.connect_boot_s = boot["elapsed_s"]
        ready = gateway.request("wait_ready", t, stations=n, timeout_s=t / 2)
        if not ready["ok"]:
            raise BenchError(f"gateway not settled with {n} stations: {gateway.request('diagnose', 30)}")
        master = Child("master", run_master)
        master.request(
            "soak_start",
            10,
            host="127.0.0.1",
            port=started["iec104_port"],
            values_w=[n * share for share in SHARES_W],
            every_s=opts.setpoint_every_s,
            reconnect_every_s=opts.master_reconnect_every_s,
            t1_s=T1_S,
        )
        sim.request("meter_periodic_start", 10, prefix="S", every_s=opts.meter_every_s)
        _soak_loop(opts, result, csms, gateway, sim, master, folder.name)
        result.master = master.request("soak_stop", 30, t1_s=T1_S)
        result.meter = sim.request("meter_periodic_stop", 30)
        time.sleep(1.0)
        result.csms_drops = int(csms.request("drop_count", 10))
        result.csms_meter_values = int(csms.request("ingestion", 30)["meter_values"])
        summary = sim.request("profile_summary", 30, prefix="S")
        if summary["connected"] != n:
            result.errors.append(f"{n - summary['connected']} of {n} stations lost their connection")
        _judge(opts, result)
    except BenchError as exc:
        result.errors.append(str(exc))
    finally:
        result.load_end = load_avg_1m()
        if gateway is not None:
            try:
                gateway.request("quiet", 10)
            except BenchError:
                pass
        for child in (master, sim, gateway, csms):
            if child is not None:
                child.close()
        folder.cleanup()
    return result


def _soak_loop(
    opts: SoakOptions, result: SoakResult, csms: Child, gateway: Child, sim: Child, master: Child, store: str
) -> None:
    start = time.monotonic()
    end = start + opts.minutes * 60
    next_sample = start
    next_drop = start + opts.csms_first_drop_s
    while True:
        now = time.monotonic()
        if now >= next_sample:
            result.samples.append(_sample(now - start, csms, gateway, sim, master, store))
            next_sample += opts.sample_every_s
        if now >= next_drop and now < end:
            if not csms.request("drop", 10, down_s=opts.csms_down_s):
                result.notes.append(
                    f"a CSMS drop at {now - start:.0f} s was skipped: the previous one still ran"
                )
            next_drop += opts.csms_drop_every_s
        if now >= end:
            if result.samples and result.samples[-1]["t_s"] < now - start - 1:
                result.samples.append(_sample(now - start, csms, gateway, sim, master, store))
            return
        time.sleep(max(0.01, min(next_sample, next_drop, end) - time.monotonic()))


def _sample(t_s: float, csms: Child, gateway: Child, sim: Child, master: Child, store: str) -> dict[str, Any]:
    pid = gateway.pid
    health = gateway.request("health", 30)
    meter = sim.request("meter_periodic_stats", 30)
    setpoints = master.request("soak_stats", 30)
    return {
        "t_s": round(t_s, 1),
        "rss_kb": rss_kb(pid),
        "fds": fd_count(pid),
        "tasks": health["tasks"],
        "py_blocks": health["py_blocks"],
        "cpu_s": cpu_s(pid),
        "store_bytes": folder_bytes(store),  # the store, its WAL and the relay's outbox
        "meter_values": gateway.request("ingestion", 30)["meter_values"],
        "meter_sent": meter["sent"],
        "meter_failed": meter["failed"],
        "setpoints": setpoints["sent"],
        "setpoints_positive": setpoints["positive"],
        "master_reconnects": setpoints["reconnects"],
        "frames_after_connect": setpoints["frames_after_connect"],
        "csms_drops": csms.request("drop_count", 10),
        "load": load_avg_1m(),
    }


def _slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope, per minute, of (seconds, value) points."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def _judge(opts: SoakOptions, result: SoakResult) -> None:
    m, meter = result.master, result.meter
    if m.get("failed") or m.get("negative") or m.get("connect_failures"):
        result.errors.append(
            f"master: {m.get('failed')} setpoints unanswered, {m.get('negative')} negative, "
            f"{m.get('connect_failures')} failed connects: {m.get('errors')}"
        )
    if meter.get("failed"):
        result.errors.append(f"{meter['failed']} MeterValues failed: {meter.get('errors')}")
    expected_drops = 0
    if opts.minutes * 60 > opts.csms_first_drop_s:
        expected_drops = 1 + int((opts.minutes * 60 - opts.csms_first_drop_s) // opts.csms_drop_every_s)
    if result.csms_drops < expected_drops:
        result.errors.append(f"the CSMS dropped {result.csms_drops} times, {expected_drops} planned")
    judged = [s for s in result.samples if s["t_s"] >= opts.warmup_s - 1]
    if len(judged) < 2:
        result.notes.append("too short to judge the trend after the warm-up (fewer than two samples)")
        return
    first, last = judged[0], judged[-1]
    minutes = (last["t_s"] - first["t_s"]) / 60
    c104_kb = (
        (last["frames_after_connect"] - first["frames_after_connect"]) * C104_BYTES_PER_FRAME_IN_T1 / 1024
    )
    growth_kb = last["rss_kb"] - first["rss_kb"]
    unexplained_kb = growth_kb - c104_kb
    fds = [s["fds"] for s in judged]
    tasks = [s["tasks"] for s in judged]
    # Flat: what c104 does not explain stays within 1 % of the RSS (and 1 MiB) over the window,
    # and the descriptors and tasks come back to where they were.
    tolerance_kb = max(1024.0, 0.01 * first["rss_kb"])
    result.verdict = {
        "from_t_s": first["t_s"],
        "to_t_s": last["t_s"],
        "minutes": minutes,
        "rss_first_kb": first["rss_kb"],
        "rss_last_kb": last["rss_kb"],
        "rss_growth_kb": growth_kb,
        "rss_slope_kb_per_min": _slope_per_min([(s["t_s"], s["rss_kb"]) for s in judged]),
        "py_blocks_growth": last["py_blocks"] - first["py_blocks"],
        "c104_expected_kb": c104_kb,
        "unexplained_kb": unexplained_kb,
        "tolerance_kb": tolerance_kb,
        "rss_flat": unexplained_kb <= tolerance_kb,
        "fds_min": min(fds),
        "fds_max": max(fds),
        "fds_flat": last["fds"] <= first["fds"] + 2,
        "tasks_min": min(tasks),
        "tasks_max": max(tasks),
        "tasks_flat": last["tasks"] <= first["tasks"] + 2,
    }


# -- output ------------------------------------------------------------------------------


def render_soak(result: SoakResult, opts: SoakOptions) -> str:
    lines = [
        (
            f"Soak: {opts.minutes:g} min, {result.stations:,} stations (MeterValues every {opts.meter_every_s:g} s "
            f"each), a setpoint every {opts.setpoint_every_s:g} s from the master, which reconnects every "
            f"{opts.master_reconnect_every_s:g} s; the CSMS drops every {opts.csms_drop_every_s:g} s from "
            f"{opts.csms_first_drop_s:g} s on, down {opts.csms_down_s:g} s each time. Warm-up: the first "
            f"{opts.warmup_s:g} s."
        ),
        "",
        (
            "| t (min) | RSS (MiB) | open FDs | asyncio tasks | Python blocks (k) | CPU (s) | store + WAL + outbox (MiB) "
            "| MeterValues counted | setpoints confirmed | master reconnects | CSMS drops | load |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result.samples:
        lines.append(
            f"| {s['t_s'] / 60:.1f} | {s['rss_kb'] / 1024:.1f} | {s['fds']:,} | {s['tasks']:,} "
            f"| {s['py_blocks'] / 1000:,.0f} | {s['cpu_s']:.1f} | {s['store_bytes'] / 2**20:,.1f} | {s['meter_values']:,} "
            f"| {s['setpoints_positive']:,} | {s['master_reconnects']} | {s['csms_drops']} | {s['load']:.1f} |"
        )
    v = result.verdict
    if v:
        slope = v["rss_slope_kb_per_min"]
        lines += [
            "",
            (
                f"After the warm-up ({v['from_t_s'] / 60:.1f} → {v['to_t_s'] / 60:.1f} min): RSS "
                f"{v['rss_growth_kb']:+,} KiB ({'—' if slope is None else f'{slope:+,.0f}'} KiB/min fitted), of which "
                f"c104's known keep accounts for ~{v['c104_expected_kb']:,.0f} KiB; unexplained "
                f"{v['unexplained_kb']:+,.0f} KiB against a tolerance of {v['tolerance_kb']:,.0f} KiB: "
                f"**RSS {'flat' if v['rss_flat'] else 'growing'}**. Python's allocator: "
                f"{v['py_blocks_growth']:+,} blocks. FDs {v['fds_min']:,}–{v['fds_max']:,} "
                f"(**{'flat' if v['fds_flat'] else 'growing'}**), tasks {v['tasks_min']:,}–{v['tasks_max']:,} "
                f"(**{'flat' if v['tasks_flat'] else 'growing'}**)."
            ),
        ]
    m, meter = result.master, result.meter
    latencies = sorted(m.get("latencies_s") or [])
    if latencies:
        lines.append(
            f"- master: {m['sent']} setpoints, {m['positive']} confirmed, {m['negative']} negative, {m['failed']} "
            f"unanswered; ACT_CON p50 {statistics.median(latencies) * 1000:.1f} ms, p99 "
            f"{percentile(latencies, 99) * 1000:.1f} ms; {m['reconnects']} reconnects; "
            f"{m['frames_after_connect']} frames within t1 of a connect (c104 keeps ~{C104_BYTES_PER_FRAME_IN_T1} B each)"
        )
    if meter:
        lines.append(
            f"- stations: {meter['sent']:,} MeterValues sent, {meter['answered']:,} answered, {meter['failed']} "
            f"failed, {meter['skipped']} skipped (previous one unanswered); the CSMS received "
            f"{result.csms_meter_values if result.csms_meter_values is not None else '—'} (relayed live or "
            f"replayed from the outbox); {result.csms_drops} CSMS drops"
        )
    lines.append(
        f"- connect+boot {'—' if result.connect_boot_s is None else f'{result.connect_boot_s:.1f}'} s; load "
        f"{_num(result.load_start)} → {_num(result.load_end)}; status: "
        + ("ok" if result.ok else "FAILED: " + "; ".join(result.errors)[:300])
    )
    lines += [f"- note: {n}" for n in result.notes]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
