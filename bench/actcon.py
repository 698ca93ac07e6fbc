"""ACT_CON latency from the IEC 104 wire while the stations are being worked on.

The gateway runs with its IEC 104 outstation (c104, production defaults) and N stations;
the DSO's master (``bench.master``: the project's ``Iec104Master`` in a process of its own)
sends C_SE_NC_1 setpoints and times each from the write to the ACT_CON it has read. The
store is a file on disk: the fsync of each accepted setpoint is inside the figure.

Four series, same gateway, same master, in this order:

* **at rest**: the setpoint in force, repeated 100-200 ms apart: the core confirms it and
  has nothing to send (the floor: c104, the hand-over to the loop, the core, the store);
* **starting a fan-out** and **inside a running fan-out**, in pairs: a setpoint that changes
  every station's share, then, at a random moment within the fan-out it started (10-70 % of
  its duration, measured once before), a second one that changes them again; the gateway
  settles before the next pair. One fan-out at a time: what a DSO that sends a correction
  while the last one is on its way sees;
* **stream**: setpoints 100-200 ms apart, alternating N x 11 kW and N x 10 kW, each
  landing while the previous one's profiles are on their way. From about 1,000 stations the
  gateway cannot finish a fan-out in that time, so this series measures a gateway kept busy
  without a pause (the loop's backlog is in the figure).

For every setpoint the gateway records how many stations were awaiting an answer to a
profile when it reached the core, how long it spent in ``submit_setpoint`` (the core's
check, the store's write and fsync, the confirmation: "core + store"), and how long c104's
callback thread waited for its answer (decoding, the hand-over to the asyncio loop, the
core, the way back: "c104 thread"). ACT_CON − c104 thread is c104 writing the answer, the
wire and the master reading it; c104 thread − core + store is time spent waiting for the loop.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.harness import BenchError, Child, connect_fleet, cpu_s, folder_bytes, load_avg_1m, percentile
from bench.master import run_master
from bench.server_process import run_server
from bench.stations import V16, run_simulator

SHARES_W = (10000.0, 11000.0)  # per-station shares the series alternate between
PROBE_SHARE_W = 10500.0  # the second setpoint of a pair
BOOKKEEPING_S = 120.0  # the gateway answers these on its loop: a loop blocked for long must not end the case
TARGET_P99_S = 0.010  # issue 13: ACT_CON p99 <= 10 ms, fsync included, during a fan-out
SERIES = ("rest", "start", "inside", "stream")
SERIES_NAMES = {
    "rest": "at rest (limit in force repeated)",
    "start": "starting a fan-out",
    "inside": "inside a running fan-out",
    "stream": "stream, 100–200 ms apart",
}


@dataclass
class ActconOptions:
    at_rest: int = 50
    pairs: int = 40  # a setpoint starting a fan-out + one inside it
    stream: int = 200
    gap_min_s: float = 0.1
    gap_max_s: float = 0.2
    pairs_max_s: float = 180.0  # bounds: a gateway answering slowly (2 s timeouts) ends a series early
    stream_max_s: float = 90.0
    connect_concurrency: int = 100
    timeout_s: float = 120.0
    seed: int = 809


@dataclass
class ActconResult:
    stations: int
    version: str = V16
    connect_boot_s: float | None = None
    fan_out_s: float | None = None  # one setpoint -> the gateway settled (sets the probes' offsets)
    series: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SERIES})
    profiles: dict[str, int] = field(default_factory=dict)  # SetChargingProfile answered per series
    cpu_s: dict[str, float] = field(default_factory=dict)  # gateway CPU per series
    wall_s: dict[str, float] = field(default_factory=dict)
    store_bytes: dict[str, int] = field(default_factory=dict)  # the store's growth per series (file + WAL)
    loop_lag: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # the gateway loop's lateness per series
    load_start: float | None = None
    load_end: float | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def stats(self, series: str, key: str = "latency_s") -> dict[str, float]:
        values = sorted(r[key] for r in self.series.get(series, []) if r.get(key) is not None)
        if not values:
            return {}
        return {
            "n": len(values),
            "p50": statistics.median(values),
            "p99": percentile(values, 99),
            "max": values[-1],
        }

    def landed_in_fan_out(self, series: str) -> int:
        return sum(1 for r in self.series.get(series, []) if (r.get("awaiting") or 0) > 0)


class _Run:
    def __init__(
        self, result: ActconResult, opts: ActconOptions, server: Child, sim: Child, master: Child, store: str
    ):
        self.result, self.opts, self.server, self.sim, self.master = result, opts, server, sim, master
        self.store = store
        self.rng = random.Random(opts.seed)
        self.n = result.stations

    def send(
        self, values_w: list[float], gaps_s: list[float], max_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Send the setpoints from the master; pair each with what the gateway saw of it.

        c104's callback thread and the core record each command; a command the core never took
        (the outstation gave up after ``iec104.command_timeout_s``) has no core record, so they
        are paired by time: the core record that arrived while the callback waited.
        """
        server = self.server
        core_before = len(server.request("setpoints_seen", BOOKKEEPING_S))
        thread_before = len(server.request("commands_seen", BOOKKEEPING_S))
        wait_s = sum(gaps_s) + len(values_w) * 10.0 + 30
        if max_s is not None:
            wait_s = min(wait_s, max_s + 60)
        sent = self.master.request(
            "setpoints", wait_s, values_w=values_w, gaps_s=gaps_s, timeout_s=10.0, max_s=max_s
        )
        core = list(server.request("setpoints_seen", BOOKKEEPING_S, since=core_before))
        thread = server.request("commands_seen", BOOKKEEPING_S, since=thread_before)
        if not len(sent) == len(thread) >= len(core):
            raise BenchError(
                f"the master sent {len(sent)} setpoints, c104 handed over {len(thread)}, the core saw {len(core)}"
            )
        rows = []
        for answer, (entered, thread_s) in zip(sent, thread, strict=True):
            row: dict[str, Any] = {**answer, "thread_s": thread_s, "core_s": None, "awaiting": None}
            row["accepted_by_core"] = None  # None: the core never took it
            if core and entered <= core[0][0] <= entered + thread_s:
                _at, core_s, awaiting, accepted, _peer = core.pop(0)
                row.update(core_s=core_s, awaiting=awaiting, accepted_by_core=accepted)
                row["loop_wait_s"] = max(0.0, thread_s - core_s)
            row["c104_wire_s"] = max(0.0, answer["latency_s"] - thread_s)
            rows.append(row)
        if core:
            raise BenchError(f"{len(core)} setpoints reached the core outside any command c104 handed over")
        return rows

    def gaps(self, count: int) -> list[float]:
        return [self.rng.uniform(self.opts.gap_min_s, self.opts.gap_max_s) for _ in range(max(0, count - 1))]

    def ready(self) -> None:
        t = self.opts.timeout_s
        ready = self.server.request("wait_ready", t, stations=self.n, timeout_s=t / 2)
        if not ready["ok"]:
            raise BenchError(
                f"gateway not settled with {self.n} stations: {self.server.request('diagnose', 30)}"
            )

    def profiles_received(self) -> int:
        return int(self.sim.request("profile_summary", BOOKKEEPING_S, prefix="S")["profiles_received"])

    def measured(self, name: str, work: Any) -> Any:
        """Run ``work`` and keep the gateway CPU, wall time and profiles it took under ``name``."""
        received, cpu_before, started = self.profiles_received(), cpu_s(self.server.pid), time.monotonic()
        stored = folder_bytes(self.store)
        self.server.request("loop_lag", BOOKKEEPING_S)
        value = work()
        self.result.loop_lag[name] = self.server.request("loop_lag", BOOKKEEPING_S)
        self.result.cpu_s[name] = cpu_s(self.server.pid) - cpu_before
        self.result.store_bytes[name] = folder_bytes(self.store) - stored
        self.result.wall_s[name] = time.monotonic() - started
        self.result.profiles[name] = self.profiles_received() - received
        return value

    def at_rest(self, in_force_w: float) -> None:
        count = self.opts.at_rest
        self.result.series["rest"] = self.measured(
            "rest", lambda: self.send([in_force_w] * count, self.gaps(count))
        )

    def pairs(self) -> float:
        """A setpoint that starts a fan-out, and one inside it; settled between pairs. The last share."""
        result, n = self.result, self.n
        # How long one fan-out takes here: one setpoint, until the gateway has settled.
        started = time.monotonic()
        self.send([n * SHARES_W[1]], [])
        self.ready()
        result.fan_out_s = fan_out_s = time.monotonic() - started

        def work() -> None:
            ends = time.monotonic() + self.opts.pairs_max_s
            for index in range(self.opts.pairs):
                if time.monotonic() > ends:
                    result.notes.append(
                        f"pairs stopped after {index} of {self.opts.pairs}: {self.opts.pairs_max_s:g} s"
                    )
                    break
                offset = self.rng.uniform(0.1, 0.7) * fan_out_s
                first, second = self.send([n * SHARES_W[index % 2], n * PROBE_SHARE_W], [offset])
                result.series["start"].append(first)
                result.series["inside"].append(second)
                applied.extend((first, second))
                self.ready()
                time.sleep(0.2)

        applied: list[dict[str, Any]] = []
        self.measured("pairs", work)
        return _last_applied(applied, n)

    def stream(self) -> float:
        count = self.opts.stream
        values = [self.n * SHARES_W[(i + 1) % 2] for i in range(count)]

        def work() -> list[dict[str, Any]]:
            rows = self.send(values, self.gaps(count), max_s=self.opts.stream_max_s)
            self.ready()
            return rows

        rows = self.result.series["stream"] = self.measured("stream", work)
        if len(rows) < count:
            self.result.notes.append(
                f"stream stopped after {len(rows)} of {count} setpoints: {self.opts.stream_max_s:g} s"
            )
        return _last_applied(rows, self.n)

    def check_held(self, share_w: float, when: str) -> None:
        held = self.sim.request("profile_summary", 30, prefix="S")["top_level_limits"]
        expected = {f"{share_w:g} W": self.n}
        if held != expected:
            self.result.errors.append(f"{when}, stations hold {held}: expected {expected}")


