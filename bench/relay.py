"""Relay benchmark (issue 11, ``--modes relay``): what relaying the stations to the operator's
CSMS costs, verbatim and translated, against the gateway answering them itself and against
the stations talking straight to the CSMS, all in the same run.

Cases, each with N stations (OCPP 1.6, charging: StartTransaction, ``meter_per_tx``
MeterValues of the transaction, StopTransaction, again and again; ``bench.relay_stations``):

* ``direct``: the stations talk straight to the fast CSMS (``bench.fast_csms``, OCPP 1.6):
  the baseline, run first and again last, its two runs pooled;
* ``standalone``: the gateway answers the stations itself (no ``upstream.csms_url``);
* ``relay``: the gateway relays each station verbatim to the fast CSMS (``csms_protocol =
  "station"``, 1.6 links);
* ``translated``: the gateway translates each station for the fast CSMS in 2.0.1
  (``csms_protocol = "ocpp2.0.1"``).

Per case, in separate processes on 127.0.0.1 (stations, gateway, CSMS, each started and
stopped here, OS-chosen ports): the stations connect and boot, the gateway settles (every
station holding its profile), then

* **opening** (not timed): every station starts a transaction and stands at a random point of
  its cycle, so the loads mix the calls 1 : ``meter_per_tx`` : 1 from the start; the gateway
  settles again (the core reallocates as the transactions start);
* **paced**: ``rate_per_s`` calls a second in all for ``paced_s`` (well below what any
  case keeps up with): each call's round trip at the station, from just before its CALL is
  written to its CALLRESULT; **added latency** = a percentile of the case's round trips
  minus the same percentile of the baseline's (``direct``) in the same run;
* **burst**: every station sends ``burst_calls`` calls back to back (one outstanding each):
  **calls answered per second** = calls ÷ wall time, the most the case keeps up with on this
  machine; the gateway's, the CSMS's and the stations' CPU (``/proc``) per call.

A case fails (and says why) unless every call was answered with a CALLRESULT, and, through
the gateway, the CSMS received every call (verbatim: each 1.6 call; translated: one
TransactionEvent per call) and the gateway answered none locally.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.fast_csms import run_fast_csms
from bench.harness import BenchError, Child, connect_fleet, cpu_s, load_avg_1m, machine_cpu_s, percentile
from bench.relay_gateway import run_relay_gateway
from bench.relay_stations import ACTIONS, METER, START, STOP, run_tx_stations
from bench.stations import V16, V201

# case -> its label in the tables
CASES: dict[str, str] = {
    "direct": "baseline: stations → CSMS 1.6",
    "standalone": "no relay: gateway standalone",
    "relay": "direct relay: gateway → CSMS 1.6, verbatim",
    "translated": "translated relay: gateway → CSMS 2.0.1",
}
GATEWAY_CASES = ("standalone", "relay", "translated")
RUN_ORDER = ("direct", "standalone", "relay", "translated", "direct")


@dataclass
class RelayOptions:
    stations: tuple[int, ...] = (1000,)
    rate_per_s: float = 200.0  # paced load, calls a second in all
    paced_s: float = 30.0
    burst_calls: int = 24  # per station, back to back
    meter_per_tx: int = 10  # MeterValues between a StartTransaction and its StopTransaction
    connect_concurrency: int = 100
    timeout_s: float = 120.0
    profile: bool = False  # cProfile the gateway during the burst (its times inflated)


@dataclass
class RelayCase:
    case: str
    stations: int
    run: int = 1  # the baseline runs twice (first and last)
    connect_boot_s: float | None = None
    paced: dict[str, Any] = field(default_factory=dict)  # the stations' log of the paced load
    burst: dict[str, Any] = field(default_factory=dict)
    paced_cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU during the paced load
    burst_cpu_s: dict[str, float] = field(default_factory=dict)
    csms_calls: dict[str, int] = field(default_factory=dict)  # what the CSMS received during the loads
    relay_counters: dict[str, float] = field(default_factory=dict)  # the gateway's, during the loads
    server_calls: dict[str, int] = field(default_factory=dict)  # gateway -> stations during the loads
    loop_lag_paced_s: float | None = None  # how late the gateway's loop ran a 20 ms timer, at most
    loop_lag_burst_s: float | None = None
    # CPU the rest of the machine used meanwhile (other sessions' work), in cores: phase -> (busy, steal)
    others_cores: dict[str, tuple[float, float]] = field(default_factory=dict)
    load_avg_1m: float | None = None
    profile_burst: str = ""  # the gateway's cProfile during the burst (--profile)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def round_trips(self, phase: str, action: str | None = None) -> list[float]:
        log = self.paced if phase == "paced" else self.burst
        lat = log.get("latencies_s", {})
        values = lat.get(action, []) if action else [t for a in ACTIONS for t in lat.get(a, [])]
        return sorted(values)

    @property
    def answered(self) -> int:
        return sum(self.burst.get("answered", {}).values())

    @property
    def rate_per_s(self) -> float | None:
        elapsed = self.burst.get("elapsed_s")
        return self.answered / elapsed if elapsed and self.answered else None

    def cpu_us_per_call(self, process: str) -> float | None:
        used = self.burst_cpu_s.get(process)
        return None if used is None or not self.answered else used / self.answered * 1e6


@dataclass
class RelayResult:
    stations: int
    cases: list[RelayCase] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    @property
    def errors(self) -> list[str]:
        return [f"{c.case}: {e}" for c in self.cases for e in c.errors]

    def baseline(self, phase: str, action: str | None = None) -> list[float]:
        """The baseline's round trips, its runs pooled."""
        pooled = [t for c in self.cases if c.case == "direct" for t in c.round_trips(phase, action)]
        return sorted(pooled)

    def baseline_rate(self) -> float | None:
        rates = [r for c in self.cases if c.case == "direct" and (r := c.rate_per_s) is not None]
        return statistics.median(rates) if rates else None


