"""Run scenarios against the whole gateway on loopback and judge them.

For each scenario: a fresh gateway in this process (``gateway.app.build_gateway``)
with the scenario's configuration overrides, both listeners on 127.0.0.1 with ports
chosen by the OS, a temporary store and no metrics endpoint; a DSO master
(``iec104.master.Iec104Master``) and the simulated stations connect to it; the steps
run in order, and every action and expectation becomes one row of the report.
Nothing is shared between scenarios, so no state can leak from one to the next.

Measurements come from where they are true: what the stations draw from the station
simulators (the physical truth), what the DSO sees from the master's received ASDUs,
and the gateway's mode and allocation from its core view (``runtime.view()``).

With a ``Target`` (``scenario run --target HOST[:PORT]``) there is no gateway here and
no simulated station: the master connects to a running gateway and only the DSO-side
steps and the telemetry expectations run (``spec.target_refusal`` keeps the rest out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Config, parse_config
from gateway.core.model import OcppVersion
from iec104.settings import PointConfig
from scenarios.csms_transactions import judge as judge_transactions
from scenarios.csms_transactions import ran_transactions
from scenarios.link_errors import describe as describe_failure
from scenarios.run_config import gateway_config
from scenarios.sim_csms import SimCsms
from scenarios.sim_station import Fleet, SimStation, StationEvent
from scenarios.spec import (
    CapInvariant,
    CsmsDownStep,
    CsmsUpStep,
    CutLinkStep,
    DsoShortSessionStep,
    EvDemandStep,
    EvLeavesStep,
    Expectation,
    InterrogateStep,
    RestoreLinkStep,
    Scenario,
    SetpointStep,
    SiteConfig,
    StationConnectStep,
    StationDisconnectStep,
    StationMeteringStep,
    Step,
    WaitStep,
)
from scenarios.station_spec import StationSpec

log = logging.getLogger(__name__)

POLL_S = 0.01  # how often an expectation is re-measured while it waits
# An anchor that is itself an expectation is the moment the runner *saw* it, up to one
# poll after it happened; "too early" allows that much, so it never blames the gateway
# for the runner's own polling.
EARLY_TOLERANCE_S = 5 * POLL_S
EQUALS_TOLERANCE = 0.5  # W, when an ``equals`` expectation gives none (bounds default to 0)
_QUALITY_BAD = 0xF1  # IV, NT, SB, BL, OV: any of them makes a value unusable for a pass
CAP_EPSILON_W = 0.01  # float sums of caps in 0.1 W steps; anything above this is a real excess


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the report: an action or an expectation and what was measured."""

    scenario: str
    step: str
    expected: str
    measured: str
    passed: bool
    timing_s: float | None = None
    # True when the condition already held at the first look, later than its anchor:
    # the real time is somewhere at or below timing_s.
    timing_upper_bound: bool = False


@dataclass
class ScenarioResult:
    scenario: str
    file: str
    rows: list[Row] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)


