"""The metrics listener: the status page in headless Chromium, /healthz, Basic Auth, metric hygiene.

Every test runs the whole gateway (``build_gateway``) on 127.0.0.1 with ports 0; the
browser test connects real library stations (OCPP 1.6 and 2.0.1) and a real IEC 104
master, then reads the page as Debian's ``chromium`` renders it (``--dump-dom``) and keeps
a screenshot in ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from gateway.app import Gateway, build_gateway
from gateway.config import parse_config
from gateway.core.arbiter import SiteView, StationView
from gateway.core.model import LimitSource, Mode, OcppVersion, ProfileOutcome, Quality, RejectReason
from gateway.errors import ConfigError
from gateway.status_page import ANSWER_TIMEOUT_S, Snapshot, health, render_status
from gateway.store import AuditEntry, AuditRow, CommandOutcome
from iec104.master import Iec104Master
from iec104.outstation import Iec104Outstation
from ocpp_side.server import StationServer
from tests.ocpp.stations import station

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_TIMEOUT_S = 60.0
WAIT_S = 10.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A station id with everything HTML cares about that the handshake lets through.
ODD_ID = 'CS<b>&"201'


def site_config(tmp_path: Path, **metrics: Any) -> dict[str, Any]:
    return {
        "iec104": {
            "listen_host": "127.0.0.1",
            "port": 0,
            "allowed_masters": ["127.0.0.1"],
            "link_poll_s": 0.05,
        },
        "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 1.0},
        # Shares stay where the allocation puts them, and raises go out at once.
        "sharing": {"follow_demand": False, "raise_interval_s": 0.0},
        "metrics": {"listen_host": "127.0.0.1", "port": 0, **metrics},
        "store": {"path": str(tmp_path / "store.sqlite3")},
        "upstream": {"outbox_path": str(tmp_path / "outbox.sqlite3")},
    }


@contextlib.asynccontextmanager
async def running(data: dict[str, Any]) -> AsyncIterator[Gateway]:
    gateway = build_gateway(parse_config(data))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET on loopback, bounded; an HTTP error status is an answer too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


async def fetch(
    gateway: Gateway, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Off the event loop: the server asks the loop for its snapshot."""
    return await asyncio.to_thread(get, f"http://127.0.0.1:{gateway.metrics_port}{path}", headers)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- headless Chromium --------------------------------------------------------------------


def chromium_binary() -> str:
    binary = shutil.which("chromium")
    if binary is None:  # not a skip: CI installs it (.ci/run), and so must a developer
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)")
    return binary