def run_actcon_case(stations: int, opts: ActconOptions) -> ActconResult:
    """One gateway with ``stations`` stations and a master; never raises BenchError."""
    result = ActconResult(stations)
    result.load_start = load_avg_1m()
    t = opts.timeout_s
    folder = tempfile.TemporaryDirectory(prefix="ocpp809-actcon-")
    server = Child(
        "server-gateway", run_server, "gateway", stations, {"iec104": True, "store_dir": folder.name}
    )
    sim: Child | None = None
    master: Child | None = None
    try:
        started = server.request("start", 60)
        url = f"ws://127.0.0.1:{started['port']}"
        sim = Child("stations", run_simulator)
        boot = connect_fleet(sim, url, stations, opts.connect_concurrency, t)
        result.connect_boot_s = boot["elapsed_s"]
        master = Child("master", run_master)
        run = _Run(result, opts, server, sim, master, folder.name)
        run.ready()
        master.request("connect", 30, host="127.0.0.1", port=started["iec104_port"])

        in_force = stations * SHARES_W[0]  # every station settles on it first; at rest repeats it
        if not run.send([in_force], [])[0]["positive"]:
            raise BenchError(f"the first setpoint ({in_force:g} W) was refused")
        run.ready()
        time.sleep(0.5)
        if opts.at_rest:
            run.at_rest(in_force)
        if opts.pairs:
            run.check_held(run.pairs(), "after the pairs")
        if opts.stream:
            run.check_held(run.stream(), "after the stream")
        _check(result)
    except BenchError as exc:
        result.errors.append(str(exc))
    finally:
        result.load_end = load_avg_1m()
        try:
            server.request("quiet", 10)  # the master and the stations are about to leave
        except BenchError:
            pass
        if master is not None:
            master.close()
        if sim is not None:
            sim.close()
        server.close()
        folder.cleanup()
    return result