@dataclass(frozen=True, slots=True)
class Target:
    """A running gateway's IEC 104 listener (``scenario run --target HOST[:PORT]``)."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _SetupFailed(Exception):
    """The setup row already says why; the scenario stops there."""


# -- one scenario ------------------------------------------------------------------------


class ScenarioRun:
    def __init__(
        self,
        scenario: Scenario,
        time_scale: float = 1.0,
        workdir: Path | None = None,
        *,
        site: SiteConfig | None = None,
        target: Target | None = None,
    ) -> None:
        if not time_scale > 0 or not math.isfinite(time_scale):
            raise ValueError(f"time scale must be a positive number, got {time_scale}")
        if target is not None and time_scale != 1:
            raise ValueError("a running gateway's timeouts cannot be scaled: --target runs at time scale 1")
        self.scenario = scenario
        self.time_scale = time_scale
        self.workdir = workdir
        self.site = site
        self.target = target
        self.iec_host = "127.0.0.1" if target is None else target.host
        self.result = ScenarioResult(scenario.name, scenario.file)
        self.gateway: Any = None
        self.config: Config | None = None
        self.master: Any = None
        self.csms: SimCsms | None = None
        self._mute_masters: list[Any] = []  # links cut "silently": open, but no longer answering
        self.fleet = Fleet()
        self.iec_port = 0
        self.ocpp_port = 0
        # step name -> (monotonic, wall) at its end, and at its start (for stations_unchanged)
        self._anchors: dict[str, tuple[float, float]] = {}
        self._starts: dict[str, tuple[float, float]] = {}
        self._last_anchor = self._last_start = (time.monotonic(), time.time())
        self._cap_watch: CapWatch | None = None

    async def run(self) -> ScenarioResult:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ocpp809-scenario-", dir=self.workdir) as tmp:
            try:
                if self.target is not None:
                    await self._setup_target(self.target)
                else:
                    await self._setup(Path(tmp))
                if self.scenario.cap_invariant.check:
                    self._cap_watch = CapWatch(
                        self.fleet.stations,
                        lambda: self.gateway.runtime.view().limit_w,
                        self.scenario.cap_invariant,
                    )
                    self._cap_watch.start()
                for index, step in enumerate(self.scenario.steps):
                    await self._run_step(index, step)
            except _SetupFailed:
                pass
            except Exception as exc:  # a broken setup or step is a failed row, never a crash
                log.exception("scenario %s aborted", self.scenario.name)
                self._row("(aborted)", "scenario runs to its end", f"{type(exc).__name__}: {exc}", False)
            finally:
                if self._cap_watch is not None:
                    watch, self._cap_watch = self._cap_watch, None
                    with contextlib.suppress(Exception):
                        await watch.stop()
                    self._row("cap invariant", watch.describe(), *watch.verdict())
                await self._teardown()
        self.result.duration_s = time.monotonic() - started
        return self.result

    async def _setup(self, tmp: Path) -> None:
        from gateway.app import build_gateway  # the gateway's composition root, nothing else

        csms_url = None
        if self.scenario.csms.enabled:
            self.csms = SimCsms("127.0.0.1", 0, subprotocols=self.scenario.csms.subprotocols)
            await self.csms.start()
            csms_url = self.csms.url
        self.config = gateway_config(
            self.scenario.gateway,
            str(tmp / "store.sqlite3"),
            self.time_scale,
            csms_url,
            base=None if self.site is None else self.site.data,
            legacy_units=any(group.version == "legacy" for group in self.scenario.stations),
        )
        self.gateway = build_gateway(self.config)
        t0 = time.monotonic()
        await self.gateway.start()
        self.iec_port, self.ocpp_port = self._listening_ports()
        legacy_port = self._legacy_port()
        if self.scenario.dso.connect_at_start:
            await self._connect_master()
        for group in self.scenario.stations:
            for sid in group.ids():
                legacy = group.version == "legacy"
                spec = StationSpec(
                    station_id=sid,
                    version=OcppVersion.V201 if group.version == "2.0.1" else OcppVersion.V16,
                    demand_w=group.demand_w,
                    phases=group.phases,
                    max_power_w=group.max_power_w,
                    ramp_w_per_s=group.ramp_w_per_s,
                    meter_interval_s=group.meter_interval_s,
                    max_stack_level=group.max_stack_level,
                    rate_units=tuple(group.rate_units),  # type: ignore[arg-type]
                    password=group.password,
                    legacy=legacy,
                    timezone=self.config.legacy.timezone,
                )
                port = legacy_port if legacy else self.ocpp_port
                self.fleet.add(SimStation(spec, f"ws://127.0.0.1:{port}"))
        first = {sid for g in self.scenario.stations if g.connect_at_start for sid in g.ids()}
        self.fleet.start(first)
        count = len(first)
        try:
            await self.fleet.wait_booted(self.scenario.boot_timeout_s, first)
            booted = count
        except TimeoutError:
            booted = sum(self.fleet.stations[sid].booted.is_set() for sid in first)
        elapsed = time.monotonic() - t0
        dso = "DSO link up, " if self.master is not None else ""
        later = len(self.fleet.stations) - count
        joins = f" ({later} join later)" if later else ""
        self._row(
            "setup",
            f"gateway up, {dso}{count} stations booted{joins}",
            f"{booted} booted",
            booted == count,
            elapsed,
        )
        self._set_anchor("setup")

    async def _setup_target(self, target: Target) -> None:
        """A running gateway: its configuration is the site file (or the defaults) as it is."""
        self.config = parse_config(
            {} if self.site is None else self.site.data, "<defaults>" if self.site is None else self.site.path
        )
        self.iec_port = target.port
        t0 = time.monotonic()
        if self.scenario.dso.connect_at_start:
            expected = f"DSO link up to {target} (STARTDT confirmed)"
            try:
                await self._connect_master()
            except Exception as exc:
                self._row("setup", expected, describe_failure(exc), False, time.monotonic() - t0)
                raise _SetupFailed from exc
            self._row("setup", expected, "connected", True, time.monotonic() - t0)
        else:
            self._row("setup", f"running gateway at {target}", "no DSO link yet", True, 0.0)
        self._set_anchor("setup")

    def _listening_ports(self) -> tuple[int, int]:
        iec_port = ocpp_port = 0
        for adapter in self.gateway.adapters:
            kind = type(adapter).__name__
            if kind == "Iec104Outstation":
                iec_port = adapter.port
            elif kind == "StationServer":
                ocpp_port = adapter.port
        if not iec_port or not ocpp_port:
            missing = [
                n for n, p in (("IEC 104 outstation", iec_port), ("OCPP station server", ocpp_port)) if not p
            ]
            raise RuntimeError(
                f"the gateway has no {' and no '.join(missing)} (gateway/app.py::_build_adapters)"
            )
        return iec_port, ocpp_port

    def _legacy_port(self) -> int:
        """The legacy listener's port (0: not enabled)."""
        for adapter in self.gateway.adapters:
            if type(adapter).__name__ == "StationServer" and adapter.legacy is not None:
                return int(adapter.legacy_port)
        return 0

    async def _connect_master(self) -> None:
        from iec104.master import Iec104Master

        assert self.config is not None
        master = Iec104Master(
            self.iec_host,
            self.iec_port,
            common_address=self.config.iec104.common_address,
            ssl_context=self._ssl_context(),
        )
        await master.__aenter__()
        self.master = master

    def _ssl_context(self) -> ssl.SSLContext | None:
        return None if self.target is None else self.target.ssl_context

    async def _close_master(self, how: str = "close") -> None:
        """End the DSO link: ``close`` (FIN), ``abort`` (RST) or ``silent`` (open, but mute)."""
        master, self.master = self.master, None
        if master is None:
            return
        if how == "silent":
            master.answer_test_frames = False  # still connected: the outstation must find out
            self._mute_masters.append(master)
            return
        if how == "abort":
            master.abort()
        await master.close()

    async def _close_mute_masters(self) -> None:
        mute, self._mute_masters = self._mute_masters, []
        for master in mute:
            await master.close()

    async def _teardown(self) -> None:
        with contextlib.suppress(Exception):
            await self._close_master()
        with contextlib.suppress(Exception):
            await self._close_mute_masters()
        with contextlib.suppress(Exception):
            await self.fleet.stop()
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.stop()
        if self.csms is not None:
            with contextlib.suppress(Exception):
                await self.csms.stop()

    # -- steps -----------------------------------------------------------------------------

    async def _run_step(self, index: int, step: Step) -> None:
        label = step.name or _label(step)
        start = (time.monotonic(), time.time())
        try:
            if isinstance(step, Expectation):
                await self._expect(label, step)
            else:
                await self._act(label, step)
        except Exception as exc:
            log.exception("step %d (%s) failed", index, label)
            self._row(label, _label(step), f"error: {type(exc).__name__}: {exc}", False)
        self._set_anchor(step.name, start)

    def _set_anchor(self, name: str, start: tuple[float, float] | None = None) -> None:
        self._last_anchor = (time.monotonic(), time.time())
        self._last_start = start or self._last_anchor
        if name:
            self._anchors[name] = self._last_anchor
            self._starts[name] = self._last_start

    def _scaled(self, seconds: float, scale: bool = True) -> float:
        return seconds / self.time_scale if scale else seconds

    async def _act(self, label: str, step: Step) -> None:
        t0 = time.monotonic()
        match step:
            case SetpointStep():
                await self._setpoint(label, step)
            case CutLinkStep():
                had = self.master is not None
                await self._close_master(step.how)
                how = {"close": "closed", "abort": "aborted (RST)", "silent": "master silent"}[step.how]
                self._row(label, "DSO link cut", how if had else "no link was up", had, time.monotonic() - t0)
            case DsoShortSessionStep():
                await self._short_session(label, step)
            case RestoreLinkStep():
                await self._close_master()
                await self._close_mute_masters()
                await self._connect_master()
                self._row(label, "DSO link up (STARTDT confirmed)", "connected", True, time.monotonic() - t0)
            case WaitStep():
                seconds = self._scaled(step.for_s, step.scale)
                await asyncio.sleep(seconds)
                self._row(label, f"wait {step.for_s:g} s", f"waited {seconds:.2f} s", True, seconds)
            case StationDisconnectStep():
                station = self.fleet.stations[step.station]
                await station.disconnect(step.away_s, step.how)
                self._row(
                    label,
                    f"{step.station} away {step.away_s:g} s",
                    "aborted (RST, no close frame)" if step.how == "abort" else "disconnected",
                    True,
                    time.monotonic() - t0,
                )
            case StationConnectStep():
                self.fleet.stations[step.station].start()
                self._row(label, f"{step.station} joins", "connecting", True, time.monotonic() - t0)
            case EvLeavesStep():
                self.fleet.stations[step.station].ev_leaves()
                self._row(label, f"{step.station} EV leaves", "unplugged", True, 0.0)
            case EvDemandStep():
                self.fleet.stations[step.station].set_demand(step.demand_w)
                self._row(label, f"{step.station} EV wants {step.demand_w:g} W", "set", True, 0.0)
            case StationMeteringStep():
                self.fleet.stations[step.station].set_metering(step.enabled)
                state = "on" if step.enabled else "off"
                self._row(label, f"{step.station} metering {state}", state, True, 0.0)
            case CsmsDownStep():
                assert self.csms is not None
                await self.csms.stop()
                self._row(label, "CSMS down", "stopped", True, time.monotonic() - t0)
            case CsmsUpStep():
                assert self.csms is not None
                await self.csms.start()  # the same port: the gateway reconnects on its own
                self._row(label, "CSMS up", f"listening on {self.csms.url}", True, time.monotonic() - t0)
            case InterrogateStep():
                if self.master is None:
                    self._row(label, "general interrogation answered", "no DSO link", False)
                    return
                values = await self.master.interrogate()
                self._row(
                    label,
                    "general interrogation answered",
                    f"{len(values)} values",
                    True,
                    time.monotonic() - t0,
                )

    async def _setpoint(self, label: str, step: SetpointStep) -> None:
        assert self.config is not None
        points = self.config.iec104.points
        point = points.limit_setpoint_time_tagged if step.time_tagged else points.limit_setpoint
        ioa = step.ioa if step.ioa is not None else point.ioa
        expected = f"ACT_CON {step.expect_confirm}"
        if self.master is None:
            self._row(label, expected, "no DSO link", False)
            return
        value = _to_point_unit(step.value_w, point)
        tag = time.time() - step.tag_age_s if step.time_tagged else None
        t0 = time.monotonic()
        con = await self.master.send_setpoint(ioa, value, time_tag=tag, timeout_s=step.within_s)
        elapsed = time.monotonic() - t0
        got = "positive" if con.positive else "negative"
        cot = getattr(con, "cot", None)
        measured = got if con.positive else f"{got} (COT {int(cot)})" if cot is not None else got
        self._row(label, expected, measured, got == step.expect_confirm, elapsed)

    async def _short_session(self, label: str, step: DsoShortSessionStep) -> None:
        """A master of its own: connect, STARTDT, one setpoint, drop without STOPDT."""
        from iec104.master import Iec104Master

        assert self.config is not None
        iec = self.config.iec104
        point = iec.points.limit_setpoint
        expected = f"ACT_CON {step.expect_confirm}, session < link_poll_s {iec.link_poll_s:g} s"
        master = Iec104Master(
            self.iec_host,
            self.iec_port,
            common_address=iec.common_address,
            answer_timeout_s=step.within_s,
            ssl_context=self._ssl_context(),
        )
        t0 = time.monotonic()
        try:
            await master.connect()
            await master.start_data_transfer()
            con = await master.send_setpoint(
                point.ioa, _to_point_unit(step.value_w, point), timeout_s=step.within_s
            )
            if step.how == "abort":
                master.abort()
        finally:
            await master.close()
        lasted = time.monotonic() - t0
        got = "positive" if con.positive else f"negative (COT {int(con.cot)})"
        dropped = "RST" if step.how == "abort" else "FIN"
        passed = (con.positive == (step.expect_confirm == "positive")) and lasted < iec.link_poll_s
        self._row(label, expected, f"{got}, {dropped} at {lasted:.3f} s", passed, lasted)

    # -- expectations ------------------------------------------------------------------------

    async def _expect(self, label: str, exp: Expectation) -> None:
        anchor_mono, _ = self._anchors[exp.since] if exp.since else self._last_anchor
        expected = exp.describe()
        if exp.expect == "stations_unchanged":
            # From the *start* of the anchor step: a change made before an ACT_CON counts too.
            start_mono, start_wall = self._starts[exp.since] if exp.since else self._last_start
            await self._expect_unchanged(label, exp, start_mono, start_wall)
            return
        if exp.for_s:
            end = anchor_mono + self._scaled(exp.for_s, exp.scale)
            value, looks = "not checked", 0
            while True:
                sample, ok = self._measure(exp)
                now = time.monotonic()
                if looks and now > end + EARLY_TOLERANCE_S:
                    break  # a look after the window (the loop ran late) proves nothing either way
                value, looks = sample, looks + 1
                if not ok:
                    held = now - anchor_mono
                    self._row(label, expected, f"{value} after {held:.2f} s", False, held)
                    return
                if now >= end:
                    break
                await asyncio.sleep(min(POLL_S, max(0.0, end - now)))
            self._row(label, expected, value, True, max(0.0, min(time.monotonic(), end) - anchor_mono))
            return
        not_before = anchor_mono + self._scaled(exp.after_s, exp.scale)
        deadline = not_before + exp.within_s
        first = True
        while True:
            value, ok = self._measure(exp)
            now = time.monotonic()
            if ok:
                elapsed = now - anchor_mono
                bound = first and elapsed > 2 * POLL_S
                if exp.after_s and now < not_before - EARLY_TOLERANCE_S:
                    self._row(
                        label, expected, f"{value} too early, at {elapsed:.2f} s", False, elapsed, bound
                    )
                elif now > deadline + EARLY_TOLERANCE_S:
                    self._row(label, expected, f"{value} late, at {elapsed:.2f} s", False, elapsed, bound)
                else:
                    self._row(label, expected, f"{value}", True, elapsed, bound)
                return
            first = False
            if now >= deadline:
                self._row(label, expected, f"{value} (not reached)", False, now - anchor_mono)
                return
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - now)))

    async def _expect_unchanged(
        self, label: str, exp: Expectation, anchor_mono: float, anchor_wall: float
    ) -> None:
        end = anchor_mono + self._scaled(exp.for_s, exp.scale)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        changes = [
            (sid, e)
            for sid, station in self.fleet.stations.items()
            for e in station.events
            if e.kind in ("limit", "cleared") and e.at_s >= anchor_wall
        ]
        held = time.monotonic() - anchor_mono
        if changes:
            sid, first = changes[0]
            text = f"{len(changes)} change(s), first {sid} -> {first.value} W at {first.at_s - anchor_wall:.2f} s"
            self._row(label, exp.describe(), text, False, held)
        else:
            self._row(label, exp.describe(), "no change", True, held)

    def _measure(self, exp: Expectation) -> tuple[str, bool]:
        """Measure the expectation's quantity now: (text for the report, whether it holds)."""
        stations = self.fleet.stations
        if exp.expect != "telemetry" and self.gateway is None:
            return "not measurable against a running gateway", False  # spec.target_refusal keeps it out
        match exp.expect:
            case "site_power_w":
                return _judge_number(self.fleet.total_power_w(), exp, "W")
            case "station_power_w":
                assert exp.station is not None
                return _judge_number(stations[exp.station].power_w(), exp, "W")
            case "station_limits_total_w":
                total = 0.0
                for s in stations.values():
                    limit = s.limit_w()
                    total += s.spec.max_power_w if limit is None else min(limit, s.spec.max_power_w)
                return _judge_number(total, exp, "W")
            case "station_caps_total_w":
                caps = [s.cap_w() for s in stations.values()]
                text, ok = _judge_number(sum(c for c in caps if c is not None), exp, "W")
                unbound = caps.count(None)
                return (f"{text} ({unbound} not bound yet)" if unbound else text), ok
            case "station_cap_w":
                assert exp.station is not None
                cap = stations[exp.station].cap_w()
                return ("not bound yet", False) if cap is None else _judge_number(cap, exp, "W")
            case "limit_in_force_w":
                return _judge_number(self.gateway.runtime.view().limit_w, exp, "W")
            case "mode":
                mode = self.gateway.runtime.view().mode.value
                return mode, mode == exp.equals
            case "enforced":
                enforced = self.gateway.runtime.view().enforced
                want = True if exp.equals is None else bool(exp.equals)
                return str(enforced).lower(), enforced == want
            case "all_within_allocation":
                return self._within_allocation(self.gateway.runtime.view(), exp)
            case "telemetry":
                return self._telemetry(exp)
            case "csms_stations_sent":
                return self._csms_count(exp)
            case "csms_transactions":
                return self._csms_transactions(exp)
            case "csms_schema_failures":
                return self._csms_schema_failures(exp)
            case "csms_caps_told":
                return self._csms_caps_told(exp)
            case "csms_reused_ids":
                assert self.csms is not None
                reused = self.csms.reused_ids()
                _, ok = _judge_number(float(len(reused)), exp, "")
                return f"{len(reused)} reused" + (f"; first: {reused[0]}" if reused else ""), ok
            case "csms_refused":
                assert self.csms is not None
                refused = self.csms.refused
                _, ok = _judge_number(float(len(refused)), exp, "")
                first = f": first {refused[0].station_id} offering {refused[0].offered!r}" if refused else ""
                return f"{len(refused)} refused{first}", ok
        raise AssertionError(f"unhandled expectation {exp.expect}")  # pragma: no cover

    def _within_allocation(self, view: Any, exp: Expectation) -> tuple[str, bool]:
        allocated = {s.station_id: s.limit_w for s in view.stations}
        over = []
        for sid, station in self.fleet.stations.items():
            power = station.power_w()
            share = allocated.get(sid)
            if share is None or power > share + (exp.tolerance or 0.0):
                over.append(f"{sid} {power:.0f}/{'-' if share is None else f'{share:.0f}'} W")
        want = True if exp.equals is None else bool(exp.equals)
        text = "all within" if not over else "over: " + ", ".join(over[:3]) + ("..." if len(over) > 3 else "")
        return text, (not over) == want

    def _csms_count(self, exp: Expectation) -> tuple[str, bool]:
        """Distinct stations whose ``action`` CALL reached the CSMS (since the anchor step began)."""
        assert self.csms is not None
        since_wall = self._starts[exp.since][1] if exp.since else 0.0
        senders = {
            f.station_id
            for f in self.csms.frames
            if f.direction == "in" and f.at_s >= since_wall and f.action == exp.action
        }
        _, ok = _judge_number(float(len(senders)), exp, "")
        return f"{len(senders)} station(s)", ok

    def _csms_transactions(self, exp: Expectation) -> tuple[str, bool]:
        """How many transactions the stations ended are whole at the CSMS, and no problem
        with any (in order, once, none missing: ``scenarios.csms_transactions``)."""
        assert self.csms is not None
        ran = {sid: ran_transactions(s.events) for sid, s in self.fleet.stations.items()}
        native = [sid for sid, s in self.fleet.stations.items() if s.spec.version is OcppVersion.V201]
        verdict = judge_transactions(ran, self.csms.frames, native, self.csms.undelivered)
        _, ok = _judge_number(float(verdict.whole), exp, "")
        return verdict.describe(), ok and not verdict.problems

    def _csms_caps_told(self, exp: Expectation) -> tuple[str, bool]:
        """Stations whose latest NotifyChargingLimit told the CSMS the cap they are bound by
        now (``SimStation.cap_w``), within ``upstream.limit_change_significance`` of the larger."""
        assert self.csms is not None and self.config is not None
        significance = self.config.upstream.limit_change_significance
        told = self.csms.limits_told()
        off = []
        for sid, station in self.fleet.stations.items():
            cap, limit = station.cap_w(), told.get(sid)
            if cap is None or limit is None or not abs(limit - cap) <= significance * max(limit, cap):
                said = "nothing" if limit is None else f"{limit:.0f} W"
                off.append(f"{sid} told {said}, bound by {'-' if cap is None else f'{cap:.0f}'} W")
        right = len(self.fleet.stations) - len(off)
        _, ok = _judge_number(float(right), exp, "")
        text = f"{right} of {len(self.fleet.stations)} within {significance:.0%}"
        return (f"{text}; {'; '.join(off[:2])}" if off else text), ok

    def _csms_schema_failures(self, exp: Expectation) -> tuple[str, bool]:
        """Frames of the whole run the ``ocpp`` library's schemas refuse, and CALLERRORs."""
        assert self.csms is not None
        failures = self.csms.schema_failures()
        _, ok = _judge_number(float(len(failures)), exp, "")
        links = ", ".join(f"{n} on {p}" for p, n in sorted(Counter(self.csms.subprotocols.values()).items()))
        text = f"{len(failures)} in {len(self.csms.frames)} frames ({links or 'no link'})"
        return (f"{text}; first: {failures[0]}" if failures else text), ok

    def _telemetry(self, exp: Expectation) -> tuple[str, bool]:
        assert self.config is not None and exp.ioa is not None
        if self.master is None:
            return "no DSO link", False
        latest = self.master.latest(exp.ioa)
        if latest is None:
            return "nothing received", False
        unit = _point_unit(self.config, exp.ioa)
        raw = latest.value
        flags = _quality_text(latest.quality)
        quality_ok = _quality_matches(latest.quality, exp.quality)
        has_comparator = any(c is not None for c in (exp.equals, exp.at_most, exp.at_least))
        if isinstance(raw, bool) or isinstance(exp.equals, bool):
            value_b = bool(raw)
            ok = not has_comparator or isinstance(exp.equals, bool) and value_b == exp.equals
            return f"{str(value_b).lower()}{flags}", ok and quality_ok
        value = float(raw) * (1000.0 if unit == "kW" else 1.0) if raw is not None else math.nan
        text, ok = _judge_number(value, exp, "W") if has_comparator else (f"{value:.1f} W", True)
        tag = latest.time_tag
        if tag is not None and exp.quality == "good":
            tag_s = _tag_seconds(tag)
            if tag_s is not None:
                age = latest.received_at_s - tag_s
                text += f", tag age {age:.2f} s"
                ok = ok and abs(age) <= exp.max_tag_age_s  # a good value carries a current time tag
        return text + flags, ok and quality_ok

    def _row(
        self,
        step: str,
        expected: str,
        measured: str,
        passed: bool,
        timing_s: float | None = None,
        upper_bound: bool = False,
    ) -> None:
        row = Row(self.scenario.name, step, expected, measured, passed, timing_s, upper_bound)
        self.result.rows.append(row)
        log.debug(
            "%s | %s | %s | %s | %s",
            row.scenario,
            row.step,
            row.expected,
            row.measured,
            "PASS" if passed else "FAIL",
        )


