"""The ocpp809 station server under test, wired to a real core the way ``gateway.app`` does.

The fan-out is driven exactly as in production: a DSO setpoint goes into
``CoreRuntime.submit_setpoint``, the arbiter allocates, the station server sends the
profiles, and each station's answer comes back as a ``ProfileResult`` event.

The core works on a commitment ledger (``gateway.core.fleet``): cuts go out at once, a
raise only into room that is free, so one setpoint (or one join) may take several
waves of ``ApplyStationLimit``. The clock of a round therefore stops when every
station the round profiled has Accepted its *latest* allocation and the core has
nothing left to send: no raise waiting, every online station holding the share it
wants (``runtime.view()``). The core's own ``AllStationsEnforced`` is no longer the
end: it says the commitments fit the limit, which after a raise is true at once.

Bench-only instrumentation: a decision listener (allowed to every adapter) and a
thin wrapper around ``runtime.submit`` that timestamps ``ProfileResult`` and counts
``MeterSampled`` events on their way into the core. Nothing in ``ocpp_side/`` or the
core is changed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.baseline_csms import FanOutResult, StormResult
from gateway.config import Config, parse_config
from gateway.core.decisions import ApplyStationLimit, Decision
from gateway.core.events import Event, MeterSampled, ProfileResult, SetpointReceived, StationReleased
from gateway.core.model import ProfileOutcome
from gateway.core_build import build_core
from gateway.runtime import CoreRuntime
from gateway.store import Store

STATION_MAX_W = 22000.0
STATION_MIN_W = 4140.0


def bench_config(stations: int, store_path: str, options: dict[str, Any] | None = None) -> Config:
    """Limits wide enough that every setpoint of the benchmark changes every station's share.

    ``options`` (all optional): ``ocpp_port`` (a fixed port, so that a restarted gateway comes
    back where the stations look for it), ``iec104`` (True: an outstation on 127.0.0.1, port
    chosen at start), ``tls`` ({cert_file, key_file, ca_file}: wss, no client certificate),
    ``security_profile`` and ``passwords`` (station id -> HTTP Basic Auth password),
    ``csms_url`` (the Local Controller relay toward that CSMS; its outbox next to the store).
    """
    opts = options or {}
    site_max_w = max(1e6, stations * STATION_MAX_W * 2)
    ocpp: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "port": int(opts.get("ocpp_port", 0)),
        "station_max_power_w": STATION_MAX_W,
        "station_min_power_w": STATION_MIN_W,
    }
    tls = opts.get("tls")
    if tls:
        ocpp["tls"] = {"enabled": True, **tls, "require_client_cert": False}
    if opts.get("security_profile"):
        ocpp["security_profile"] = int(opts["security_profile"])
    passwords: dict[str, str] = opts.get("passwords") or {}
    if passwords:
        ocpp["stations"] = {station_id: {"password": pw} for station_id, pw in passwords.items()}
    doc: dict[str, Any] = {
        "limits": {
            "min_limit_w": 1000.0,
            "max_limit_w": site_max_w,
            # Below one station's minimum: every fallback share is 0 W whatever the station count,
            # so stations connecting do not reshuffle everybody's fallback profile.
            "fallback_limit_w": 1000.0,
            "initial_limit_w": site_max_w,
        },
        "ocpp": ocpp,
        # The per-station raise rate limit (flash wear, 30 s by default) would hold every
        # other round (10 -> 11 kW) for up to 30 s by design; the bench measures the fan-out.
        "sharing": {"raise_interval_s": 0.0},
        "store": {"path": store_path},
        "metrics": {"enabled": False},
    }
    if opts.get("iec104"):
        doc["iec104"] = {"listen_host": "127.0.0.1", "port": 0, "allowed_masters": ["127.0.0.1"]}
    if opts.get("csms_url"):
        doc["upstream"] = {
            "csms_url": opts["csms_url"],
            "outbox_path": str(Path(store_path).with_name("outbox.sqlite3")),
        }
    return parse_config(doc, "<bench>")


def load_station_server() -> type[Any]:
    """Find ``StationServer`` in ocpp_side wherever its author put it."""
    for name in ("ocpp_side", "ocpp_side.server", "ocpp_side.station_server", "ocpp_side.stations"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = getattr(module, "StationServer", None)
        if cls is not None:
            return cls  # type: ignore[no-any-return]
    raise ImportError("ocpp_side has no StationServer yet")


class _Tracker:
    """One measured change (a setpoint, a storm, a join): every allocation it causes, until
    each profiled station holds its latest one and the core has nothing left to send."""

    def __init__(self, loop: asyncio.AbstractEventLoop, watch: str | None = None) -> None:
        self.t0 = time.perf_counter()
        self.expected: dict[str, ApplyStationLimit] = {}  # station -> its latest allocation
        self.accepted_at: dict[str, float] = {}  # station -> when it Accepted that one (s after t0)
        self.done: asyncio.Future[float] = loop.create_future()
        self.first_sent: asyncio.Future[None] = loop.create_future()  # the first allocation it caused
        self.armed = True  # a storm arms it after its last setpoint only
        self.sent_when_armed = 0  # ... and then counts only once an allocation follows that setpoint
        self.watch = watch  # a joining station that must be among those profiled
        self.sent = 0  # ApplyStationLimit decisions seen

    def outstanding(self) -> int:
        return len(self.expected) - len(self.accepted_at)


class GatewayUnderTest:
    def __init__(self, stations_hint: int, options: dict[str, Any] | None = None) -> None:
        options = options or {}
        # A store kept by the harness (store_dir) survives this process: a restart resumes it.
        self._tmp = None if options.get("store_dir") else tempfile.TemporaryDirectory(prefix="ocpp809-bench-")
        folder = options.get("store_dir") or (self._tmp.name if self._tmp is not None else "")
        self.config = bench_config(stations_hint, str(Path(folder) / "bench.sqlite3"), options)
        self.runtime: CoreRuntime | None = None
        self.server: Any = None
        self.outstation: Any = None
        self.meter_samples = 0
        self.last_power_w: dict[str, float] = {}
        self._tracker: _Tracker | None = None
        # Every setpoint on its way into the core (from the master or the harness):
        # (perf_counter at arrival, seconds in submit_setpoint, stations awaiting an answer to a
        # profile at arrival or None, accepted, peer).
        self.setpoints_seen: list[tuple[float, float, int | None, bool, str]] = []
        # Every command c104 handed to the outstation, timed on c104's thread: (perf_counter at
        # entry, seconds until the answer was decided: decoding, the hand-over to the loop, the
        # core, the way back to the thread).
        self.commands_seen: list[tuple[float, float]] = []
        self._lag_task: asyncio.Task[None] | None = None
        self.lag_max_s = 0.0  # how late the event loop ran at most, since the last loop_lag()
        self.lag_over_100ms = 0

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def iec104_port(self) -> int | None:
        return None if self.outstation is None else int(self.outstation.port)

    def _awaiting(self) -> int | None:
        """Stations with an unanswered profile right now: a fan-out is running (bench-only
        reading of the core's fleet; O(1), so timing a setpoint does not slow it down)."""
        assert self.runtime is not None
        fleet = self.runtime.arbiter.fleet
        awaiting = getattr(fleet, "_awaiting", None)
        if awaiting is None:
            return None
        return len(awaiting) + len(getattr(fleet, "raises_waiting", ()))

    async def start(self) -> None:
        config = self.config
        # The bench starts on an empty store in INITIAL (initial_limit_w), as the core does when
        # nothing is stored; gateway.app would apply store.missing_start, which the bench skips.
        runtime = build_core(
            config, Store(config.store.path), time.time, missing_start=None, start_reason="bench"
        )
        self.runtime = runtime
        inner_submit = runtime.submit

        def submit(event: Event) -> list[Decision]:
            if type(event) is ProfileResult:
                arrived = time.perf_counter()
                decisions = inner_submit(event)  # may send the raises this answer made room for
                self._on_profile_result(event, arrived)
                return decisions
            if type(event) is MeterSampled:
                self.meter_samples += 1
                self.last_power_w[event.station_id] = event.power_w
            return inner_submit(event)

        runtime.submit = submit  # type: ignore[method-assign]
        inner_setpoint = runtime.submit_setpoint

        async def submit_setpoint(event: SetpointReceived) -> Any:
            arrived = time.perf_counter()
            awaiting = self._awaiting()
            outcome = await inner_setpoint(event)
            took = time.perf_counter() - arrived
            self.setpoints_seen.append((arrived, took, awaiting, bool(outcome.accepted), event.peer))
            return outcome

        runtime.submit_setpoint = submit_setpoint  # type: ignore[method-assign]
        station_server_cls = load_station_server()
        self.server = station_server_cls(config.ocpp, config.upstream, runtime)
        runtime.scheduler.start()
        runtime.start()
        runtime.add_listener(self._on_decisions)
        await self.server.start()
        self._lag_task = asyncio.get_running_loop().create_task(self._watch_lag())
        if self.config.iec104.listen_host == "127.0.0.1":  # asked for (the default listens on 0.0.0.0)
            from iec104.outstation import Iec104Outstation  # c104 only where an outstation runs

            outstation = self.outstation = Iec104Outstation(self.config.iec104, runtime)
            inner_decide = outstation._decide_command  # called on c104's thread for every command

            def decide_command(*args: Any, **kwargs: Any) -> Any:
                entered = time.perf_counter()
                try:
                    return inner_decide(*args, **kwargs)
                finally:
                    self.commands_seen.append((entered, time.perf_counter() - entered))

            outstation._decide_command = decide_command  # type: ignore[method-assign]
            await outstation.start()

    def quiet(self) -> None:
        """Teardown: N stations leaving go offline still reserved, one WARNING each; only errors now."""
        logging.getLogger("gateway.runtime").setLevel(logging.ERROR)
        logging.getLogger("iec104.outstation").setLevel(logging.ERROR)  # the master leaving

    async def _watch_lag(self) -> None:
        """Bench-only: how late the loop runs a 20 ms timer (a setpoint's hand-over waits as long)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.02
            await asyncio.sleep(0.02)
            late = loop.time() - due
            self.lag_max_s = max(self.lag_max_s, late)
            if late > 0.1:
                self.lag_over_100ms += 1

    def loop_lag(self) -> dict[str, Any]:
        """The loop's worst lateness and the 20 ms ticks more than 100 ms late since the last call."""
        taken = {"max_s": self.lag_max_s, "over_100ms": self.lag_over_100ms}
        self.lag_max_s, self.lag_over_100ms = 0.0, 0
        return taken

    async def stop(self) -> None:
        self.quiet()
        if self._lag_task is not None:
            self._lag_task.cancel()
        try:
            if self.outstation is not None:
                await self.outstation.stop()
            if self.server is not None:
                await self.server.stop()
        finally:
            if self.runtime is not None:
                await self.runtime.close()
            if self._tmp is not None:
                self._tmp.cleanup()

    def connected(self) -> int:
        """Stations online (the core keeps offline stations that still hold its profiles)."""
        assert self.runtime is not None
        return sum(1 for s in self.runtime.view().stations if s.online)

    def settled(self) -> bool:
        """The core has nothing left to send: every online station holds the share it wants."""
        assert self.runtime is not None
        view = self.runtime.view()
        return (
            view.enforced and not view.raises_waiting and all(s.enforced for s in view.stations if s.online)
        )

    def ready(self, stations: int) -> bool:
        """``stations`` online, each holding its latest allocation, no raise waiting."""
        return self.connected() == stations and self.settled()

    def diagnose(self) -> dict[str, Any]:
        """Why the core is not settled: what waits, what is unanswered, what the sums say (bench-only
        reading of the core's fleet)."""
        assert self.runtime is not None
        arbiter = self.runtime.arbiter
        fleet = arbiter.fleet
        now = time.time()
        online = [s for s in fleet.stations.values() if s.online]
        behind = [s for s in online if not s.up_to_date]
        waiting = [fleet.stations[i] for i in sorted(fleet.raises_waiting) if i in fleet.stations]
        deadline = arbiter.next_deadline()  # in the past: the shell lost the core's deadline

        def brief(s: Any) -> dict[str, Any]:
            last = s.ledger.last_sent
            return {
                "id": s.station_id,
                "target_w": s.target_w,
                "reserve_w": s.reserve_w,
                "last_sent_w": None if last is None else last.live_w,
                "held_w": None if s.ledger.held is None else s.ledger.held.live_w,
                "pending": len(s.ledger.pending),
                "seq": s.seq,
                "accepted_seq": s.accepted_seq,
            }

        return {
            "mode": str(arbiter.mode),
            "limit_w": arbiter.limit_w,
            "reserve_sum_w": round(fleet.reserve_sum(now), 1),
            "targets_sum_w": round(sum(s.target_w for s in online), 1),
            "enforced": self.runtime.view().enforced,
            "online": len(online),
            "offline": fleet.offline_count,
            "not_up_to_date": len(behind),
            "awaiting": len(getattr(fleet, "_awaiting", ())),
            "raises_waiting": len(waiting),
            "next_deadline_in_s": None if deadline is None else round(deadline - now, 3),
            "examples_behind": [brief(s) for s in behind[:3]],
            "examples_waiting": [brief(s) for s in waiting[:3]],
        }

    async def release_offline(self) -> int:
        """Release every offline station, as an operator would once it is gone for good.

        A station that goes away keeps its commitment (it may charge offline) until then.
        """
        assert self.runtime is not None
        gone = [s.station_id for s in self.runtime.view().stations if not s.online]
        for station_id in gone:
            self.runtime.submit(StationReleased(station_id, "bench: warm-up station gone", by="bench"))
        return len(gone)

    def total_power_w(self) -> float:
        assert self.runtime is not None
        return self.runtime.view().total_power_w

    def meter_count(self) -> int:
        return self.meter_samples

    async def fan_out(self, site_limit_w: float, timeout_s: float = 60.0) -> FanOutResult:
        assert self.runtime is not None
        tracker = self._tracker = _Tracker(asyncio.get_running_loop())
        try:
            outcome = await self.runtime.submit_setpoint(SetpointReceived(site_limit_w, peer="bench"))
            if not outcome.accepted:
                raise RuntimeError(f"the core refused setpoint {site_limit_w:g} W: {outcome.detail}")
            # The core confirms first and reallocates on its next tick (a deadline of now).
            try:
                await asyncio.wait_for(asyncio.shield(tracker.first_sent), min(timeout_s, 10.0))
            except TimeoutError:
                raise RuntimeError(
                    f"setpoint {site_limit_w:g} W changed no station's allocation: nothing to time"
                ) from None
            try:
                done_at = await asyncio.wait_for(tracker.done, timeout_s)
            except TimeoutError:
                done_at = time.perf_counter()
        finally:
            self._tracker = None
        times = sorted(tracker.accepted_at.values())
        not_accepted = tracker.outstanding()
        if not tracker.done.done():
            not_accepted = max(not_accepted, 1)
        return FanOutResult(done_at - tracker.t0, times, not_accepted)

    async def storm(self, site_limits_w: list[float], gap_s: float, timeout_s: float = 60.0) -> StormResult:
        """Setpoints ``gap_s`` apart, faster than a fan-out completes: time to all Accepted on the last."""
        assert self.runtime is not None
        tracker = self._tracker = _Tracker(asyncio.get_running_loop())
        tracker.armed = False  # only the state after the last setpoint counts
        last = tracker.t0
        try:
            for index, limit_w in enumerate(site_limits_w):
                if index:
                    await asyncio.sleep(gap_s)
                last = time.perf_counter()
                outcome = await self.runtime.submit_setpoint(SetpointReceived(limit_w, peer="bench"))
                if not outcome.accepted:
                    raise RuntimeError(f"the core refused setpoint {limit_w:g} W: {outcome.detail}")
            tracker.sent_when_armed, tracker.armed = tracker.sent, True
            try:
                done_at: float | None = await asyncio.wait_for(tracker.done, timeout_s)
            except TimeoutError:
                done_at = None
        finally:
            self._tracker = None
        return StormResult(None if done_at is None else done_at - last, done_at is not None)

    # -- a station joining ------------------------------------------------------

    def join_start(self, station_id: str) -> None:
        """Track what the next join causes (the harness then connects ``station_id``)."""
        self._tracker = _Tracker(asyncio.get_running_loop(), watch=station_id)

    async def join_wait(self, timeout_s: float) -> dict[str, Any]:
        """Until the joiner and every station cut for it hold their final shares."""
        tracker = self._tracker
        assert tracker is not None and tracker.watch is not None
        try:
            done_at: float | None = await asyncio.wait_for(tracker.done, timeout_s)
        except TimeoutError:
            done_at = None
        finally:
            self._tracker = None
        final = tracker.expected.get(tracker.watch)
        return {
            "ok": done_at is not None,
            "limit_w": None if final is None else final.limit_w,  # the joiner's final share
            "allocations": tracker.sent,  # ApplyStationLimit decisions the join caused
            "stations_profiled": len(tracker.expected),
            "server_elapsed_s": None if done_at is None else done_at - tracker.t0,
            "outstanding": tracker.outstanding(),
        }

    # -- instrumentation -------------------------------------------------------

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        tracker = self._tracker
        if tracker is None:
            return
        for decision in decisions:
            if type(decision) is ApplyStationLimit:
                tracker.sent += 1
                if not tracker.first_sent.done():
                    tracker.first_sent.set_result(None)
                tracker.expected[decision.station_id] = decision
                tracker.accepted_at.pop(decision.station_id, None)  # its final share is yet to come

    def _on_profile_result(self, event: ProfileResult, arrived: float) -> None:
        tracker = self._tracker
        if tracker is None or event.outcome is not ProfileOutcome.ACCEPTED:
            return
        latest = tracker.expected.get(event.station_id)
        if latest is None or latest.seq != event.seq or event.station_id in tracker.accepted_at:
            return
        tracker.accepted_at[event.station_id] = arrived - tracker.t0
        if (
            tracker.armed
            and tracker.sent > tracker.sent_when_armed
            and not tracker.outstanding()
            and not tracker.done.done()
            and (tracker.watch is None or tracker.watch in tracker.expected)
            and self.settled()
        ):
            tracker.done.set_result(arrived)