def _last_applied(rows: list[dict[str, Any]], stations: int) -> float:
    """The share the stations must end on: the last setpoint the core accepted (a setpoint answered
    negatively may still have been applied: the core's record says)."""
    for row in reversed(rows):
        if row["accepted_by_core"]:
            return float(row["value_w"]) / stations
    raise BenchError("the core accepted none of the series' setpoints")


def _check(result: ActconResult) -> None:
    rows = [r for series in result.series.values() for r in series]
    not_taken = [r for r in rows if not r["positive"] and r["accepted_by_core"] is None]
    applied = [r for r in rows if not r["positive"] and r["accepted_by_core"]]
    refused = [r for r in rows if not r["positive"] and r["accepted_by_core"] is False]
    if not_taken:
        result.errors.append(
            f"{len(not_taken)} valid setpoints answered negatively because the core did not take them within "
            "iec104.command_timeout_s (never applied)"
        )
    if applied:
        result.errors.append(
            f"{len(applied)} setpoints answered NEGATIVELY although the core accepted, stored and applied them "
            f"(its answer reached c104's thread after command_timeout_s; c104 thread waited up to "
            f"{max(r['thread_s'] for r in applied):.2f} s)"
        )
    if refused:
        result.errors.append(f"{len(refused)} setpoints refused by the core, e.g. {refused[0]}")
    if result.profiles.get("rest"):
        result.notes.append(
            f"{result.profiles['rest']} profiles went out during the at-rest series (expected none)"
        )
    inside = result.series["inside"]
    landed = result.landed_in_fan_out("inside")
    if inside and landed < len(inside):
        result.notes.append(
            f"{len(inside) - landed} of {len(inside)} 'inside' setpoints reached the core after the fan-out "
            "had ended (no station awaiting an answer): counted anyway"
        )


