"""The metrics listener: ``/metrics``, a read-only status page, and ``/healthz``.

One small HTTP server (``wsgiref``, a thread per request, daemon threads) on
``metrics.listen_host``:metrics.port``:

- ``/metrics`` is prometheus_client's own WSGI app, unchanged (text or OpenMetrics by
  ``Accept``, gzip, ``name[]`` filters).
- ``/`` and ``/status``: the site as the core sees it, rendered on the server as one
  HTML page that reloads itself every ``REFRESH_S`` seconds (meta refresh). No script,
  no build step, nothing fetched from elsewhere (a ``Content-Security-Policy`` says so).
- ``/healthz``: ``200 ok`` when the gateway is healthy, else ``503`` and the reason in one
  line. *Healthy* means two things: the asyncio event loop that runs the core answered
  a request for a snapshot within ``ANSWER_TIMEOUT_S`` (a loop that is blocked or gone
  cannot enforce anything), and the store has not failed (a failed store refuses every
  setpoint until a restart).

**Threads.** The core is not thread-safe, so a request thread never reads it: it asks the
event loop for a ``Snapshot`` (``call_soon_threadsafe``) and waits at most
``ANSWER_TIMEOUT_S``. Rendering happens in the request thread, from the frozen snapshot.

**Access.** Binds ``metrics.listen_host`` (127.0.0.1 by default). With
``metrics.username`` and ``metrics.password`` set, every path asks for HTTP Basic Auth
except ``/healthz``: a probe needs no credentials, and ``/healthz`` tells nothing but
``ok`` or a reason without detail. Basic Auth over plain HTTP is readable on the wire:
keep the listener on loopback or put a TLS reverse proxy in front.

Everything a peer chose (station ids, DSO peer addresses, audit details) is HTML-escaped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hmac
import html
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import make_wsgi_app

from gateway import __version__
from gateway.config import MetricsConfig
from gateway.core.arbiter import SiteView, StationView
from gateway.runtime import CoreRuntime
from gateway.store import CommandOutcome

log = logging.getLogger(__name__)

REFRESH_S = 5  # the page reloads itself this often
ANSWER_TIMEOUT_S = 2.0  # the event loop must hand a snapshot over within this, else 503
REQUEST_TIMEOUT_S = 10.0  # a client that stalls mid-request loses its connection after this
RECENT_COMMANDS = 20  # DSO commands shown, newest first

_SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the page shows, copied on the event loop thread."""

    taken_at_s: float
    site: SiteView
    fallback_limit_w: float
    commands: tuple[CommandOutcome, ...]  # newest first, each with its compliance record
    commands_error: str | None  # the audit log could not be read
    store_path: str
    store_failure: str | None
    # What the stations side adds per station (e.g. the metering each station took).
    notes: Mapping[str, str] = field(default_factory=dict)


StationNotes = Callable[[], Mapping[str, str]]


def take_snapshot(runtime: CoreRuntime, notes: StationNotes | None = None) -> Snapshot:
    """Copy what the page needs. Call it on the event loop thread only."""
    commands: tuple[CommandOutcome, ...] = ()
    error: str | None = None
    try:
        commands = tuple(runtime.store.recent_commands(RECENT_COMMANDS))  # a bounded query
    except Exception as exc:  # noqa: BLE001 - a broken audit log must not take the page down
        error = str(exc)
    return Snapshot(
        runtime.clock(),
        runtime.view(),
        runtime.arbiter.settings.fallback_limit_w,
        commands,
        error,
        runtime.store.path,
        runtime.store.failure,
        dict(notes()) if notes is not None else {},
    )


def health(snapshot: Snapshot | str) -> tuple[bool, str]:
    """``(healthy, one line)`` for ``/healthz``; a str snapshot is why none could be taken."""
    if isinstance(snapshot, str):
        return False, snapshot
    if snapshot.store_failure is not None:
        return False, "the store has failed: setpoints are refused until a restart"
    return True, "ok"


# -- rendering (pure: a snapshot in, a page out) ----------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _watts(value: float | None) -> str:
    if value is None:
        return "no reading"
    return f"{value:.0f} W"


def _utc(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).isoformat(timespec="seconds")


def _yes(flag: bool, yes: str = "yes", no: str = "no") -> str:
    return f'<span class="{"ok" if flag else "bad"}">{yes if flag else no}</span>'


def _station_row(station: StationView, note: str) -> str:
    cells = (
        f'<th scope="row">{_e(station.station_id)}</th>',
        f"<td>{_e(station.version.value)}</td>",
        f"<td>{_yes(station.online, 'online', 'offline')}</td>",
        f'<td class="num">{_watts(station.committed_w)}</td>',
        f'<td class="num">{_watts(station.limit_w)}</td>',
        f'<td class="num">{_watts(station.fallback_w)}</td>',
        f'<td class="num">{_watts(station.power_w)}</td>',
        f"<td>{_yes(station.enforced)}</td>",
        f'<td class="metering">{_e(note) if note else "-"}</td>',
    )
    return f'<tr data-station="{_e(station.station_id)}">{"".join(cells)}</tr>'


