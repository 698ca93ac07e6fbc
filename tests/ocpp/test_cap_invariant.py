"""The cap invariant on loopback (DESIGN.md, "The cap invariant"; issue 9).

Real sockets on 127.0.0.1, the real ``ocpp`` library on the station side. Every station
records each SetChargingProfile it answered (``tests.ocpp.stations.Profile``); from those
alone ``check_cap`` works out what each station was bound by at every instant at which
anything changed (a profile installed, a validTo passed, the limit moved):

- a station holds, per profile id (or stack level), the last profile it Accepted;
- it is bound by the valid one (validTo in the future, or none) of the highest stack
  level: the live profile until its validTo, then the fallback profile;
- a station that never Accepted anything of ours is not counted (it is not ours yet: a
  joining station is unbound until its first profile lands, which no gateway can help).

and asserts that the bounds add up to at most the limit in force, and the fallback
profiles to at most ``fallback_limit_w``, at every such instant -- except in the window
right after the limit went down, which lasts until the bounds fit again and in which no
station's bound may go up (only cuts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import connect

from gateway.config import parse_config
from gateway.core.decisions import Decision, LimitChanged
from gateway.core.events import SetpointReceived
from ocpp_side.server import StationServer
from tests.ocpp.conftest import Site
from tests.ocpp.stations import Behaviour, Log, Profile, Station16, Station201, boot, drop, running
from tests.support.loopback import start_core

V16, V201 = "ocpp1.6", "ocpp2.0.1"
EPS_W = 0.05  # limits go out floored to 0.1 (W or A): nothing may exceed by more than rounding
REPO = Path(__file__).resolve().parents[2]


# -- the checker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CapReport:
    problems: list[str]
    instants: int
    peak_w: float
    timeline: list[str]

    def __str__(self) -> str:
        return "\n".join(["cap invariant broken:", *self.problems, "timeline:", *self.timeline])


def bound_w(held: Iterable[Profile], at_s: float) -> float:
    """What a station holding ``held`` may draw at ``at_s``: the valid profile of the top stack level."""
    valid = [p for p in held if p.valid_to_s is None or p.valid_to_s > at_s]
    if not valid:
        return math.inf  # it held ours and none binds it any more: nothing does
    return max(valid, key=lambda p: p.stack_level).limit_w


def check_cap(
    profiles: Iterable[Profile],
    limits: list[tuple[float, float]],
    fallback_limit_w: float,
    fallback_profile_id: int,
    t0: float,
    until_s: float,
) -> CapReport:
    """See the module docstring. ``limits``: (since when, limit in force), in time order;
    instants after ``until_s`` (validTo still ahead when the test ended) are not judged."""
    installed = sorted((p for p in profiles if p.installed), key=lambda p: p.answered_s or 0.0)
    changes: dict[float, list[Profile]] = {}
    for p in installed:
        assert p.answered_s is not None
        changes.setdefault(p.answered_s, []).append(p)
        if p.valid_to_s is not None and p.valid_to_s <= until_s:
            changes.setdefault(p.valid_to_s, [])  # its lapse is an instant of its own
    for since, _ in limits:
        if math.isfinite(since):
            changes.setdefault(since, [])
    held: dict[str, dict[int, Profile]] = {}
    problems: list[str] = []
    timeline: list[str] = []
    previous: dict[str, float] = {}
    limit = limits[0][1]
    window = False
    peak = 0.0
    for at in sorted(changes):
        before = limit
        limit = [value for since, value in limits if since <= at][-1]
        for p in changes[at]:
            profiles_of = held.setdefault(p.station_id, {})
            for key, old in list(profiles_of.items()):
                if old.profile_id == p.profile_id or old.stack_level == p.stack_level:
                    del profiles_of[key]  # OCPP: same id, or same purpose and stack level, replaces
            profiles_of[p.profile_id] = p
        bounds = {sid: bound_w(h.values(), at) for sid, h in held.items()}
        total = sum(bounds.values())
        fallback = sum(h[fallback_profile_id].limit_w for h in held.values() if fallback_profile_id in h)
        peak = max(peak, total)
        stamp = f"t+{at - t0:7.3f}s"
        shown = ", ".join(f"{sid}={w:.1f}" for sid, w in sorted(bounds.items()))
        timeline.append(f"{stamp} limit={limit:.1f} sum={total:.1f} fallback_sum={fallback:.1f} [{shown}]")
        if limit < before:
            window = True  # the limit went down: the old bounds may stay above it until cut
        if total <= limit + EPS_W:
            window = False
        elif window:
            raised = [sid for sid, w in bounds.items() if w > previous.get(sid, 0.0) + EPS_W]
            if raised:
                problems.append(f"{stamp}: {raised} went up while the site was above its new limit")
        else:
            problems.append(f"{stamp}: the stations may draw {total:.1f} W, the limit is {limit:.1f} W")
        if fallback > fallback_limit_w + EPS_W:
            problems.append(
                f"{stamp}: fallback profiles add up to {fallback:.1f} W > {fallback_limit_w:.1f} W"
            )
        previous = bounds
    return CapReport(problems, len(changes), peak, timeline)


# -- the site and its stations ---------------------------------------------------------------


def installed(log: Log, profile_id: int, since_s: float = -math.inf) -> list[Profile]:
    return [p for p in log.profiles if p.installed and p.profile_id == profile_id and p.received_s > since_s]


class World:
    """One gateway on loopback, the stations around it and what they all recorded."""

    def __init__(self, site: Site, stack: AsyncExitStack) -> None:
        self.site, self.stack = site, stack
        self.t0 = time.time()
        self.limits: list[tuple[float, float]] = [(-math.inf, site.runtime.arbiter.limit_w)]
        self.logs: dict[str, list[Log]] = {}  # station id -> one Log per connection
        site.runtime.add_listener(self._on_decisions)
        ocpp = site.config.ocpp
        self.live_id, self.fallback_id = ocpp.live_profile_id, ocpp.fallback_profile_id

    def moved_to(self, site: Site) -> None:
        """The gateway restarted as ``site``: the stations connect to it from now on."""
        self.site = site
        site.runtime.add_listener(self._on_decisions)
        if site.runtime.arbiter.limit_w != self.limits[-1][1]:
            self.limits.append((time.time(), site.runtime.arbiter.limit_w))

    def _on_decisions(self, decisions: Iterable[Decision]) -> None:
        for d in decisions:
            if isinstance(d, LimitChanged) and d.limit_w != self.limits[-1][1]:
                self.limits.append((time.time(), d.limit_w))

    # stations

    async def connect(
        self, station_id: str, version: str = V16, behaviour: Behaviour | None = None, hello: str = "boot"
    ) -> Station16 | Station201:
        """A library station, connected until the test ends; ``hello``: boot, heartbeat or nothing."""
        ws = await connect(f"ws://127.0.0.1:{self.site.port}/{station_id}", subprotocols=[version])  # type: ignore[list-item]
        cp = (Station16 if version == V16 else Station201)(station_id, ws, behaviour or Behaviour())
        self.logs.setdefault(station_id, []).append(cp.log)
        await self.stack.enter_async_context(running(cp, ws))
        if hello == "boot":
            await boot(cp)
        elif hello == "heartbeat":
            assert isinstance(cp, Station16)
            await cp.call(call16.Heartbeat())
        return cp

    async def spawn(self, station_id: str) -> StationProcess:
        """A booted 1.6 station in a process of its own (``python -m tests.ocpp.stations``)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.ocpp.stations",
            str(self.site.port),
            station_id,
            V16,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        child = StationProcess(proc, Log())
        self.logs.setdefault(station_id, []).append(child.log)
        self.stack.push_async_callback(child.stop)
        return child

    def log(self, station_id: str) -> Log:
        """The station's current connection's log."""
        return self.logs[station_id][-1]

    def profiles(self) -> list[Profile]:
        return [p for logs in self.logs.values() for log in logs for p in log.profiles]

    # reading

    def check(self) -> CapReport:
        report = check_cap(
            self.profiles(),
            self.limits,
            self.site.config.limits.fallback_limit_w,
            self.fallback_id,
            self.t0,
            time.time(),
        )
        assert report.instants > 0, "nothing was recorded"
        return report

    def assert_cap(self) -> CapReport:
        report = self.check()
        assert not report.problems, str(report)
        return report

    def live_w(self, station_id: str) -> float | None:
        """The value of the last live profile the station accepted (any connection)."""
        held = [p for log in self.logs.get(station_id, []) for p in installed(log, self.live_id)]
        return held[-1].limit_w if held else None

    def metric(self, name: str) -> float:
        return self.site.runtime.metrics.registry.get_sample_value(name) or 0.0

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        await self.site.until(predicate, timeout_s)

    async def settled(self, shares: dict[str, float], timeout_s: float = 5.0) -> None:
        """Every named station online with that share, Accepted, and holding it."""

        def done() -> bool:
            for sid, share in shares.items():
                view = self.site.station(sid)
                if view is None or not view.enforced or abs(view.limit_w - share) > EPS_W:
                    return False
                held = self.live_w(sid)  # in A it is floored to 0.1 A, 69 W at 3 x 230 V
                if held is None or held > share + EPS_W or held < share - 70:
                    return False
            return True

        await self.until(done, timeout_s)