class CapWatch:
    """The cap invariant, judged from the stations' side (see ``spec.CapInvariant``).

    It looks whenever a station records something (a profile accepted, a limit moving,
    a validTo passing: the instants a cap can change) and every poll in between: the sum
    of ``SimStation.cap_w()`` against the gateway's limit in force. A lower limit opens a
    cut window of ``cut_within_s``: inside it the total may be above the new limit, never
    above the limit before the cut; after it, it must fit. The window is time, not "until
    the caps first fit": a raise sent into free room just before the cut may still land
    after the cuts (the gateway counts it from when it was sent, so it fits the ledger).
    """

    def __init__(
        self,
        stations: dict[str, SimStation],
        limit_w: Callable[[], float],
        settings: CapInvariant,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stations = stations
        self.limit_w = limit_w
        self.cut_within_s = settings.cut_within_s
        self.clock = clock
        self.started = clock()
        self.looks = 0
        self.violations = 0
        self.first_violation = ""
        self.peak_total_w = 0.0
        self.peak_limit_w = 0.0
        self.min_room_w = math.inf  # limit - total outside cut windows
        self.windows = 0
        self.longest_over_s = 0.0  # how long after a cut the caps were last seen above the limit
        self._last_limit: float | None = None
        self._window_start: float | None = None
        self._window_bound_w = 0.0  # the limit in force before the window opened
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for station in self.stations.values():
            station.listeners.append(self._on_event)
        self.look()
        self._task = asyncio.create_task(self._poll(), name="cap-watch")

    async def stop(self) -> None:
        self.look()
        for station in self.stations.values():
            with contextlib.suppress(ValueError):
                station.listeners.remove(self._on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            self.look()

    def _on_event(self, _station: SimStation, event: StationEvent) -> None:
        if event.kind in ("profile", "limit", "cleared", "connected", "disconnected"):
            self.look()

    def look(self) -> None:
        now = self.clock()
        limit = self.limit_w()
        caps = {sid: s.cap_w() for sid, s in self.stations.items()}
        total = sum(c for c in caps.values() if c is not None)
        self.looks += 1
        if self._last_limit is not None and limit < self._last_limit - CAP_EPSILON_W:
            if self._window_start is None:
                self.windows += 1
                self._window_bound_w = self._last_limit
            self._window_start = now  # a lower limit (again): the window runs from here
        self._last_limit = limit
        if self._window_start is not None and now - self._window_start > self.cut_within_s:
            self._window_start = None
        over = total > limit + CAP_EPSILON_W
        if self._window_start is not None:
            bound = max(self._window_bound_w, limit)
            if total > bound + CAP_EPSILON_W:
                self._violate(now, f"caps {total:.1f} W > {bound:.1f} W, the limit before the cut", caps)
            if over:
                self.longest_over_s = max(self.longest_over_s, now - self._window_start)
        elif over:
            self._violate(now, f"caps {total:.1f} W > limit {limit:.1f} W", caps)
        else:
            self.min_room_w = min(self.min_room_w, limit - total)
        if total > self.peak_total_w:
            self.peak_total_w, self.peak_limit_w = total, limit

    def _violate(self, now: float, what: str, caps: dict[str, float | None]) -> None:
        self.violations += 1
        if not self.first_violation:
            each = ", ".join(f"{sid} {'-' if c is None else f'{c:.0f}'}" for sid, c in caps.items())
            self.first_violation = f"at {now - self.started:.2f} s: {what} ({each})"

    def describe(self) -> str:
        return f"caps <= limit at every instant, cuts fit in {_fmt_s(self.cut_within_s)} s"

    def verdict(self) -> tuple[str, bool, float]:
        lasted = self.clock() - self.started
        if self.violations:
            return f"{self.violations} over; first {self.first_violation}", False, lasted
        room = "-" if math.isinf(self.min_room_w) else f"{self.min_room_w:.0f}"
        text = (
            f"peak {self.peak_total_w:.0f}/{self.peak_limit_w:.0f} W, room >= {room} W, "
            f"{self.windows} cut(s) over <= {self.longest_over_s:.3f} s, {self.looks} looks"
        )
        return text, True, lasted


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g}"


def _label(step: Step) -> str:
    match step:
        case SetpointStep():
            kind = "C_SE_TC_1" if step.time_tagged else "C_SE_NC_1"
            return f"DSO sends {step.value_w:g} W ({kind})"
        case CutLinkStep():
            return "cut the IEC 104 link"
        case DsoShortSessionStep():
            return f"short DSO session with {step.value_w:g} W"
        case RestoreLinkStep():
            return "restore the IEC 104 link"
        case WaitStep():
            return f"wait {step.for_s:g} s"
        case StationDisconnectStep():
            return f"{step.station} disconnects"
        case EvDemandStep():
            return f"{step.station} demand {step.demand_w:g} W"
        case StationConnectStep():
            return f"{step.station} connects"
        case EvLeavesStep():
            return f"{step.station} EV leaves"
        case InterrogateStep():
            return "general interrogation"
        case StationMeteringStep():
            return f"{step.station} {'resumes' if step.enabled else 'stops'} metering"
        case CsmsDownStep():
            return "the CSMS goes down"
        case CsmsUpStep():
            return "the CSMS comes back"
        case Expectation():
            return f"check {step.subject()}"
    return type(step).__name__  # pragma: no cover


def _judge_number(value: float, exp: Expectation, unit: str) -> tuple[str, bool]:
    text = f"{value:.1f} {unit}" if math.isfinite(value) else "no value"
    if not math.isfinite(value):
        return text, False
    if exp.at_most is not None and exp.at_least is not None:  # a band
        slack = exp.tolerance or 0.0
        return text, exp.at_least - slack <= value <= exp.at_most + slack
    if exp.at_most is not None:
        return text, value <= exp.at_most + (exp.tolerance or 0.0)
    if exp.at_least is not None:
        return text, value >= exp.at_least - (exp.tolerance or 0.0)
    if isinstance(exp.equals, int | float) and not isinstance(exp.equals, bool):
        tolerance = EQUALS_TOLERANCE if exp.tolerance is None else exp.tolerance
        return text, abs(value - float(exp.equals)) <= tolerance
    return text, False


def _to_point_unit(value_w: float, point: PointConfig) -> float:
    return value_w / 1000.0 if point.unit == "kW" else value_w


def _point_unit(config: Config, ioa: int) -> str:
    points = config.iec104.points
    for role in points.__dataclass_fields__:
        point: PointConfig = getattr(points, role)
        if point.ioa == ioa:
            return point.unit
    return "W"


def _quality_matches(quality: int, expected: str) -> bool:
    """``good``: no flag at all; ``not_topical``: NT without IV; ``invalid``: IV."""
    if expected == "invalid":
        return bool(quality & 0x80)
    if expected == "not_topical":
        return bool(quality & 0x40) and not quality & 0x80
    return not quality & _QUALITY_BAD


def _quality_text(quality: int) -> str:
    names = [
        n
        for bit, n in ((0x80, "IV"), (0x40, "NT"), (0x20, "SB"), (0x10, "BL"), (0x01, "OV"))
        if quality & bit
    ]
    return f" [{' '.join(names)}]" if names else ""


def _tag_seconds(tag: Any) -> float | None:
    """Epoch seconds of a CP56Time2a tag (None when the outstation marked it invalid)."""
    return None if tag.invalid else float(tag.timestamp_s)


# -- many scenarios ------------------------------------------------------------------------


async def run_scenarios(
    scenarios: list[Scenario],
    time_scale: float = 1.0,
    on_result: Callable[[ScenarioResult], None] | None = None,
    *,
    site: SiteConfig | None = None,
    target: Target | None = None,
) -> list[ScenarioResult]:
    """Run each scenario in its own gateway instance (or each on its own DSO link to
    ``target``), one after the other."""
    results = []
    for scenario in scenarios:
        result = await ScenarioRun(scenario, time_scale, site=site, target=target).run()
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