def _command_row(command: CommandOutcome) -> str:
    row, record = command.entry.row, command.record
    outcome = "accepted" if row.accepted else f"rejected: {row.reason}"
    if record is None or not row.accepted:
        comply = "-"
    elif record.time_to_comply_s is not None:
        comply = f"{record.time_to_comply_s:.2f} s" + (" (so far)" if not record.closed else "")
    else:
        comply = "not yet" if not record.closed else "did not comply"
    cells = (
        f'<td class="at">{_e(_utc(row.received_at_s))}</td>',
        f"<td>{_e(row.peer)}</td>",
        f"<td>{_e(row.kind)}</td>",
        f'<td class="num">{_watts(row.value_w) if row.value_w is not None else "-"}</td>',
        f"<td>{_yes(row.accepted, 'accepted', _e(outcome))}</td>",
        f'<td class="num">{_e(comply)}</td>',
        f"<td>{_e(row.detail)}</td>",
    )
    return f"<tr>{''.join(cells)}</tr>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}
h1{font-size:1.4em;margin:0} h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse} th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td.at{white-space:nowrap}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em} dt{font-weight:600}
.ok{color:#075e07} .bad{color:#a00000;font-weight:600} .alert{background:#fdd;padding:.5em}
.meta{color:#555}
"""


def render_status(snapshot: Snapshot | str) -> str:
    """The status page; a str snapshot is why the core could not be read."""
    head = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>ocpp809 status</title><style>{_STYLE}</style></head><body>"
        f"<h1>ocpp809 {_e(__version__)}</h1>"
    )
    tail = (
        '<p class="meta"><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></p></body></html>'
    )
    if isinstance(snapshot, str):
        return f'{head}<p class="alert" role="alert">{_e(snapshot)}</p>{tail}'
    site = snapshot.site
    parts = [
        head,
        (
            f'<p class="meta">As of <time id="taken-at">{_e(_utc(snapshot.taken_at_s))}</time>;'
            f" this page reloads every {REFRESH_S} s. Store: {_e(snapshot.store_path)}</p>"
        ),
    ]
    if snapshot.store_failure is not None:
        parts.append(
            '<p class="alert" role="alert">The store has failed; every setpoint is refused until a'
            f" restart: {_e(snapshot.store_failure)}</p>"
        )
    parts += [
        '<h2>Limit in force</h2><dl id="limit">',
        f'<dt>Limit</dt><dd id="limit-w">{_watts(site.limit_w)}</dd>',
        f'<dt>Source</dt><dd id="limit-source">{_e(site.source.value)}</dd>',
        f'<dt>Mode</dt><dd id="mode">{_e(site.mode.value)}</dd>',
        f'<dt>DSO link</dt><dd id="dso-link">{_yes(site.link_up, "up", "down")}</dd>',
        f'<dt>Enforced</dt><dd id="enforced">{_yes(site.enforced)}</dd>',
        f'<dt>Committed</dt><dd id="committed-w">{_watts(site.committed_w)} of {_watts(site.limit_w)}</dd>',
        (
            '<dt>Fallback committed</dt><dd id="fallback-committed-w">'
            f"{_watts(site.fallback_committed_w)} of {_watts(snapshot.fallback_limit_w)}</dd>"
        ),
        (
            f'<dt>Measured draw</dt><dd id="total-power-w">{_watts(site.total_power_w)}'
            f" (quality {_e(site.quality.value)})</dd>"
        ),
        f'<dt>Raises waiting</dt><dd id="raises-waiting">{site.raises_waiting}</dd>',
        "</dl>",
        f"<h2>Stations ({len(site.stations)})</h2>",
    ]
    if site.stations:
        parts.append(
            '<table id="stations"><thead><tr><th>Station</th><th>OCPP</th><th>State</th>'
            "<th>Commitment</th><th>Share</th><th>Fallback share</th><th>Measured draw</th>"
            "<th>Enforced</th><th>Metering it took</th></tr></thead><tbody>"
        )
        notes = snapshot.notes
        stations = sorted(site.stations, key=lambda s: s.station_id)
        parts += [_station_row(s, notes.get(s.station_id, "")) for s in stations]
        parts.append("</tbody></table>")
    else:
        parts.append('<p id="stations">No station known to the core yet.</p>')
    parts.append(f"<h2>Last DSO commands (newest first, up to {RECENT_COMMANDS})</h2>")
    parts.append(
        '<p class="meta">As audited: the outcome of each command, and its time to comply: from the'
        " command until the measured site total stayed at or below the limit.</p>"
    )
    if snapshot.commands_error is not None:
        why = _e(snapshot.commands_error)
        parts.append(f'<p class="alert" role="alert">The audit log could not be read: {why}</p>')
    elif snapshot.commands:
        parts.append(
            '<table id="commands"><thead><tr><th>Received (UTC)</th><th>Peer</th><th>Kind</th>'
            "<th>Value</th><th>Outcome</th><th>Time to comply</th><th>Detail</th></tr></thead><tbody>"
        )
        parts += [_command_row(row) for row in snapshot.commands]
        parts.append("</tbody></table>")
    else:
        parts.append('<p id="commands">No command yet.</p>')
    parts.append(tail)
    return "".join(parts)


# -- HTTP ---------------------------------------------------------------------------------


class LoopSnapshots:
    """Snapshots taken on the event loop thread, asked for from any other thread."""

    def __init__(
        self, runtime: CoreRuntime, loop: asyncio.AbstractEventLoop, notes: StationNotes | None = None
    ) -> None:
        self.runtime = runtime
        self.loop = loop
        self.notes = notes

    def take(self, timeout_s: float = ANSWER_TIMEOUT_S) -> Snapshot | str:
        """A snapshot, or why there is none (the loop is closed or did not answer in time)."""
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def on_loop() -> None:
            if not future.set_running_or_notify_cancel():
                return  # the asker gave up meanwhile
            try:
                future.set_result(take_snapshot(self.runtime, self.notes))
            except BaseException as exc:  # noqa: BLE001 - handed to the asking thread, which logs it
                future.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(on_loop)
        except RuntimeError:
            return "the event loop that runs the core is closed"
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return f"the event loop that runs the core did not answer within {timeout_s:g} s"
        except Exception as exc:
            log.exception("status snapshot failed")
            return f"the core could not be read: {exc}"


def _check_basic_auth(header: str, credentials: tuple[bytes, bytes]) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    username, sep, password = decoded.partition(b":")
    # Both compared, always: the time taken does not tell which one was wrong.
    user_ok = hmac.compare_digest(username, credentials[0])
    password_ok = hmac.compare_digest(password, credentials[1])
    return bool(sep) and user_ok and password_ok


class StatusApp:
    """The WSGI application: routing, Basic Auth, and the three kinds of answer."""

    def __init__(self, snapshots: LoopSnapshots, metrics_app: Any, config: MetricsConfig) -> None:
        self.snapshots = snapshots
        self.metrics_app = metrics_app
        self.credentials = (config.username.encode(), config.password.encode()) if config.username else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except Exception:  # a bug of ours: one 500, never a traceback on stderr
            log.exception("status page request failed")
            return self._text(start_response, "500 Internal Server Error", "internal error\n", environ)

    def _route(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        if path == "/healthz":
            healthy, line = health(self.snapshots.take())
            status = "200 OK" if healthy else "503 Service Unavailable"
            return self._text(start_response, status, line + "\n", environ)
        if self.credentials is not None and not _check_basic_auth(
            environ.get("HTTP_AUTHORIZATION", ""), self.credentials
        ):
            start_response(
                "401 Unauthorized",
                [
                    ("WWW-Authenticate", 'Basic realm="ocpp809", charset="UTF-8"'),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", "13"),
                ],
            )
            return [b"unauthorized\n"]
        if path == "/metrics":
            result: Iterable[bytes] = self.metrics_app(environ, start_response)
            return result
        if path in ("/", "/status"):
            snapshot = self.snapshots.take()
            status = "503 Service Unavailable" if isinstance(snapshot, str) else "200 OK"
            body = render_status(snapshot).encode()
            start_response(
                status,
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    *_SECURITY_HEADERS,
                ],
            )
            return [b"" if method == "HEAD" else body]
        return self._text(
            start_response, "404 Not Found", "not found: try /, /metrics or /healthz\n", environ
        )

    @staticmethod
    def _text(start_response: StartResponse, status: str, text: str, environ: WSGIEnvironment) -> list[bytes]:
        body = text.encode()
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                *_SECURITY_HEADERS,
            ],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S  # socket timeout: a stalled client frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request stuck on a dead client never holds the process
    block_on_close = False  # close() does not wait for requests: each is bounded by its timeouts


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: whatever it resolves to first
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


class StatusServer:
    """The listener on ``config.listen_host:config.port``; ``start()`` binds, ``close()`` stops."""

    def __init__(
        self,
        config: MetricsConfig,
        runtime: CoreRuntime,
        loop: asyncio.AbstractEventLoop,
        notes: StationNotes | None = None,
    ) -> None:
        self.config = config
        snapshots = LoopSnapshots(runtime, loop, notes)
        self.app = StatusApp(snapshots, make_wsgi_app(runtime.metrics.registry), config)
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        host = self.config.listen_host or "0.0.0.0"
        family = _family(host)
        server_class = type("StatusHTTPServer", (_ThreadingServer,), {"address_family": family})
        server: _ThreadingServer = server_class((host, self.config.port), _Handler)
        server.set_app(self.app)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ocpp809-status", daemon=True)
        self._thread.start()
        if not self.config.username and not _is_loopback(host):
            log.warning(
                "the status page and /metrics on %s are open to anyone who reaches it: set metrics.username"
                " and metrics.password, or listen on 127.0.0.1",
                self.url,
            )

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.listen_host or "0.0.0.0"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def close(self) -> None:
        """Stop serving (blocks up to half a second): call it off the event loop."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