@dataclass
class StationProcess:
    """A station in a child process: its recordings come in as JSON lines."""

    proc: asyncio.subprocess.Process
    log: Log

    def __post_init__(self) -> None:
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            await self.log.add_profile(Profile(**json.loads(line)))

    async def kill(self) -> None:
        """SIGKILL: the kernel ends its TCP connection, no close frame ever leaves it."""
        self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 5.0)
        await asyncio.wait_for(self.reader, 5.0)  # every line it printed is in

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 5.0)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


SiteMaker = Callable[..., Awaitable[Site]]


@pytest.fixture
async def cap_site(tmp_path: Path) -> AsyncIterator[SiteMaker]:
    """make_site with the sharing table too; raises are not rate-limited unless asked."""
    sites: list[Site] = []

    async def make(
        ocpp: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        sharing: dict[str, Any] | None = None,
        store: str | None = None,
    ) -> Site:
        config = parse_config(
            {
                "limits": {"initial_limit_w": 30000.0, "fallback_limit_w": 10000.0, **(limits or {})},
                "ocpp": {"listen_host": "127.0.0.1", "port": 0, "boot_wait_s": 2.0, **(ocpp or {})},
                "sharing": {"raise_interval_s": 0.0, **(sharing or {})},
                "metrics": {"enabled": False},
                "store": {"path": str(tmp_path / f"{store or f'store{len(sites)}'}.sqlite3")},
            }
        )
        runtime = start_core(config)
        server = StationServer(config.ocpp, config.upstream, runtime)
        await server.start()
        site = Site(config, runtime, server)
        sites.append(site)
        return site

    yield make
    for site in sites:
        if not getattr(site, "stopped", False):
            await site.server.stop()
            await site.runtime.close()