def run_relay(n: int, opts: RelayOptions, progress: Any = None) -> RelayResult:
    """Every case at ``n`` stations, in ``RUN_ORDER``; never raises BenchError."""
    result = RelayResult(n)
    for index, case in enumerate(RUN_ORDER):
        if progress is not None:
            progress(f"relay: {n} stations, {case} ... (load {load_avg_1m():.1f})")
        started = time.monotonic()
        run = 1 + sum(1 for c in RUN_ORDER[:index] if c == case)
        one = run_relay_case(case, n, opts, run)
        result.cases.append(one)
        if progress is not None:
            state = "ok" if one.ok else f"FAILED: {one.errors}"
            progress(f"  done in {time.monotonic() - started:.0f} s, {state}")
    return result


def run_relay_case(case: str, n: int, opts: RelayOptions, run: int = 1) -> RelayCase:
    """One case: its processes started, measured and stopped; never raises BenchError."""
    result = RelayCase(case, n, run)
    t = opts.timeout_s
    csms: Child | None = None
    gateway: Child | None = None
    sim: Child | None = None
    try:
        processes: dict[str, Child] = {}
        if case != "standalone":
            csms = processes["csms"] = Child("fast-csms", run_fast_csms)
            csms_url = f"ws://127.0.0.1:{csms.request('start', 60)['port']}"
        else:
            csms_url = ""
        if case == "direct":
            url = csms_url
        else:
            protocol = "ocpp2.0.1" if case == "translated" else "station"
            gateway = processes["gateway"] = Child(
                "relay-gateway", run_relay_gateway, n, "" if case == "standalone" else csms_url, protocol
            )
            url = f"ws://127.0.0.1:{gateway.request('start', 60)['port']}"
        sim = processes["stations"] = Child("relay-stations", run_tx_stations)
        boot = connect_fleet(sim, url, n, opts.connect_concurrency, t)
        result.connect_boot_s = boot["elapsed_s"]
        if gateway is not None:
            ready = gateway.request("wait_ready", t, stations=n, timeout_s=t / 2)
            if not ready["ok"]:
                raise BenchError(f"gateway not settled with {n} stations: {ready}")
        if csms is not None:
            _wait_links(csms, n, t / 2)
        _measure(result, opts, processes, sim, csms, gateway)
    except BenchError as exc:
        result.errors.append(str(exc))
    finally:
        result.load_avg_1m = load_avg_1m()
        if gateway is not None:
            try:
                gateway.request("quiet", 10)
            except BenchError:
                pass
        for child in (sim, gateway, csms):
            if child is not None:
                child.close()
    return result