# -- output ------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def _pair(stats: dict[str, float]) -> str:
    return "—" if not stats else f"{_ms(stats['p50'])} / {_ms(stats['p99'])}"


def render_actcon(results: list[ActconResult], opts: ActconOptions) -> str:
    head = (
        "| stations | series | setpoints | ACT_CON p50 / p99 / max (ms) | vs at rest (p50, p99) "
        "| core + store (fsync) p50 / p99 (ms) | waiting for the loop p50 / p99 (ms) "
        "| c104 + wire p50 / p99 (ms) | stations awaiting a profile at arrival (median) "
        "| negative ACT_CON: not taken / applied | gateway CPU (s) / wall (s) | status |"
    )
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        status = "ok" if r.ok else "FAILED (notes)"
        rest = r.stats("rest")
        for name in SERIES:
            rows = r.series.get(name, [])
            if not rows:
                continue
            s = r.stats(name)
            ratio = (
                f"{s['p50'] / rest['p50']:.1f}× / {s['p99'] / rest['p99']:.1f}×"
                if rest and name != "rest"
                else ""
            )
            awaiting = [a["awaiting"] for a in rows if a.get("awaiting") is not None]
            key = "pairs" if name in ("start", "inside") else name
            cpu = r.cpu_s.get(key)
            wall = r.wall_s.get(key)
            cpu_text = "—" if cpu is None or wall is None else f"{cpu:.1f} / {wall:.1f}"
            lines.append(
                f"| {r.stations} | {SERIES_NAMES[name]} | {len(rows)} "
                f"| {_ms(s['p50'])} / {_ms(s['p99'])} / {_ms(s['max'])} | {ratio} "
                f"| {_pair(r.stats(name, 'core_s'))} | {_pair(r.stats(name, 'loop_wait_s'))} "
                f"| {_pair(r.stats(name, 'c104_wire_s'))} "
                f"| {statistics.median(awaiting) if awaiting else 0:,.0f} "
                f"| {_negatives(rows)} | {cpu_text} | {status} |"
            )
    lines += ["", "| target (gateway) | measured | met |", "|---|---:|---|"]
    for r in results:
        for name in ("inside", "stream"):
            s = r.stats(name)
            if not s:
                continue
            met = r.ok and s["p99"] <= TARGET_P99_S
            lines.append(
                f"| ACT_CON p99 ≤ {TARGET_P99_S * 1000:.0f} ms, fsync included, {SERIES_NAMES[name]} "
                f"({r.stations:,} stations) | {_ms(s['p99'])} ms | {'yes' if met else 'no'} |"
            )
    notes = []
    for r in results:
        case = f"ACT_CON, {r.stations} stations"
        notes.append(
            f"- {case}: load {_num(r.load_start)} → {_num(r.load_end)}; connect+boot {_num(r.connect_boot_s, 's')};"
            f" one fan-out (setpoint → gateway settled) {_ms(r.fan_out_s)} ms"
            + "".join(
                f"; {SERIES_NAMES[name]}: {r.landed_in_fan_out(name)} of {len(r.series[name])} reached the core"
                " while stations awaited a profile"
                for name in ("inside", "stream")
                if r.series.get(name)
            )
        )
        if r.loop_lag:
            notes.append(
                f"- {case}: the gateway's event loop ran a 20 ms timer late by at most "
                + ", ".join(
                    f"{_ms(lag.get('max_s'))} ms ({key}, {lag.get('over_100ms', 0)} ticks over 100 ms)"
                    for key, lag in r.loop_lag.items()
                )
            )
        for key, label in (("pairs", "the pairs"), ("stream", "the stream")):
            if key in r.profiles:
                count = len(r.series["start"]) * 2 if key == "pairs" else len(r.series["stream"])
                notes.append(
                    f"- {case}: {r.profiles[key]:,} SetChargingProfile answered over {label} "
                    f"({r.profiles[key] / r.stations / max(1, count):.2f} per station and setpoint; "
                    "below 1: the gateway coalesced setpoints); the store (file + WAL) grew "
                    f"{r.store_bytes.get(key, 0) / 2**20:,.1f} MiB"
                )
        notes += [f"- note, {case}: {n}" for n in r.notes]
        notes += [f"- FAILED, {case}: {e}" for e in r.errors]
    return "\n".join(lines + [""] + notes)