@contextlib.asynccontextmanager
async def world_of(site: Site) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        yield World(site, stack)


def _first(profiles: list[Profile], predicate: Callable[[Profile], bool]) -> Profile | None:
    return next((p for p in profiles if predicate(p)), None)


# -- 1. a station vanishes without a close frame ---------------------------------------------


@pytest.mark.parametrize("vanish", ["fin", "rst", "kill"])
async def test_a_vanished_station_keeps_its_share_until_its_live_cap_lapses(
    cap_site: SiteMaker, vanish: str
) -> None:
    site = await cap_site({"profile_validity_s": 3.0, "profile_refresh_s": 2.0})
    async with world_of(site) as w:
        child = await w.spawn("A") if vanish == "kill" else None
        a = None if child is not None else await w.connect("A")
        await w.until(lambda: site.station("A") is not None, timeout_s=10.0)
        await w.connect("B", V201)
        await w.connect("C", behaviour=Behaviour(rate_units="Current"))  # profiles in A per phase
        await w.settled({"A": 10000.0, "B": 10000.0, "C": 10000.0})
        assert w.metric("ocpp809_stations_offline_reserved") == 0

        if child is not None:
            await child.kill()
        else:
            assert a is not None
            drop(a._connection, reset=vanish == "rst")
        await w.until(lambda: (r := site.reserved("A")) is not None and not r.online)
        gone_s = time.time()

        # It may go on charging under what it holds: its 10 kW stay reserved, nobody gets them.
        reserved = site.reserved("A")
        assert reserved is not None and reserved.committed_w == 10000.0
        assert w.metric("ocpp809_stations_offline_reserved") == 1
        assert w.metric("ocpp809_offline_reserved_w") == 10000.0
        assert site.station("B").limit_w == site.station("C").limit_w == 10000.0  # type: ignore[union-attr]
        [a_live] = installed(w.log("A"), w.live_id)[-1:]
        assert a_live.valid_to_s is not None and a_live.valid_to_s > gone_s

        # At its validTo its live cap lapses onto its fallback cap; only then are B and C raised.
        def raised(sid: str) -> Profile | None:
            return _first(installed(w.log(sid), w.live_id, gone_s), lambda p: p.limit_w > 10500)

        await w.until(lambda: raised("B") is not None and raised("C") is not None, timeout_s=8.0)
        for sid in ("B", "C"):
            first = raised(sid)
            assert first is not None and first.received_s >= a_live.valid_to_s, (sid, first, a_live)
            # What they held in between was their 10 kW share (re-sent as live refreshes).
            between = [p for p in installed(w.log(sid), w.live_id, gone_s) if p.received_s < first.received_s]
            assert all(p.limit_w <= 10000.0 for p in between), between
        # A now binds by its fallback cap (5 kW: the three 4.14 kW minimums do not fit the 10 kW
        # fallback limit, so C, the last to connect, has none); B and C share the rest.
        fallback_a = installed(w.log("A"), w.fallback_id)[-1].limit_w
        assert fallback_a == 5000.0
        await w.settled({"B": 12500.0, "C": 12500.0})
        reserved = site.reserved("A")
        assert reserved is not None and not reserved.online and reserved.committed_w == fallback_a
        assert w.metric("ocpp809_stations_offline_reserved") == 1
        w.assert_cap()