def _wait_links(csms: Child, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (links := int(csms.request("connected", 10))) < n:
        if time.monotonic() > deadline:
            raise BenchError(f"the CSMS holds {links} links of {n}")
        time.sleep(0.1)


def _cpu(processes: dict[str, Child]) -> dict[str, float]:
    return {name: cpu_s(child.pid) for name, child in processes.items()}


class _Others:
    """What the rest of the machine used over a phase: its busy CPU less the bench's processes', and
    the hypervisor's steal, each in cores (CPU seconds per wall second)."""

    def __init__(self, ours: dict[str, float]) -> None:
        self.ours, self.at = ours, time.monotonic()
        self.busy, self.steal = machine_cpu_s()

    def cores(self, ours: dict[str, float]) -> tuple[float, float]:
        busy, steal = machine_cpu_s()
        wall = max(time.monotonic() - self.at, 1e-9)
        mine = sum(ours[name] - self.ours[name] for name in ours)
        return round((busy - self.busy - mine) / wall, 2), round((steal - self.steal) / wall, 2)


def _measure(
    result: RelayCase,
    opts: RelayOptions,
    processes: dict[str, Child],
    sim: Child,
    csms: Child | None,
    gateway: Child | None,
) -> None:
    t = opts.timeout_s
    csms_before = csms.request("counts", 30) if csms is not None else None
    relay_before = gateway.request("relay_counters", 10) if gateway is not None else {}
    opening = sim.request(
        "tx_open",
        t,
        prefix="S",
        rate_per_s=max(opts.rate_per_s, 500.0),
        meter_per_tx=opts.meter_per_tx,
        timeout_s=t / 2,
    )
    if gateway is not None:
        ready = gateway.request("wait_ready", t, stations=result.stations, timeout_s=t / 2)
        if not ready["ok"]:
            raise BenchError(f"gateway not settled after the transactions started: {ready}")
    time.sleep(1.0)  # what the start caused (profiles, configuration) drains before anything is timed
    calls_before = sim.request("profile_summary", 30, prefix="S")["server_calls"]
    if gateway is not None:
        gateway.request("loop_lag", 10)

    cpu0 = _cpu(processes)
    others = _Others(cpu0)
    result.paced = sim.request(
        "tx_paced",
        opts.paced_s + t,
        prefix="S",
        rate_per_s=opts.rate_per_s,
        duration_s=opts.paced_s,
        meter_per_tx=opts.meter_per_tx,
        timeout_s=t / 2,
    )
    cpu1 = _cpu(processes)
    result.others_cores["paced"] = others.cores(cpu1)
    others = _Others(cpu1)
    if gateway is not None:
        result.loop_lag_paced_s = gateway.request("loop_lag", 10)["max_s"]
    if opts.profile and gateway is not None:
        gateway.request("profile_start", 10)
    result.burst = sim.request(
        "tx_burst",
        t * 2,
        prefix="S",
        calls_per_station=opts.burst_calls,
        meter_per_tx=opts.meter_per_tx,
        timeout_s=t,
    )
    cpu2 = _cpu(processes)
    result.others_cores["burst"] = others.cores(cpu2)
    if gateway is not None:
        result.loop_lag_burst_s = gateway.request("loop_lag", 10)["max_s"]
    if opts.profile and gateway is not None:
        result.profile_burst = gateway.request("profile_stop", 60)
    result.paced_cpu_s = {name: cpu1[name] - cpu0[name] for name in cpu0}
    result.burst_cpu_s = {name: cpu2[name] - cpu1[name] for name in cpu0}
    finish = sim.request("tx_finish", t, prefix="S", meter_per_tx=opts.meter_per_tx, timeout_s=t / 2)
    calls_after = sim.request("profile_summary", 30, prefix="S")["server_calls"]
    result.server_calls = {
        action: count - calls_before.get(action, 0)
        for action, count in calls_after.items()
        if count - calls_before.get(action, 0)
    }
    logs = (("opening", opening), ("paced", result.paced), ("burst", result.burst), ("closing", finish))
    for phase, log in logs:
        _check_answered(result, phase, log)
    if result.paced["skipped"]:
        result.errors.append(
            f"did not keep up with the paced load: {result.paced['skipped']:,} turns skipped (a call still"
            f" unanswered after {result.stations / opts.rate_per_s:g} s): its round trips are queueing"
        )
    sent = {a: sum(log["answered"][a] for _phase, log in logs) for a in ACTIONS}
    if csms is not None and csms_before is not None:
        time.sleep(0.5)  # a relayed call reaches the CSMS before its answer returns; this is margin only
        after = csms.request("counts", 30)
        result.csms_calls = {
            key: count - csms_before["calls"].get(key, 0)
            for key, count in after["calls"].items()
            if count - csms_before["calls"].get(key, 0)
        }
        if after["unanswered"]:
            result.errors.append(f"the CSMS had no answer for {after['unanswered']}")
        _check_csms(result, sent)
    if gateway is not None:
        after_relay = gateway.request("relay_counters", 10)
        result.relay_counters = {k: after_relay[k] - relay_before.get(k, 0.0) for k in after_relay}
        result.relay_counters["links_up"] = after_relay["links_up"]
        if result.relay_counters.get("answered_locally"):
            result.errors.append(
                f"the gateway answered {result.relay_counters['answered_locally']:.0f} station calls locally"
                " (CSMS link down or slower than upstream.call_timeout_s)"
            )


def _check_answered(result: RelayCase, phase: str, log: dict[str, Any]) -> None:
    sent, answered = sum(log["sent"].values()), sum(log["answered"].values())
    if log["failed"] or log["unanswered"] or sent != answered:
        result.errors.append(
            f"{phase}: {answered} of {sent} calls answered ({log['failed']} failed, {log['call_errors']} CALLERRORs,"
            f" {log['unanswered']} unanswered): {log['errors']}"
        )


def _check_csms(result: RelayCase, sent: dict[str, int]) -> None:
    """The CSMS must have received every call the stations had answered, once."""
    got = result.csms_calls
    if result.case == "translated":
        expected = {f"{V201} TransactionEvent": sum(sent.values())}
    else:
        expected = {f"{V16} {action}": count for action, count in sent.items() if count}
    for key, count in expected.items():
        if got.get(key, 0) != count:
            result.errors.append(
                f"the CSMS received {got.get(key, 0)} {key}, the stations had {count} answered"
            )


# -- output --------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    ms = value * 1000
    return f"{ms:.2f}" if abs(ms) < 10 else f"{ms:.1f}" if abs(ms) < 100 else f"{ms:.0f}"


def _pair(values: list[float]) -> tuple[float | None, float | None]:
    return (percentile(values, 50), percentile(values, 99)) if values else (None, None)


def _added(case: list[float], base: list[float]) -> str:
    (c50, c99), (b50, b99) = _pair(case), _pair(base)
    if c50 is None or b50 is None or c99 is None or b99 is None:
        return "—"
    return f"{_signed_ms(c50 - b50)} / {_signed_ms(c99 - b99)}"


def _signed_ms(value: float) -> str:
    text = _ms(value)
    return text if text.startswith("-") else f"+{text}"


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "—" if value is None else format(value, fmt)


def _label(c: RelayCase) -> str:
    label = CASES[c.case]
    return f"{label}, run {c.run}" if c.case == "direct" else label


def render_relay(results: list[RelayResult], opts: RelayOptions) -> str:
    cycle = f"StartTransaction, {opts.meter_per_tx} MeterValues, StopTransaction"
    lines = [
        (
            f"OCPP 1.6 stations charging ({cycle}, over and over; one call outstanding per station). "
            f"Paced: {opts.rate_per_s:g} calls/s in all for {opts.paced_s:g} s; burst: {opts.burst_calls} calls per "
            f"station back to back. Added = the case's percentile minus the baseline's (stations straight to the "
            f"CSMS, runs 1 and 2 pooled). Strict validation on in the gateway."
        ),
        "",
        (
            "| stations | case | round trip p50 / p99 (ms) | **added p50 / p99** (ms) | MeterValues added p50 / p99 "
            "| StartTransaction added p50 / p99 | StopTransaction added p50 / p99 | calls timed | status |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        for c in r.cases:
            rt50, rt99 = _pair(c.round_trips("paced"))
            added = "" if c.case == "direct" else _added(c.round_trips("paced"), r.baseline("paced"))
            per_action = [
                "" if c.case == "direct" else _added(c.round_trips("paced", a), r.baseline("paced", a))
                for a in (METER, START, STOP)
            ]
            lines.append(
                f"| {r.stations} | {_label(c)} | {_ms(rt50)} / {_ms(rt99)} | {added} | {' | '.join(per_action)} "
                f"| {len(c.round_trips('paced')):,} | {_status(c)} |"
            )
    lines += [
        "",
        (
            "| stations | case | **calls answered/s** (burst) | × baseline | gateway CPU µs/call | CSMS CPU µs/call "
            "| stations CPU µs/call | gateway calls/s per core (10⁶ ÷ CPU µs/call) | round trip p50 / p99 in the burst (ms) "
            "| connect+boot (s) | other work on the machine, paced / burst (cores) | load |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        base_rate = r.baseline_rate()
        for c in r.cases:
            rate = c.rate_per_s
            ratio = "" if c.case == "direct" or rate is None or not base_rate else f"{rate / base_rate:.2f}×"
            gw = c.cpu_us_per_call("gateway")
            b50, b99 = _pair(c.round_trips("burst"))
            lines.append(
                f"| {r.stations} | {_label(c)} | {_num(rate)} | {ratio} | {_num(gw)} | {_num(c.cpu_us_per_call('csms'))} "
                f"| {_num(c.cpu_us_per_call('stations'))} | {_num(None if not gw else 1e6 / gw)} "
                f"| {_ms(b50)} / {_ms(b99)} | {_num(c.connect_boot_s, '.2f')} | {_others(c)} "
                f"| {_num(c.load_avg_1m, '.1f')} |"
            )
    notes = []
    for r in results:
        for c in r.cases:
            case = f"{_label(c)}, {r.stations} stations"
            paced_gw = c.paced_cpu_s.get("gateway")
            paced_calls = sum(c.paced.get("answered", {}).values())
            bits = [
                f"{paced_calls:,} paced calls answered ({c.paced.get('skipped', 0)} turns skipped: previous call unanswered)"
            ]
            if paced_gw is not None and paced_calls:
                bits.append(f"gateway CPU in the paced load {paced_gw / paced_calls * 1e6:,.0f} µs/call")
            if c.loop_lag_paced_s is not None:
                bits.append(
                    f"the gateway's loop ran a 20 ms timer late by at most {_ms(c.loop_lag_paced_s)} ms (paced),"
                    f" {_ms(c.loop_lag_burst_s)} ms (burst)"
                )
            if c.csms_calls:
                bits.append(f"CSMS received {c.csms_calls}")
            if c.relay_counters:
                rc = c.relay_counters
                bits.append(
                    f"relayed up {rc.get('relayed_up', 0):,.0f}, answered locally {rc.get('answered_locally', 0):,.0f}, "
                    f"outbox appended {rc.get('outbox_appended', 0):,.0f}"
                )
            if c.server_calls:
                bits.append(f"gateway → station calls during the paced load and the burst {c.server_calls}")
            notes.append(f"- {case}: " + "; ".join(bits))
            notes += [f"- note, {case}: {note}" for note in c.notes]
    return "\n".join(lines + [""] + notes)


def _others(c: RelayCase) -> str:
    paced, burst = c.others_cores.get("paced"), c.others_cores.get("burst")
    if paced is None or burst is None:
        return "—"
    steal = max(paced[1], burst[1])
    return f"{paced[0]:.2f} / {burst[0]:.2f}" + (f" (steal {steal:.2f})" if steal >= 0.05 else "")


def _status(c: RelayCase) -> str:
    return "ok" if c.ok else "FAILED: " + "; ".join(c.errors)[:300]