def run_chromium(url: str, profile: Path, *options: str) -> str:
    """Chromium on ``url`` with ``options``; its stdout. Bounded; its whole process group is killed after."""
    proc = subprocess.Popen(
        [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *options, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: renderer and zygote die with it
    )
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    return out


class Tables(HTMLParser):
    """The rendered DOM's tables (cell texts by table id) and every start tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.by_id: dict[str, str] = {}
        self.tags: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        element_id = dict(attrs).get("id")
        if tag == "table" and element_id:
            self._table = element_id
            self.tables[element_id] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        if tag == "dd" and element_id:
            self._id, self.by_id[element_id] = element_id, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "dd":
            self._id = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._id is not None:
            self.by_id[self._id] += data


def parse(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    tables.close()
    return tables


def now() -> str:
    return datetime.now(UTC).isoformat()


def expected_row(s: StationView) -> list[str]:
    def w(value: float | None) -> str:
        return "no reading" if value is None else f"{value:.0f} W"

    return [
        s.station_id,
        s.version.value,
        "online" if s.online else "offline",
        w(s.committed_w),
        w(s.limit_w),
        w(s.fallback_w),
        w(s.power_w),
        "yes" if s.enforced else "no",
    ]


async def test_the_status_page_shows_the_live_site_in_headless_chromium(tmp_path: Path) -> None:
    async with running(site_config(tmp_path)) as gateway:
        (outstation,) = [a for a in gateway.adapters if isinstance(a, Iec104Outstation)]
        (server,) = [a for a in gateway.adapters if isinstance(a, StationServer)]
        runtime = gateway.runtime

        async def until(predicate: Any) -> None:
            async with asyncio.timeout(WAIT_S):
                while not predicate():
                    await asyncio.sleep(0.02)

        def view(station_id: str) -> StationView | None:
            return next((s for s in runtime.view().stations if s.station_id == station_id), None)

        async with (
            Iec104Master("127.0.0.1", outstation.port) as master,
            station(server.port, "CP-16", "ocpp1.6") as cp16,
            station(server.port, quote(ODD_ID, safe=""), "ocpp2.0.1") as cs201,
        ):
            await cp16.call(call16.BootNotification(charge_point_model="Wallbox", charge_point_vendor="test"))
            await cs201.call(
                call201.BootNotification(
                    charging_station={"model": "Wallbox", "vendor_name": "test"}, reason="PowerUp"
                )
            )
            assert (await master.send_setpoint(100, 20000.0)).positive
            assert not (await master.send_setpoint(100, 1000.0)).positive  # below the minimum: refused
            await until(
                lambda: all(
                    (v := view(i)) is not None and v.enforced and v.committed_w == 10000.0
                    for i in ("CP-16", ODD_ID)
                )
            )
            power16 = [{"value": "3500", "measurand": "Power.Active.Import", "unit": "W"}]
            await cp16.call(
                call16.MeterValues(
                    connector_id=1, meter_value=[{"timestamp": now(), "sampled_value": power16}]
                )
            )
            power201 = [{"value": 4200, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}}]
            await cs201.call(
                call201.MeterValues(evse_id=1, meter_value=[{"timestamp": now(), "sampled_value": power201}])
            )
            await until(lambda: runtime.view().total_power_w == 7700.0)
            await until(lambda: len(server.metering()) == 2)  # both took the MID metering setup
            notes = server.metering()
            site: SiteView = runtime.view()
            assert (site.limit_w, site.mode, site.link_up, site.enforced) == (
                20000.0,
                Mode.NORMAL,
                True,
                True,
            )

            url = f"http://127.0.0.1:{gateway.metrics_port}/status"
            dom = await asyncio.to_thread(run_chromium, url, tmp_path / "chromium-dom", "--dump-dom")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-page.png"
            shot.unlink(missing_ok=True)
            await asyncio.to_thread(
                run_chromium,
                url,
                tmp_path / "chromium-shot",
                f"--screenshot={shot}",
                "--window-size=1280,1000",
                "--hide-scrollbars",
            )

        page = parse(dom)
        assert page.by_id["limit-w"] == "20000 W"
        assert page.by_id["limit-source"] == LimitSource.DSO_SETPOINT.value
        assert page.by_id["mode"] == "normal"
        assert page.by_id["dso-link"] == "up"
        assert page.by_id["enforced"] == "yes"
        assert page.by_id["committed-w"] == "20000 W of 20000 W"
        assert page.by_id["total-power-w"] == "7700 W (quality good)"
        header, *rows = page.tables["stations"]
        assert header[:5] == ["Station", "OCPP", "State", "Commitment", "Share"]
        expected = [expected_row(s) for s in sorted(site.stations, key=lambda s: s.station_id)]
        assert rows == [[*row, notes[row[0]]] for row in expected]
        assert header[-1] == "Metering it took"
        assert rows[0][-1].startswith("MeterValueSampleInterval=60; MeterValuesSampledData=")
        assert "TxUpdatedInterval=60" in rows[1][-1]
        assert ["CP-16", "ocpp1.6", "online", "10000 W", "10000 W"] == rows[0][:5]
        assert rows[1][0] == ODD_ID and rows[1][6] == "4200 W"  # text, never markup
        assert "b" not in page.tags  # the station id's "<b>" did not become an element
        _, *commands = page.tables["commands"]
        assert [c[2:5] for c in commands] == [
            ["C_SE_NC_1", "1000 W", f"rejected: {RejectReason.BELOW_MIN.value}"],
            ["C_SE_NC_1", "20000 W", "accepted"],
        ]
        assert commands[0][1].startswith("127.0.0.1")  # the master's address
        # The accepted command has its compliance record: a time to comply, or not yet.
        assert commands[0][5] == "-" and re.fullmatch(r"\d+\.\d\d s( \(so far\))?|not yet", commands[1][5])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", commands[0][0])
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


# -- rendering and health, without a browser ------------------------------------------------


def snapshot(**changes: Any) -> Snapshot:
    site = SiteView(
        limit_w=12000.0,
        source=LimitSource.HOLD,
        mode=Mode.HOLD,
        link_up=False,
        total_power_w=0.0,
        quality=Quality.INVALID,
        enforced=False,
        stations=(StationView("<script>x</script>", OcppVersion.V16, 6000.0, 5000.0, None, False, False),),
    )
    row = AuditRow(1.7e9, "<img src=x>", "C_SE_NC_1", 12000.0, None, True, "ok", "a & b")
    values: dict[str, Any] = {
        "taken_at_s": 1.7e9,
        "site": site,
        "fallback_limit_w": 10000.0,
        "commands": (CommandOutcome(AuditEntry(1, row, None, "", ""), None),),
        "commands_error": None,
        "store_path": "/var/lib/<x>.sqlite3",
        "store_failure": None,
    }
    return Snapshot(**{**values, **changes})


def test_everything_a_peer_chose_is_escaped() -> None:
    page = render_status(snapshot(store_failure="deleted <i>"))
    for raw in ("<script>", "<img", "<x>", "<i>"):
        assert raw not in page
    for escaped in ("&lt;script&gt;x&lt;/script&gt;", "&lt;img src=x&gt;", "a &amp; b", "deleted &lt;i&gt;"):
        assert escaped in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "offline" in page and "no reading" in page and "hold" in page


def test_healthy_means_the_loop_answered_and_the_store_holds() -> None:
    assert health(snapshot()) == (True, "ok")
    healthy, line = health(snapshot(store_failure="store.sqlite3 was deleted"))
    assert not healthy and "store" in line and "deleted" not in line  # no detail without auth
    assert health("the event loop that runs the core did not answer within 2 s")[0] is False


# -- the listener --------------------------------------------------------------------------


async def test_healthz_metrics_and_unknown_paths(tmp_path: Path) -> None:
    async with running(site_config(tmp_path)) as gateway:
        status, headers, body = await fetch(gateway, "/healthz")
        assert (status, body) == (200, "ok\n")
        status, headers, body = await fetch(gateway, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'ocpp809_build_info{version="0.1.0"} 1.0' in body
        status, _, _ = await fetch(gateway, "/nowhere")
        assert status == 404
        status, headers, page = await fetch(gateway, "/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert '<dd id="mode">fallback</dd>' in page  # a fresh store starts in fallback


async def test_healthz_is_503_while_the_event_loop_does_not_answer(tmp_path: Path) -> None:
    async with running(site_config(tmp_path)) as gateway:
        url = f"http://127.0.0.1:{gateway.metrics_port}/healthz"

        def late_probe() -> tuple[int, dict[str, str], str]:
            time.sleep(0.5)  # asks once the loop is stuck
            return get(url)

        probe = asyncio.get_running_loop().run_in_executor(None, late_probe)
        time.sleep(0.5 + ANSWER_TIMEOUT_S + 1.0)  # noqa: ASYNC251 - the loop is stuck, on purpose
        status, _, body = await asyncio.wait_for(probe, WAIT_S)
        assert status == 503 and "did not answer" in body
        assert (await fetch(gateway, "/healthz"))[0] == 200  # unstuck: healthy again


async def test_basic_auth_guards_everything_but_healthz(tmp_path: Path) -> None:
    async with running(site_config(tmp_path, username="ops", password="s3cret")) as gateway:
        for path in ("/", "/status", "/metrics"):
            status, headers, _ = await fetch(gateway, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="ocpp809"')
            assert (await fetch(gateway, path, basic("ops", "wrong")))[0] == 401
            assert (await fetch(gateway, path, {"Authorization": "Basic !!!"}))[0] == 401
            assert (await fetch(gateway, path, basic("ops", "s3cret")))[0] == 200
        assert (await fetch(gateway, "/healthz"))[:1] == (200,)


@pytest.mark.parametrize(
    ("metrics", "key"),
    [
        ({"username": "ops"}, "metrics.password"),
        ({"password": "s3cret"}, "metrics.username"),
        ({"username": "o:ps", "password": "s3cret"}, "metrics.username"),
        ({"username": "ops", "password": "line\nbreak"}, "metrics.password"),
    ],
)
def test_basic_auth_config_is_both_or_neither(metrics: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"metrics": metrics})
    assert error.value.key == key


# -- metric hygiene ------------------------------------------------------------------------


def families(exposition: str) -> set[str]:
    """Metric family names as a Prometheus query names them: counters with ``_total``."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name if kind != "counter" or name.endswith("_total") else f"{name}_total")
    return names


def readme_metric_names() -> set[str]:
    """Every metric name the README mentions, in its lists or in passing."""
    return set(re.findall(r"\bocpp809_[a-z0-9_]*[a-z0-9]\b", (ROOT / "README.md").read_text()))


async def scrape_full_gateway(tmp_path: Path) -> str:
    """/metrics of a gateway with every adapter, the CSMS relay included (nothing connects)."""
    data = site_config(tmp_path)
    data["upstream"] = {"csms_url": "ws://127.0.0.1:9", "outbox_path": str(tmp_path / "outbox.sqlite3")}
    async with running(data) as gateway:
        status, _, body = await fetch(gateway, "/metrics")
    assert status == 200
    return body


async def test_labelled_counters_start_at_zero_and_build_info_is_one(tmp_path: Path) -> None:
    text = await scrape_full_gateway(tmp_path)
    assert 'ocpp809_setpoints_total{reason="ok",result="accepted"} 0.0' in text
    for reason in RejectReason:
        assert f'ocpp809_setpoints_total{{reason="{reason.value}",result="rejected"}} 0.0' in text
    for outcome in ProfileOutcome:
        assert f'ocpp809_profile_results_total{{outcome="{outcome.value}"}} 0.0' in text
    for version in OcppVersion:
        assert f'ocpp809_stations_connected{{version="{version.value}"}} 0.0' in text
    assert 'ocpp809_build_info{version="0.1.0"} 1.0' in text
    assert "_created" not in text


async def test_the_readme_lists_exactly_the_exported_metrics(tmp_path: Path) -> None:
    exported = families(await scrape_full_gateway(tmp_path))
    assert all(name.startswith("ocpp809_") for name in exported)
    listed = readme_metric_names()
    assert sorted(listed - exported) == [], "the README names metrics that are not exported"
    assert sorted(exported - listed) == [], "the README does not list these exported metrics"