# -- 2. a station that does not take its cut -------------------------------------------------


@pytest.mark.parametrize("answer", ["silent", "garbage", "Rejected"])
async def test_a_joiner_gets_only_room_a_cut_has_really_freed(cap_site: SiteMaker, answer: str) -> None:
    site = await cap_site({"call_timeout_s": 0.4, "profile_retry_base_s": 0.2})
    async with world_of(site) as w:
        stubborn = Behaviour()
        await w.connect("A", behaviour=stubborn)
        await w.connect("B", V201)
        await w.settled({"A": 15000.0, "B": 15000.0})
        if answer == "Rejected":
            stubborn.profile_status = "Rejected"
        else:
            stubborn.profile_answer = answer
        joined_s = time.time()
        await w.connect("C")

        # A's cut to 10 kW goes out but never lands: it may still draw 15 kW. B takes its cut,
        # so 5 kW are really free, and that is what C gets (above its 4.14 kW minimum).
        def c_live() -> list[Profile]:
            return installed(w.log("C"), w.live_id, joined_s)

        await w.until(lambda: any(p.limit_w > 0 for p in c_live()))
        assert next(p.limit_w for p in c_live() if p.limit_w > 0) == 5000.0
        cuts_to_a = [p for p in w.log("A").profiles if p.received_s > joined_s]
        assert cuts_to_a and all(not p.installed for p in cuts_to_a)
        assert all(p.limit_w <= 10000.0 for p in cuts_to_a if p.profile_id == w.live_id)
        reserved = site.reserved("A")
        assert reserved is not None and reserved.committed_w == 15000.0
        assert site.station("C").limit_w == 10000.0  # type: ignore[union-attr]
        assert w.metric("ocpp809_raises_waiting") > 0
        assert site.runtime.view().raises_waiting > 0

        # A gives in (a retry lands): only then does C get the rest of its share.
        stubborn.profile_status, stubborn.profile_answer = "Accepted", "answer"
        await w.settled({"A": 10000.0, "B": 10000.0, "C": 10000.0}, timeout_s=8.0)
        a_cut = _first(installed(w.log("A"), w.live_id, joined_s), lambda p: p.limit_w == 10000.0)
        c_full = _first(c_live(), lambda p: p.limit_w == 10000.0)
        assert a_cut is not None and c_full is not None
        assert a_cut.answered_s is not None and c_full.received_s >= a_cut.answered_s
        await w.until(lambda: w.metric("ocpp809_raises_waiting") == 0)
        w.assert_cap()