def _negatives(rows: list[dict[str, Any]]) -> str:
    not_taken = sum(1 for r in rows if not r["positive"] and r["accepted_by_core"] is None)
    applied = sum(1 for r in rows if not r["positive"] and r["accepted_by_core"])
    return f"{not_taken} / {applied}"


def _num(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:.1f}{unit}"


def main(argv: list[str] | None = None) -> int:
    """One size, the four series, the table: ``python -m bench.fanout --modes actcon`` for one N.

    To see what a change to the gateway costs, run the same command in a worktree of each
    commit, back to back (bench/README.md, "Measuring a commit while others edit the tree").
    """
    parser = argparse.ArgumentParser(prog="python -m bench.actcon", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stations", type=int, default=1000, help="stations behind the gateway (default 1000)"
    )
    parser.add_argument("--quick", action="store_true", help="20 at rest, 15 pairs, a stream of 60")
    parser.add_argument("--rest", type=int, default=None, help="setpoints at rest (default 50, quick 20)")
    parser.add_argument("--pairs", type=int, default=None, help="pairs (default 40, quick 15)")
    parser.add_argument(
        "--setpoints", type=int, default=None, help="setpoints in the stream (default 200, quick 60)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every setpoint's figures to FILE")
    args = parser.parse_args(argv)
    quick = args.quick
    opts = ActconOptions(
        at_rest=(20 if quick else 50) if args.rest is None else args.rest,
        pairs=(15 if quick else 40) if args.pairs is None else args.pairs,
        stream=(60 if quick else 200) if args.setpoints is None else args.setpoints,
    )
    from bench.fanout import run_line  # the commit line; fanout imports this module, so not at the top

    result = run_actcon_case(args.stations, opts)
    print(run_line())
    print(render_actcon([result], opts))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(asdict(result), handle, indent=1)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
