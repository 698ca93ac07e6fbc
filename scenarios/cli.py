"""``ocpp809 scenario run`` and ``ocpp809 sim dso|stations|csms``: registered by the gateway CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import zoneinfo
from pathlib import Path
from typing import Any, TextIO

DEFAULT_TIME_SCALE = 60.0


SIM_EXIT_CODES = """exit codes:
  0  done: connected, every setpoint confirmed
  2  wrong arguments (a TLS file that cannot be read, say)
  3  could not connect: connection refused, TLS failure, closed by the peer, timeout, unknown host
  4  a setpoint was refused (negative ACT_CON)            [sim dso]
  5  connected, then the link closed or an answer never came (wins over 4)   [sim dso]
every failure is one line on stderr saying which of these happened and why."""

SCENARIO_RUN_HELP = """\
configuration (--config SITE.toml), later layers win:
  1 built-in defaults  2 the site file  3 the scenario's [gateway.*] overrides
  4 always the runner: listeners on 127.0.0.1 with OS-chosen ports, a temporary store
    and outbox (store.missing_start kept), no metrics listener, no upstream CSMS link
    but the scenario's simulator
  5 the runner unless the scenario sets them: iec104.allowed_masters = 127.0.0.1, no IEC 104
    or OCPP TLS, ocpp.security_profile 0, any station id
  6 --time-scale divides limits.hold_timeout_s, ocpp.profile_refresh_s, ocpp.profile_validity_s

