"""Series 4 units on the legacy listener, loopback, real sockets, the gateway's core in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from decimal import Decimal
from pathlib import Path

import ocpp
import pytest
from ocpp.v16 import call as call16
from websockets.exceptions import InvalidStatus

from gateway.core.events import SetpointReceived
from gateway.errors import StartupError
from ocpp_side.legacy.dialect import DialectSettings, Normalised, UnitDialect
from ocpp_side.legacy.session import LegacySession
from ocpp_side.server import StationServer
from scenarios.legacy_unit import UNKNOWN_FIELD
from tests.legacy.conftest import LegacySite, SiteFactory, legacy_config
from tests.legacy.units import closed_by_gateway, legacy_unit, raw_unit, reply
from tests.support.loopback import start_core

SERIAL = "VX4-000123"


class RecordingDialect(UnitDialect):
    """The dialect, keeping every frame it hands on to the session."""

    __slots__ = ("seen",)

    def __init__(self, settings: DialectSettings) -> None:
        super().__init__(settings)
        self.seen: list[str] = []

    def received(self, data: str) -> Normalised:
        normalised = super().received(data)
        self.seen.append(normalised.data)
        return normalised


HELLO = b"S4HELLO model=S4-ULTRA vendor=Voltex serial=VX4-000123 fw=2016.3\r\n"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "legacy unit refused" in r.getMessage()]


async def test_unit_gets_its_identity_boots_meters_and_takes_the_dso_profile(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    site = await make_site({"identity_template": "S4-{serial}", "timezone": "Europe/Berlin"})
    async with legacy_unit(site.legacy_port, SERIAL, timezone="Europe/Berlin") as cp:
        boot = await cp.call(
            call16.BootNotification(charge_point_model="S4-ULTRA", charge_point_vendor="Voltex")
        )
        assert boot.status == "Accepted"
        await site.until(lambda: site.station("S4-VX4-000123") is not None)
        assert site.online("S4-VX4-000123").version.value == "ocpp1.6"

        # Discovery and both DSO profiles, answered in the dialect (an unknown field each).
        await cp.log.wait_for(lambda: len(cp.log.of("SetChargingProfile")) >= 2)
        await site.until(lambda: (v := site.station("S4-VX4-000123")) is not None and v.enforced)

        # Meter values with numbers as strings and a local timestamp feed the site total.
        sampled = [{"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"}]
        stamp = "2026-07-01T10:00:00Z"  # the unit writes 12:00:00, its own (Berlin) time
        await cp.call(
            call16.MeterValues(connector_id=1, meter_value=[{"timestamp": stamp, "sampled_value": sampled}])
        )
        await site.until(lambda: site.online("S4-VX4-000123").power_w == 7200.0)
        assert site.runtime.view().total_power_w == 7200.0

        # A DSO setpoint reaches the unit as a 1.6 SetChargingProfile.
        before = len(cp.log.of("SetChargingProfile"))
        assert (await site.runtime.submit_setpoint(SetpointReceived(6000.0))).accepted
        await cp.log.wait_for(lambda: len(cp.log.of("SetChargingProfile")) > before)
        sent = cp.log.of("SetChargingProfile")[before]
        assert sent["charging_profile_purpose"] == "ChargePointMaxProfile"
        assert sent["charging_schedule"]["charging_schedule_period"][0]["limit"] == Decimal("6000.0")
        await site.until(lambda: site.online("S4-VX4-000123").enforced)
    await site.until(lambda: site.station("S4-VX4-000123") is None)

    for kind in ("string_number", "naive_timestamp", "unknown_field", "boot_without_serial"):
        assert site.metric("ocpp809_legacy_leniencies_total", {"kind": kind}) >= 1, kind
    assert any("hello read (serial VX4-000123)" in r.getMessage() for r in caplog.records)


async def test_boot_gets_the_serial_and_timestamps_become_utc(make_site: SiteFactory) -> None:
    """What the session sees: the mended frame (the gateway's answer is to valid 1.6)."""
    site = await make_site({"timezone": "Europe/Berlin"})
    async with raw_unit(site.legacy_port, SERIAL) as ws:
        await site.until(lambda: SERIAL in site.server.connections)
        session = site.server.connections[SERIAL].session
        assert isinstance(session, LegacySession)
        recording = session.dialect = RecordingDialect(session.dialect.settings)
        assert (
            await reply(
                ws,
                '[2,"b1","BootNotification",{"chargePointVendor":"Voltex","chargePointModel":"S4-ULTRA","fw":"2016.3"}]',
            )
        )[:2] == [3, "b1"]
        assert (
            await reply(
                ws,
                '[2,"s1","StatusNotification",{"connectorId":"1","errorCode":"NoError","status":"Available","timestamp":"2026-01-15 08:30:00"}]',
            )
        )[:2] == [3, "s1"]
    boot, status = (json.loads(frame)[3] for frame in recording.seen[:2])
    assert boot == {
        "chargePointVendor": "Voltex",
        "chargePointModel": "S4-ULTRA",
        "chargePointSerialNumber": SERIAL,
    }
    assert status["connectorId"] == 1
    assert status["timestamp"] == "2026-01-15T07:30:00Z"  # CET is UTC+1 in January


@pytest.mark.parametrize("offered", [["ocpp1.5"], None, ["ocpp1.6"], ["ocpp2.0.1", "ocpp1.5"]])
async def test_subprotocol_ocpp15_16_or_none(make_site: SiteFactory, offered: list[str] | None) -> None:
    site = await make_site()
    async with raw_unit(site.legacy_port, SERIAL, subprotocols=offered) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == (offered[-1] if offered else None)
        assert (await reply(ws, '[2,"h","Heartbeat",{}]'))[:2] == [3, "h"]
        assert site.station(SERIAL) is not None


async def test_a_unit_offering_only_other_subprotocols_is_refused(make_site: SiteFactory) -> None:
    site = await make_site()
    with pytest.raises(InvalidStatus) as refused:
        async with raw_unit(site.legacy_port, SERIAL, subprotocols=["ocpp2.0.1"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 400
    assert not site.server.connections


async def test_outside_the_leniencies_bad_frames_get_callerrors(make_site: SiteFactory) -> None:
    site = await make_site()
    async with raw_unit(site.legacy_port, SERIAL) as ws:
        for frame, code in [
            (
                '[2,"a","StatusNotification",{"connectorId":"1.5","errorCode":"NoError","status":"Available"}]',
                "TypeConstraintViolation",
            ),
            (
                '[2,"b","StatusNotification",{"connectorId":"1","errorCode":"NoError","status":"Sleeping"}]',
                "PropertyConstraintViolation",
            ),
            (
                '[2,"c","StartTransaction",{"connectorId":"1","idTag":"T","timestamp":"2026-01-15 08:30:00"}]',
                "OccurenceConstraintViolation",
            ),
            (
                '[2,"d","StatusNotification",{"connectorId":"1","errorCode":"NoError","status":"Available","timestamp":"yesterday"}]',
                "PropertyConstraintViolation",
            ),
            ('[2,"e","Exterminate",{}]', "NotImplemented"),
            ("not json", "FormationViolation"),
        ]:
            answer = await reply(ws, frame)
            assert answer[0] == 4 and answer[2] == code, (frame, answer)
        assert (await reply(ws, '[2,"h","Heartbeat",{}]'))[:2] == [3, "h"]  # still served


async def test_each_leniency_logged_once_per_station_and_counted(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    site = await make_site()
    frame = '[2,"{id}","StatusNotification",{{"connectorId":"1","errorCode":"NoError","status":"Available","x":1}}]'
    for serial in ("UNIT-A", "UNIT-B"):
        for attempt in range(2):  # a reconnect is the same station: no second line
            async with raw_unit(site.legacy_port, serial) as ws:
                for n in range(3):
                    assert (await reply(ws, frame.format(id=f"{attempt}-{n}")))[0] == 3
    lines = [r for r in caplog.records if "mended into OCPP 1.6" in r.getMessage()]
    assert sorted(
        r.getMessage().split(":")[0] + " " + r.getMessage().split(": ")[2].split(" ")[0] for r in lines
    ) == [
        "UNIT-A string_number",
        "UNIT-A unknown_field",
        "UNIT-B string_number",
        "UNIT-B unknown_field",
    ]
    assert all(r.levelno == logging.WARNING for r in lines)
    assert site.metric("ocpp809_legacy_leniencies_total", {"kind": "string_number"}) == 12
    assert site.metric("ocpp809_legacy_leniencies_total", {"kind": "unknown_field"}) == 12
    assert site.metric("ocpp809_legacy_leniencies_total", {"kind": "naive_timestamp"}) == 0
    assert site.metric("ocpp809_legacy_leniencies_total", {"kind": "boot_without_serial"}) == 0


# -- refused before the upgrade ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "close_after", "reason", "said"),
    [
        (b"", False, "no_hello", "no hello within 0.5s"),
        (b"S4HELLO model=S4-ULTRA", False, "no_hello", "no hello within 0.5s (22 bytes without a line end)"),
        (b"", True, "no_hello", "closed the connection before a hello"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, "no_hello", "an HTTP request came first"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False, "bad_hello", "a TLS handshake instead"),
        (b"S4HELLO serial=\xc3\xa9\r\n", False, "bad_hello", "not ASCII (byte 0xC3 at position 15)"),
        (b"HELLO there\r\n", False, "bad_hello", "no serial in the hello"),
        (b"S4HELLO serial=VX4\x07-1\r\n", False, "bad_hello", "control characters"),
        (b"S4HELLO " + b"x" * 600, False, "hello_too_long", "no line end in the first 512 bytes"),
        (HELLO, False, "no_upgrade", "serial VX4-000123: no upgrade request within 0.5s"),
    ],
)
async def test_a_unit_without_a_proper_hello_is_refused_with_one_line(
    make_site: SiteFactory,
    caplog: pytest.LogCaptureFixture,
    sent: bytes,
    close_after: bool,
    reason: str,
    said: str,
) -> None:
    caplog.set_level(logging.INFO)
    site = await make_site(ocpp={"handshake_timeout_s": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", site.legacy_port)
    writer.write(sent)
    if close_after:
        writer.write_eof()
    assert await closed_by_gateway(reader) == b""  # closed, not a word of HTTP
    writer.close()
    await site.until(lambda: site.metric("ocpp809_legacy_refused_total", {"reason": reason}) == 1)
    [line] = _refusals(caplog)
    assert line.startswith(f"127.0.0.1: legacy unit refused: {reason}: ") and said in line, line
    assert line.endswith("connection closed")
    assert not site.server.connections


async def test_a_serial_that_makes_no_station_id_is_refused(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    site = await make_site({"hello_pattern": r"serial=(?P<serial>\S+)"})
    reader, writer = await asyncio.open_connection("127.0.0.1", site.legacy_port)
    writer.write(b"S4HELLO serial=VX4/../../etc\r\n")
    assert await closed_by_gateway(reader) == b""
    writer.close()
    [line] = _refusals(caplog)
    assert "bad_station_id" in line and "'/' at position 3" in line
    assert site.metric("ocpp809_legacy_refused_total", {"reason": "bad_station_id"}) == 1


async def test_the_identity_goes_through_the_same_admission(make_site: SiteFactory) -> None:
    site = await make_site(ocpp={"accepted_stations": ["VX4-000001"]})
    with pytest.raises(InvalidStatus) as refused:
        async with raw_unit(site.legacy_port, SERIAL):
            pass
    assert refused.value.response.status_code == 404
    async with raw_unit(site.legacy_port, "VX4-000001") as ws:
        assert (await reply(ws, '[2,"h","Heartbeat",{}]'))[:2] == [3, "h"]


async def test_the_main_listener_takes_no_hello(make_site: SiteFactory) -> None:
    """A hello on the main port is no HTTP request: websockets closes the connection there."""
    site = await make_site()
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(HELLO)
    assert await closed_by_gateway(reader) == b""
    writer.close()
    assert not site.server.connections


async def test_the_legacy_port_busy_is_one_line_and_nothing_keeps_listening(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = legacy_config(tmp_path, {"listen_port": port})
        runtime = start_core(config)
        server = StationServer(config.ocpp, config.upstream, runtime, config.legacy)
        try:
            with pytest.raises(StartupError) as failed:
                await server.start()
            assert str(failed.value).startswith(f"legacy listener 127.0.0.1:{port}: ")
            assert "\n" not in str(failed.value)
            assert server._server is None  # the main listener was closed again
        finally:
            await server.stop()
            await runtime.close()


async def test_disabled_means_no_listener(make_site: SiteFactory) -> None:
    site: LegacySite = await make_site({"enabled": False})
    assert site.server.legacy is None


def test_the_simulators_unknown_field_is_unknown_to_ocpp16() -> None:
    schemas = Path(ocpp.__file__).parent / "v16" / "schemas"
    assert not [p.name for p in schemas.glob("*.json") if UNKNOWN_FIELD in p.read_text(encoding="utf-8-sig")]


async def test_stopping_closes_units_still_before_their_upgrade_at_once(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    site = await make_site(ocpp={"handshake_timeout_s": 60.0})
    silent = await asyncio.open_connection("127.0.0.1", site.legacy_port)
    greeted = await asyncio.open_connection("127.0.0.1", site.legacy_port)
    greeted[1].write(HELLO)
    await site.until(lambda: len(site.server.legacy.gate.connections) == 2)  # type: ignore[union-attr]
    async with asyncio.timeout(5.0):  # not the 60 s opening deadline
        await site.server.stop()
    for reader, writer in (silent, greeted):
        try:
            assert await closed_by_gateway(reader) == b""
        except ConnectionResetError:
            pass  # closed as well
        writer.close()
    assert not _refusals(caplog)
