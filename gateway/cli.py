"""Command line: the only place that configures logging and turns errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points

from gateway import __version__
from gateway.config import check_environment, load_config
from gateway.errors import ConfigError, ConfigErrors, StartupError, StoreError

EXIT_CONFIG = 2

# Subcommands that live in other packages (the scenario runner, the simulators) declare
# themselves as entry points of this group in their package metadata (pyproject.toml), so
# the CLI names no other package and imports none until the parser is built.
COMMANDS_GROUP = "ocpp809.commands"
Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]


def _utc_time(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with its offset, to the millisecond: ``2026-11-30T07:31:14.423+00:00``."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _configure_logging(level: str, fmt: str) -> None:
    """Every timestamp carries its zone (UTC, ISO 8601 with offset). JSON lines carry a
    record's extras as fields: a limit decision's ``source``, ``reason`` and ``mode``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        class _Json(JsonFormatter):
            def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
                return _utc_time(record)

        handler.setFormatter(_Json("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:

        class _Human(logging.Formatter):
            def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
                return _utc_time(record)

        handler.setFormatter(_Human("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The libraries log every frame at INFO; keep them quiet unless asked for DEBUG.
    if level.upper() != "DEBUG":
        for noisy in ("websockets", "ocpp", "apscheduler"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run_until_stopped

    config = load_config(args.config)
    check_environment(config, args.config or "<defaults>")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_until_stopped(config, stop, config_file=args.config)

    from iec104.c104_output import route_library_output  # c104's own prints go through logging

    with route_library_output():
        asyncio.run(main())
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Every check ``run`` makes before it starts, every problem on its own line."""
    config = load_config(args.file)
    check_environment(config, args.file)
    print(f"{args.file}: ok")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from gateway.operator_requests import request_release

    config = load_config(args.config)
    ok, detail = request_release(config.store.path, args.station, args.reason, args.by, args.timeout)
    print(detail if ok else f"error: {detail}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


LOG_LEVELS = ["debug", "info", "warning", "error"]
LOG_FORMATS = ["human", "json"]


class _WithLogOptions:
    """Every subcommand parser also takes the log options (added as a parent)."""

    def __init__(self, sub: argparse._SubParsersAction, logs: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
        self._sub, self._logs = sub, logs

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        parents = [*kwargs.pop("parents", []), self._logs]  # type: ignore[misc]
        parser: argparse.ArgumentParser = self._sub.add_parser(name, parents=parents, **kwargs)  # type: ignore[arg-type]
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocpp809", description="DSO grid-integration gateway for EV charging"
    )
    parser.add_argument("--version", action="version", version=f"ocpp809 {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    parser.add_argument("--log-format", default="human", choices=LOG_FORMATS)
    sub = parser.add_subparsers(dest="command", required=True)
    # The log options work after the subcommand too (`ocpp809 run --log-format json`).
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS)
    logs.add_argument("--log-format", default=argparse.SUPPRESS, choices=LOG_FORMATS)
    sub = _WithLogOptions(sub, logs)  # type: ignore[assignment]

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", metavar="FILE", help="TOML configuration (default: built-in defaults)")
    run.set_defaults(handler=_cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_cmd_check_config)

    release = sub.add_parser(
        "release",
        help="release an offline station's reserved power in the running gateway (audited)",
        description="Tell the running gateway that an offline station is gone for good: its"
        " commitment stops counting against the limit. Refused for a connected station.",
    )
    release.add_argument("station", metavar="STATION_ID")
    release.add_argument("--reason", required=True, help="why (kept in the audit log)")
    release.add_argument("--by", default=os.environ.get("USER", "operator"), help="who (default: $USER)")
    release.add_argument("--config", metavar="FILE", help="the running gateway's configuration (its store)")
    release.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="wait this long for the gateway"
    )
    release.set_defaults(handler=_cmd_release)

    from gateway.audit_cli import register as register_audit  # ocpp809 audit list|show|export|verify

    register_audit(sub)

    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        register: Register = entry.load()
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    try:
        return int(args.handler(args))
    except ConfigErrors as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