async def test_a_silent_station_whose_live_cap_lapses_onto_a_higher_fallback_cap(cap_site: SiteMaker) -> None:
    # 6 kW fit one 4.14 kW minimum: A gets 6 kW, B is paused (live 0 W); the 10 kW fallback
    # limit fits both minimums, so the core gives B a 5 kW fallback cap, above its live cap.
    # Connected but silent, B falls back onto those 5 kW at its live cap's validTo: A must
    # have been cut before (at 462db22 it was not: 11 kW could be drawn under a 6 kW limit).
    # The margin (validity - refresh) / 2 = 1.25 s leaves the core time to cut A.
    site = await cap_site({"profile_validity_s": 4.0, "profile_refresh_s": 1.5})
    async with world_of(site) as w:
        assert (await site.runtime.submit_setpoint(SetpointReceived(6000.0))).accepted
        silent = Behaviour()
        await w.connect("A")
        await w.connect("B", behaviour=silent)
        await w.settled({"A": 6000.0, "B": 0.0})
        assert installed(w.log("B"), w.fallback_id), "B holds no fallback cap"
        silent.profile_answer = "silent"  # B stays connected, answers all else, no profile any more
        [b_live] = installed(w.log("B"), w.live_id)[-1:]
        assert b_live.valid_to_s is not None

        # B's live cap lapses at its validTo; wait for A's next profile after that instant.
        def a_after_lapse() -> bool:
            return any(p.received_s > b_live.valid_to_s + 0.2 for p in w.log("A").profiles)  # type: ignore[operator]

        await w.log("A").wait_for(a_after_lapse, timeout_s=8.0)
        w.assert_cap()


# -- 3. a station that comes back at once ------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "half_open"])
async def test_a_station_back_at_once_is_reprofiled_at_both_levels(cap_site: SiteMaker, how: str) -> None:
    site = await cap_site()
    async with world_of(site) as w:
        a = await w.connect("A")
        await w.connect("B")
        await w.connect("C", V201)
        await w.settled({"A": 10000.0, "B": 10000.0, "C": 10000.0})
        old_ws = a._connection
        if how == "fin":
            drop(old_ws)  # and back at once, before or after the gateway noticed
        else:
            old_ws.transport.pause_reading()  # the old link is dead but looks open: nothing read
        back_s = time.time()
        a2 = await w.connect("A", hello="heartbeat")  # a network blip: no reboot

        levels = (w.live_id, w.fallback_id)
        await w.until(lambda: all(installed(a2.log, level, back_s) for level in levels))
        await w.settled({"A": 10000.0, "B": 10000.0, "C": 10000.0})
        assert installed(a2.log, w.live_id, back_s)[-1].limit_w == 10000.0
        # Back last in the connection order, A is now the one without a fallback share.
        view_a = site.station("A")
        assert view_a is not None
        assert installed(a2.log, w.fallback_id, back_s)[-1].limit_w == view_a.fallback_w
        if how == "half_open":
            old_ws.transport.resume_reading()  # the gateway's close frame is read and answered
        await asyncio.wait_for(old_ws.wait_closed(), 5.0)  # the gateway let go of the old link
        view = site.runtime.view()
        assert view.enforced and view.committed_w <= 30000.0
        assert w.metric("ocpp809_stations_offline_reserved") == 0
        assert w.metric("ocpp809_offline_reserved_w") == 0
        assert site.reserved("A").online  # type: ignore[union-attr]
        w.assert_cap()


async def test_a_returning_station_frees_its_reserve_only_by_accepting_its_cut(cap_site: SiteMaker) -> None:
    site = await cap_site()
    async with world_of(site) as w:
        a = await w.connect("A")
        await w.connect("B")
        await w.connect("C", V201)
        await w.settled({"A": 10000.0, "B": 10000.0, "C": 10000.0})
        drop(a._connection)
        await w.until(lambda: (r := site.reserved("A")) is not None and not r.online)

        # The DSO cuts to 24 kW while A is away: A may still draw its 10 kW, B and C get 7 kW.
        assert (await site.runtime.submit_setpoint(SetpointReceived(24000.0))).accepted
        await w.settled({"B": 7000.0, "C": 7000.0})
        assert site.reserved("A").committed_w == 10000.0  # type: ignore[union-attr]

        # A comes back, slow to answer: its cut to 8 kW goes first, B and C wait for it.
        back_s = time.time()
        a2 = await w.connect("A", behaviour=Behaviour(profile_delay_s=0.3), hello="heartbeat")
        await w.settled({"A": 8000.0, "B": 8000.0, "C": 8000.0})
        a_cut = _first(installed(a2.log, w.live_id, back_s), lambda p: p.limit_w == 8000.0)
        assert a_cut is not None and a_cut.answered_s is not None
        assert installed(a2.log, w.fallback_id, back_s), "the fallback level was not re-applied"
        for sid in ("B", "C"):
            raise_ = _first(installed(w.log(sid), w.live_id, back_s), lambda p: p.limit_w == 8000.0)
            assert raise_ is not None and raise_.received_s >= a_cut.answered_s, (sid, raise_, a_cut)
        w.assert_cap()


