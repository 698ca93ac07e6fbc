"""``ocpp809 scenario run`` and ``ocpp809 sim dso|stations|csms``: registered by the gateway CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

DEFAULT_TIME_SCALE = 60.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    scenario = sub.add_parser("scenario", help="verify a site: run scenarios T1-T4 against the whole gateway")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    run = scenario_sub.add_parser("run", help="run scenario files (default: every shipped scenario)")
    run.add_argument(
        "files", nargs="*", metavar="FILE", help="scenario TOML files (default: all of scenarios/)"
    )
    run.add_argument(
        "--report-dir",
        metavar="DIR",
        default="scenario-reports",
        help="where scenarios.json and scenarios.junit.xml go",
    )
    timing = run.add_mutually_exclusive_group()
    timing.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        metavar="N",
        help=f"divide long waits and the gateway's timeouts by N (default {DEFAULT_TIME_SCALE:g}: T2's 10 minutes in 10 s)",
    )
    timing.add_argument("--real-time", action="store_true", help="run every wait as written (time scale 1)")
    run.set_defaults(handler=_cmd_scenario_run)

    sim = sub.add_parser("sim", help="simulated peers for commissioning: DSO master, stations, CSMS")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)

    dso = sim_sub.add_parser(
        "dso", help="an IEC 104 master: send setpoints, print every ACT_CON and telemetry ASDU"
    )
    dso.add_argument("--host", default="127.0.0.1")
    dso.add_argument("--port", type=int, default=2404)
    dso.add_argument("--common-address", type=int, default=1)
    dso.add_argument(
        "--setpoint",
        type=float,
        action="append",
        default=[],
        metavar="W",
        help="send this setpoint (repeatable)",
    )
    dso.add_argument(
        "--ioa", type=int, default=None, help="setpoint IOA (default 100, or 101 with --time-tagged)"
    )
    dso.add_argument("--time-tagged", action="store_true", help="send C_SE_TC_1 with the current time")
    dso.add_argument("--interrogate", action="store_true", help="general interrogation after connecting")
    dso.add_argument(
        "--listen", type=float, default=5.0, metavar="S", help="keep printing telemetry for S seconds"
    )
    dso.add_argument("--record", metavar="FILE", help="also write every received ASDU as JSON lines")
    dso.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA")
    dso.add_argument("--tls-cert", metavar="FILE")
    dso.add_argument("--tls-key", metavar="FILE")
    dso.set_defaults(handler=_cmd_sim_dso)

    stations = sim_sub.add_parser(
        "stations", help="OCPP stations that charge, obey profiles and report meter values"
    )
    stations.add_argument(
        "--url", default="ws://127.0.0.1:9000", help="the central system's base URL (the id is appended)"
    )
    stations.add_argument("--count", type=int, default=1)
    stations.add_argument("--id-prefix", default="sim-cs")
    stations.add_argument("--version", choices=["1.6", "2.0.1"], default="1.6")
    stations.add_argument("--demand-w", type=float, default=11000.0)
    stations.add_argument("--phases", type=int, choices=[1, 2, 3], default=3)
    stations.add_argument("--max-power-w", type=float, default=22000.0)
    stations.add_argument("--ramp-w-per-s", type=float, default=3000.0)
    stations.add_argument("--password", default="")
    stations.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)"
    )
    stations.add_argument("--status-every", type=float, default=5.0, metavar="S")
    stations.set_defaults(handler=_cmd_sim_stations)

    csms = sim_sub.add_parser("csms", help="a CSMS that accepts stations at /{id} and records every frame")
    csms.add_argument("--host", default="127.0.0.1")
    csms.add_argument("--port", type=int, default=9100)
    csms.add_argument(
        "--record", metavar="FILE", help="write every frame as JSON lines (default: print them)"
    )
    csms.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)"
    )
    csms.set_defaults(handler=_cmd_sim_csms)


# -- scenario run ----------------------------------------------------------------------------


def _cmd_scenario_run(args: argparse.Namespace) -> int:
    from scenarios.report import format_table, write_reports
    from scenarios.runner import run_scenarios
    from scenarios.spec import load_scenario, shipped_scenarios

    time_scale = 1.0 if args.real_time else float(args.time_scale)
    if not time_scale > 0:
        print("error: --time-scale must be > 0", file=sys.stderr)
        return 2
    files = [Path(f) for f in args.files] or shipped_scenarios()
    scenarios = [load_scenario(f) for f in files]  # a bad file stops everything before anything runs

    def progress(result: Any) -> None:
        verdict = "PASS" if result.passed else "FAIL"
        print(f"{verdict}  {result.scenario}  ({result.duration_s:.1f} s)", file=sys.stderr, flush=True)

    results = asyncio.run(run_scenarios(scenarios, time_scale, on_result=progress))
    print(format_table(results, time_scale))
    json_path, junit_path = write_reports(results, time_scale, Path(args.report_dir))
    print(f"reports: {json_path}  {junit_path}")
    return 0 if results and all(r.passed for r in results) else 1


# -- sim dso --------------------------------------------------------------------------------


def _cmd_sim_dso(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        record = stack.enter_context(open(args.record, "a", encoding="utf-8")) if args.record else None
        return asyncio.run(_sim_dso(args, record))


async def _sim_dso(args: argparse.Namespace, record: TextIO | None) -> int:
    import ssl

    from iec104.master import Iec104Master

    context = None
    if args.tls_ca:
        context = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            context.load_cert_chain(args.tls_cert, args.tls_key)
    master = Iec104Master(args.host, args.port, common_address=args.common_address, ssl_context=context)
    printed = 0

    def flush() -> None:
        nonlocal printed
        for received in master.received[printed:]:
            line = _asdu_json(received)
            print(json.dumps(line))
            if record is not None:
                record.write(json.dumps(line) + "\n")
        printed = len(master.received)

    failed = False
    async with master:
        print(f"connected to {args.host}:{args.port}, STARTDT confirmed", file=sys.stderr)
        if args.interrogate:
            values = await master.interrogate()
            print(f"general interrogation: {len(values)} values", file=sys.stderr)
        for value in args.setpoint:
            ioa = args.ioa if args.ioa is not None else (101 if args.time_tagged else 100)
            t0 = time.monotonic()
            con = await master.send_setpoint(ioa, value, time_tag=time.time() if args.time_tagged else None)
            verdict = "positive" if con.positive else "negative"
            failed |= not con.positive
            print(
                f"setpoint {value:g} at IOA {ioa}: ACT_CON {verdict} (COT {int(con.cot)}) in {time.monotonic() - t0:.3f} s"
            )
        deadline = time.monotonic() + args.listen
        while time.monotonic() < deadline and not master.closed.is_set():
            flush()
            await asyncio.sleep(0.1)
        flush()
    return 1 if failed else 0


def _type_name(type_id: int) -> str:
    from iec104.codec import TypeId

    try:
        return TypeId(type_id).name
    except ValueError:
        return str(type_id)


def _asdu_json(received: Any) -> dict[str, Any]:
    asdu = received.asdu
    return {
        "received_at": received.received_at_s,
        "type": _type_name(asdu.type_id),
        "cot": int(asdu.cot),
        "negative": bool(getattr(asdu, "negative", False)),
        "ca": asdu.common_address,
        "objects": [
            {
                "ioa": o.ioa,
                "value": o.value,
                "quality": int(getattr(o, "quality", 0) or 0),
                "time_tag": None if o.time_tag is None else o.time_tag.timestamp_s,
            }
            for o in asdu.objects
        ],
    }


# -- sim stations ---------------------------------------------------------------------------


def _cmd_sim_stations(args: argparse.Namespace) -> int:
    return asyncio.run(_sim_stations(args))


async def _until_stopped(duration_s: float) -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if duration_s > 0:
        loop.call_later(duration_s, stop.set)
    return stop


async def _sim_stations(args: argparse.Namespace) -> int:
    from gateway.model import OcppVersion
    from scenarios.sim_station import Fleet, SimStation, StationSpec

    fleet = Fleet()
    version = OcppVersion.V16 if args.version == "1.6" else OcppVersion.V201
    for i in range(1, args.count + 1):
        spec = StationSpec(
            f"{args.id_prefix}{i}",
            version=version,
            demand_w=args.demand_w,
            phases=args.phases,
            max_power_w=args.max_power_w,
            ramp_w_per_s=args.ramp_w_per_s,
            password=args.password,
        )
        fleet.add(SimStation(spec, args.url))
    stop = await _until_stopped(args.duration)
    fleet.start()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.status_every)
            connected = sum(s.connected.is_set() for s in fleet.stations.values())
            limits = [s.limit_w() for s in fleet.stations.values()]
            limited = [x for x in limits if x is not None]
            print(
                f"{time.strftime('%H:%M:%S')}  connected {connected}/{len(fleet.stations)}  "
                f"drawing {fleet.total_power_w():.0f} W  limited {len(limited)} (sum {sum(limited):.0f} W)",
                flush=True,
            )
    finally:
        await fleet.stop()
    return 0


# -- sim csms -------------------------------------------------------------------------------


def _cmd_sim_csms(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        record = stack.enter_context(open(args.record, "a", encoding="utf-8")) if args.record else None
        return asyncio.run(_sim_csms(args, record))


async def _sim_csms(args: argparse.Namespace, record: TextIO | None) -> int:
    from scenarios.sim_csms import Frame, SimCsms

    def write(frame: Frame) -> None:
        line = json.dumps(
            {"at": frame.at_s, "station": frame.station_id, "dir": frame.direction, "frame": frame.raw}
        )
        if record is not None:
            record.write(line + "\n")
            record.flush()
        else:
            print(line, flush=True)

    csms = SimCsms(args.host, args.port)
    csms.add_listener(write)
    await csms.start()
    print(f"CSMS simulator on {csms.url}/{{station_id}}", file=sys.stderr)
    stop = await _until_stopped(args.duration)
    try:
        await stop.wait()
    finally:
        await csms.stop()
    return 0