--target HOST[:PORT]: against a running gateway (port: the site file's iec104.port, else 2404),
real time, default files scenarios/site/. Only setpoint, cut_link, restore_link,
dso_short_session, interrogate, wait and telemetry expectations run; a scenario with any
other step, [gateway.*] overrides, [csms] or [cap_invariant] is refused (one line, exit 2)
before anything is sent. --config then names the running gateway's file: its point map,
common address and the numbers scenarios refer to ("limits.hold_timeout_s").

exit codes: 0 every row passed, 1 a row failed, 2 a wrong file or option (one line)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    scenario = sub.add_parser("scenario", help="verify a site: run scenarios T1-T4 against the whole gateway")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    run = scenario_sub.add_parser(
        "run",
        help="run scenario files (default: every shipped scenario)",
        description="Run scenarios against a gateway in this process (simulated stations and DSO"
        " master on loopback) or, with --target, against a running gateway and its real stations.",
        epilog=SCENARIO_RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "files",
        nargs="*",
        metavar="FILE|DIR",
        help="scenario TOML files or directories of them (default: all of scenarios/;"
        " with --target: scenarios/site/)",
    )
    run.add_argument(
        "--report-dir",
        metavar="DIR",
        default="scenario-reports",
        help="where scenarios.json and scenarios.junit.xml go",
    )
    run.add_argument(
        "--config",
        metavar="SITE.toml",
        help="the site's own configuration: the base under every scenario's overrides",
    )
    run.add_argument(
        "--target",
        metavar="HOST[:PORT]",
        help="run the DSO-side steps against this running gateway's IEC 104 listener",
    )
    run.add_argument("--tls-ca", metavar="FILE", help="--target with IEC 62351-3 TLS: trust this CA")
    run.add_argument("--tls-cert", metavar="FILE", help="--target with TLS: our client certificate")
    run.add_argument("--tls-key", metavar="FILE", help="--target with TLS: its key")
    timing = run.add_mutually_exclusive_group()
    timing.add_argument(
        "--time-scale",
        type=float,
        default=None,
        metavar="N",
        help=f"divide long waits and the gateway's timeouts by N (default {DEFAULT_TIME_SCALE:g}:"
        " T2's 10 minutes in 10 s; always 1 with --target)",
    )
    timing.add_argument("--real-time", action="store_true", help="run every wait as written (time scale 1)")
    run.set_defaults(handler=_cmd_scenario_run)

    sim = sub.add_parser("sim", help="simulated peers for commissioning: DSO master, stations, CSMS")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)

    dso = sim_sub.add_parser(
        "dso",
        help="an IEC 104 master: send setpoints, print every ACT_CON and telemetry ASDU",
        epilog=SIM_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    dso.add_argument(
        "--connect-timeout", type=float, default=5.0, metavar="S", help="give up connecting after S seconds"
    )
    dso.set_defaults(handler=_cmd_sim_dso)

    stations = sim_sub.add_parser(
        "stations",
        help="OCPP stations that charge, obey profiles and report meter values",
        epilog=SIM_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stations.add_argument(
        "--url",
        help="the central system's base URL (the id is appended; default ws://127.0.0.1:9000,"
        " with --legacy ws://127.0.0.1:9001, the legacy listener, upgraded on /)",
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
        "--legacy",
        action="store_true",
        help="play Series 4 units: a hello line with serial = the station id before the upgrade,"
        " subprotocol ocpp1.5, OCPP 1.6 with string numbers, zone-less timestamps, an unknown"
        " field and BootNotification without a serial (--version is ignored)",
    )
    stations.add_argument(
        "--timezone",
        default="UTC",
        help="--legacy: the units' clock, in which they write timestamps without a zone (an IANA name)",
    )
    stations.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)"
    )
    stations.add_argument("--status-every", type=float, default=5.0, metavar="S")
    stations.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="every station must be connected within S seconds, else exit 3",
    )
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
    from scenarios.report import RunInfo, format_table, write_reports
    from scenarios.runner import Target, run_scenarios
    from scenarios.spec import (
        load_scenario,
        load_site,
        scenario_files,
        shipped_scenarios,
        site_scenarios,
        target_refusal,
    )

    def usage(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    # A wrong site file is one line per problem (ConfigErrors, exit 2), before anything runs.
    site = load_site(args.config) if args.config else None
    target: Target | None = None
    if args.target:
        if args.time_scale is not None and args.time_scale != 1:
            return usage("--time-scale: a running gateway's timeouts cannot be scaled (--target runs at 1)")
        time_scale = 1.0
        default_port = 2404
        if site is not None:
            from gateway.config import parse_config

            default_port = parse_config(site.data, site.path).iec104.port or 2404
        try:
            host, port = parse_target(args.target, default_port)
        except ValueError as exc:
            return usage(f"--target {args.target!r}: {exc}")
        try:
            context = _target_tls(args, site)
        except (OSError, ValueError) as exc:
            return usage(f"--tls-ca/--tls-cert/--tls-key: {exc}")
        target = Target(host, port, context)
    else:
        if args.tls_ca or args.tls_cert or args.tls_key:
            return usage("--tls-ca/--tls-cert/--tls-key go with --target (a simulated run has no TLS)")
        time_scale = 1.0 if args.real_time else float(args.time_scale or DEFAULT_TIME_SCALE)
        if not time_scale > 0:
            return usage("--time-scale must be > 0")
    if args.files:
        files = scenario_files(args.files)
    else:
        files = site_scenarios() if target is not None else shipped_scenarios()
    scenarios = [load_scenario(f, site) for f in files]  # a bad file stops everything before anything runs
    if target is not None:
        refusals = [r for r in map(target_refusal, scenarios) if r is not None]
        for refusal in refusals:
            print(f"error: {refusal}", file=sys.stderr)
        if refusals:
            return 2
        if any(s.stations for s in scenarios):
            print(
                f"note: against {target} the scenarios' [[stations]] are not simulated: the site's own stations answer",
                file=sys.stderr,
            )
    info = RunInfo(
        config_path=None if site is None else str(Path(site.path).resolve()),
        config_sha256=None if site is None else site.sha256,
        target=None if target is None else str(target),
    )
    print(info.describe(), file=sys.stderr, flush=True)

    def progress(result: Any) -> None:
        verdict = "PASS" if result.passed else "FAIL"
        print(f"{verdict}  {result.scenario}  ({result.duration_s:.1f} s)", file=sys.stderr, flush=True)

    results = asyncio.run(run_scenarios(scenarios, time_scale, on_result=progress, site=site, target=target))
    print(format_table(results, time_scale, info))
    json_path, junit_path = write_reports(results, time_scale, Path(args.report_dir), info)
    print(f"reports: {json_path}  {junit_path}")
    return 0 if results and all(r.passed for r in results) else 1


def parse_target(text: str, default_port: int = 2404) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    host, port_text = text.strip(), ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not host[end + 1 :].startswith(":")):
            raise ValueError("write an IPv6 address as [ADDRESS]:PORT")
        host, port_text = host[1:end], host[end + 2 :]
    elif host.count(":") == 1:
        host, port_text = host.split(":")
    if not host:
        raise ValueError("no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def _target_tls(args: argparse.Namespace, site: Any) -> Any:
    """The master's TLS context for --target, or None; a site file with TLS on needs --tls-ca."""
    from gateway.config import parse_config
    from iec104.master import client_ssl_context

    tls_on = site is not None and parse_config(site.data, site.path).iec104.tls.enabled
    if not args.tls_ca:
        if tls_on:
            raise ValueError(f"{site.path} has iec104.tls.enabled: give --tls-ca (and --tls-cert/--tls-key)")
        if args.tls_cert or args.tls_key:
            raise ValueError("--tls-cert and --tls-key need --tls-ca")
        return None
    return client_ssl_context(args.tls_ca, args.tls_cert, args.tls_key)


# -- sim dso --------------------------------------------------------------------------------


def _cmd_sim_dso(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        record = stack.enter_context(open(args.record, "a", encoding="utf-8")) if args.record else None
        return asyncio.run(_sim_dso(args, record))


async def _sim_dso(args: argparse.Namespace, record: TextIO | None) -> int:
    from iec104.master import Iec104Master, MasterError, client_ssl_context
    from scenarios.link_errors import (
        EXIT_COULD_NOT_CONNECT,
        EXIT_LINK_LOST,
        EXIT_OK,
        EXIT_SETPOINT_REFUSED,
        describe,
    )

    peer = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    context = None
    if args.tls_ca:
        try:
            context = client_ssl_context(args.tls_ca, args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:
            print(f"error: sim dso: --tls-ca/--tls-cert/--tls-key: {exc}", file=sys.stderr)
            return 2
    master = Iec104Master(
        args.host,
        args.port,
        common_address=args.common_address,
        ssl_context=context,
        connect_timeout_s=args.connect_timeout,
    )
    printed = 0

    def flush() -> None:
        nonlocal printed
        for received in master.received[printed:]:
            line = _asdu_json(received)
            print(json.dumps(line))
            if record is not None:
                record.write(json.dumps(line) + "\n")
        printed = len(master.received)

    try:
        await master.__aenter__()  # connect and STARTDT (confirmed); it closes itself on failure
    except (OSError, TimeoutError, MasterError) as exc:
        await master.close()
        reason = describe(exc, args.connect_timeout)
        print(f"error: sim dso: could not connect to {peer}: {reason}", file=sys.stderr)
        return EXIT_COULD_NOT_CONNECT
    refused = 0
    try:
        print(f"connected to {peer}, STARTDT confirmed", file=sys.stderr)
        if args.interrogate:
            values = await master.interrogate()
            print(f"general interrogation: {len(values)} values", file=sys.stderr)
        for value in args.setpoint:
            ioa = args.ioa if args.ioa is not None else (101 if args.time_tagged else 100)
            t0 = time.monotonic()
            con = await master.send_setpoint(ioa, value, time_tag=time.time() if args.time_tagged else None)
            verdict = "positive" if con.positive else "negative"
            refused += not con.positive
            print(
                f"setpoint {value:g} at IOA {ioa}: ACT_CON {verdict} (COT {int(con.cot)}) in {time.monotonic() - t0:.3f} s"
            )
        deadline = time.monotonic() + args.listen
        while time.monotonic() < deadline and not master.closed.is_set():
            flush()
            await asyncio.sleep(0.1)
        if master.closed.is_set():
            raise MasterError(master.close_reason or "closed by the outstation")
    except (OSError, TimeoutError, MasterError) as exc:
        flush()
        print(f"error: sim dso: lost the link to {peer}: {describe(exc)}", file=sys.stderr)
        return EXIT_LINK_LOST
    finally:
        await master.close()
    flush()
    if refused:
        print(f"error: sim dso: {refused} setpoint(s) refused by {peer} (negative ACT_CON)", file=sys.stderr)
        return EXIT_SETPOINT_REFUSED
    return EXIT_OK


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
    from gateway.core.model import OcppVersion
    from scenarios.link_errors import EXIT_COULD_NOT_CONNECT, EXIT_OK, describe
    from scenarios.sim_station import Fleet, SimStation
    from scenarios.station_spec import StationSpec

    fleet = Fleet()
    version = OcppVersion.V16 if args.version == "1.6" else OcppVersion.V201
    # Namespaces built by hand (the tests, older scripts) may lack the --legacy options.
    legacy, timezone = getattr(args, "legacy", False), getattr(args, "timezone", "UTC")
    url = args.url or ("ws://127.0.0.1:9001" if legacy else "ws://127.0.0.1:9000")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        print(f"error: sim stations: --timezone {timezone!r} is no IANA time zone", file=sys.stderr)
        return 2
    for i in range(1, args.count + 1):
        spec = StationSpec(
            f"{args.id_prefix}{i}",
            version=version,
            demand_w=args.demand_w,
            phases=args.phases,
            max_power_w=args.max_power_w,
            ramp_w_per_s=args.ramp_w_per_s,
            password=args.password,
            legacy=legacy,
            timezone=timezone,
        )
        fleet.add(SimStation(spec, url))
    stop = await _until_stopped(args.duration)
    fleet.start()
    try:
        # Every station must be connected within --connect-timeout: else one line why, exit 3.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.connected.wait() for s in fleet.stations.values())),
                args.connect_timeout,
            )
        missing = [s for s in fleet.stations.values() if not s.connected.is_set()]
        if missing and not stop.is_set():
            first = missing[0]
            why = (
                "no answer" if first.last_error is None else describe(first.last_error, args.connect_timeout)
            )
            print(
                f"error: sim stations: could not connect {len(missing)}/{len(fleet.stations)} station(s) to"
                f" {url} within {args.connect_timeout:g} s: {first.station_id}: {why}",
                file=sys.stderr,
            )
            return EXIT_COULD_NOT_CONNECT
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
    return EXIT_OK


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