# -- 4. a DSO cut while a station joins --------------------------------------------------------


async def test_a_dso_cut_during_a_join_sends_cuts_first_and_raises_the_joiner_after(
    cap_site: SiteMaker,
) -> None:
    site = await cap_site(limits={"initial_limit_w": 40000.0})
    async with world_of(site) as w:
        slow = Behaviour()
        await w.connect("A", behaviour=slow)
        await w.connect("B", V201, behaviour=slow)
        await w.settled({"A": 20000.0, "B": 20000.0})
        slow.profile_delay_s = 0.2  # cuts stay on their way a while

        joined_s = time.time()
        c = await w.connect("C", hello="none")  # connected, not yet booted
        await w.until(lambda: site.station("C") is not None)
        assert (await site.runtime.submit_setpoint(SetpointReceived(24000.0))).accepted
        await boot(c)
        await w.settled({"A": 8000.0, "B": 8000.0, "C": 8000.0})

        # Cuts first: whatever A and B received since C joined only ever went down.
        for sid in ("A", "B"):
            for pid in (w.live_id, w.fallback_id):
                values = [
                    p.limit_w for p in w.log(sid).profiles if p.profile_id == pid and p.received_s > joined_s
                ]
                assert values == sorted(values, reverse=True), (sid, pid, values)
        # The joiner's first real share arrived only after both cuts were Accepted.
        raise_ = _first(installed(c.log, w.live_id), lambda p: p.limit_w > 0)
        assert raise_ is not None
        for sid in ("A", "B"):
            cut = _first(installed(w.log(sid), w.live_id, joined_s), lambda p: p.limit_w == 8000.0)
            assert cut is not None and cut.answered_s is not None
            assert raise_.received_s >= cut.answered_s, (sid, cut, raise_)
        w.assert_cap()


# -- 7. the gateway restarts while stations are away ------------------------------------------


async def test_a_restarted_gateway_keeps_what_absent_stations_may_still_hold(cap_site: SiteMaker) -> None:
    """The previous run's commitments come back from the store: a station that reconnects
    first shares only what the absent ones leave, until their live caps lapse."""
    ocpp = {"profile_validity_s": 4.0, "profile_refresh_s": 3.0}
    site = await cap_site(ocpp, store="restart")
    async with world_of(site) as w:
        for sid in ("A", "B", "C"):
            await w.connect(sid)
        await w.settled({"A": 10000.0, "B": 10000.0, "C": 10000.0})
        held = {sid: installed(w.log(sid), w.live_id)[-1] for sid in ("A", "B")}

        await site.server.stop()  # every connection goes with it; the stations keep their profiles
        await site.runtime.close()
        site.stopped = True  # type: ignore[attr-defined]
        again = await cap_site(ocpp, store="restart")
        w.moved_to(again)
        for sid in ("A", "B"):
            reserved = again.reserved(sid)
            assert reserved is not None and not reserved.online and reserved.committed_w == 10000.0
        assert w.metric("ocpp809_stations_offline_reserved") == 3  # C has not reconnected yet

        await w.connect("C")
        await w.until(lambda: (c := again.station("C")) is not None and c.enforced)
        assert again.station("C").limit_w <= 10000.0 + EPS_W  # type: ignore[union-attr]

        # Once A's and B's live caps lapse onto their fallback caps, C is raised into the room.
        lapse_s = max(p.valid_to_s or math.inf for p in held.values())
        await w.until(lambda: (w.live_w("C") or 0.0) > 10500.0, timeout_s=10.0)
        raised = _first(installed(w.log("C"), w.live_id), lambda p: p.limit_w > 10500.0)
        assert raised is not None and raised.received_s >= lapse_s, (raised, lapse_s)
        w.assert_cap()
