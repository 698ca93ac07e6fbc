"""Every DSO link session is seen, however short (issue 9), on loopback with real c104.

The polls here are long on purpose (``link_poll_s`` of seconds against sessions of a few
milliseconds): the poll almost never sees these sessions, yet each one must start the
hold, and a master that comes back at once must get every point without asking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.core.decisions import Decision, LimitChanged
from gateway.core.model import Mode
from gateway.runtime import CoreRuntime
from iec104.codec import Cot
from iec104.master import Iec104Master
from tests.iec104.conftest import Site, running_site, site_config

MONITORED = (200, 201, 300, 301)


class ModeWatch:
    """Every mode the core decides (``LimitChanged``), in order, with a waiter per change."""

    def __init__(self, runtime: CoreRuntime) -> None:
        self.changes: list[LimitChanged] = []
        self._changed = asyncio.Event()
        runtime.add_listener(self._on_decisions)

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, LimitChanged):
                self.changes.append(decision)
                self._changed.set()

    def mark(self) -> int:
        return len(self.changes)

    async def reach(self, mode: Mode, since: int, timeout_s: float) -> LimitChanged:
        """The first change to ``mode`` at or after index ``since`` (bounded wait)."""

        async def scan() -> LimitChanged:
            while True:
                self._changed.clear()
                for change in self.changes[since:]:
                    if change.mode is mode:
                        return change
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout_s)
        except TimeoutError:
            seen = [c.mode.value for c in self.changes[since:]]
            raise AssertionError(f"no {mode.value} within {timeout_s} s; modes since: {seen}") from None


async def short_session(site: Site, value_w: float, how: str) -> float:
    """Connect, STARTDT, one setpoint, then drop without STOPDT: ``abort`` (RST) or ``close`` (FIN).

    Returns how long the session lasted, from the connect to the drop.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    master = site.master()
    async with master:
        assert (await master.send_setpoint(100, value_w)).positive
        if how == "abort":
            master.abort()
        lasted = loop.time() - started
    return lasted


def sessions_counted(site: Site) -> float:
    value = site.runtime.metrics.registry.get_sample_value("ocpp809_iec104_sessions_total")
    return 0.0 if value is None else value


async def test_a_session_far_shorter_than_the_poll_starts_the_hold_then_the_fallback(tmp_path: Path) -> None:
    poll_s = 3.0
    config = site_config(
        tmp_path, link_poll_s=poll_s, limits={"hold_timeout_s": 0.5, "fallback_limit_w": 10000.0}
    )
    async with running_site(config) as site:
        watch = ModeWatch(site.runtime)
        mark = watch.mark()
        lasted = await short_session(site, 20000.0, "abort")
        assert lasted < poll_s / 10
        hold = await watch.reach(Mode.HOLD, mark, timeout_s=poll_s + 3.0)
        assert hold.limit_w == 20000.0
        fallback = await watch.reach(Mode.FALLBACK, mark, timeout_s=3.0)
        assert fallback.limit_w == 10000.0
        assert not site.outstation.link_up
        assert sessions_counted(site) == 1.0


async def test_every_one_of_many_short_sessions_is_seen(tmp_path: Path) -> None:
    poll_s = 1.0
    config = site_config(tmp_path, link_poll_s=poll_s, limits={"hold_timeout_s": 300.0})
    async with running_site(config) as site:
        watch = ModeWatch(site.runtime)
        for i in range(6):
            mark = watch.mark()
            value_w = 20000.0 + 1000.0 * i
            lasted = await short_session(site, value_w, "abort" if i % 2 == 0 else "close")
            assert lasted < poll_s / 4, f"session {i} lasted {lasted:.3f} s"
            normal = await watch.reach(Mode.NORMAL, mark, timeout_s=2.0)
            hold = await watch.reach(Mode.HOLD, watch.changes.index(normal), timeout_s=poll_s + 3.0)
            assert hold.limit_w == value_w, f"session {i}"
        assert sessions_counted(site) == 6.0
        assert site.runtime.view().mode is Mode.HOLD


async def test_a_session_without_a_command_is_seen_too(tmp_path: Path) -> None:
    """In HOLD, a master that only starts data transfer restores the link; its loss holds again."""
    poll_s = 2.0
    config = site_config(tmp_path, link_poll_s=poll_s)
    async with running_site(config) as site:
        watch = ModeWatch(site.runtime)
        mark = watch.mark()
        await short_session(site, 20000.0, "close")
        await watch.reach(Mode.HOLD, mark, timeout_s=poll_s + 3.0)
        mark = watch.mark()
        async with site.master() as master:
            master.abort()
        restored = await watch.reach(Mode.NORMAL, mark, timeout_s=2.0)
        await watch.reach(Mode.HOLD, watch.changes.index(restored), timeout_s=poll_s + 3.0)
        assert sessions_counted(site) == 2.0


async def monitored_values(master: Iec104Master, timeout_s: float = 3.0) -> dict[int, object]:
    """Wait until every monitored point arrived spontaneously on this session."""
    got: dict[int, object] = {}
    for ioa in MONITORED:
        m = await master.wait_for_measurement(ioa, lambda m: m.cot == Cot.SPONTANEOUS, timeout_s)
        got[ioa] = m.value
    return got


async def test_a_master_that_reconnects_at_once_gets_every_point_without_asking(tmp_path: Path) -> None:
    """IEC 104 sends nothing before STARTDT con; from then on the gateway resends every point
    (COT 3) to each new session, so a master reconnecting between two polls is current at once,
    and a general interrogation answers the same values (COT 20)."""
    config = site_config(tmp_path, link_poll_s=5.0)
    async with running_site(config) as site:
        async with site.master() as first:
            assert set(await monitored_values(first)) == set(MONITORED)
            assert (await first.send_setpoint(100, 20000.0)).positive
            await first.wait_for_measurement(201, lambda m: m.value == 20000.0)
        for i in range(4):
            master = site.master()
            async with master:
                got = await monitored_values(master)
                assert got[201] == 20000.0 and got[300] is False, f"reconnection {i}: {got}"
                if i == 3:  # and asked, the same picture
                    interrogated = {m.ioa: m.value for m in await master.interrogate()}
                    assert set(MONITORED) <= set(interrogated) and interrogated[201] == 20000.0
                if i % 2 == 0:
                    master.abort()
        assert sessions_counted(site) == 5.0


async def test_a_master_reset_without_close_is_noticed_within_the_poll(tmp_path: Path) -> None:
    poll_s = 1.0
    config = site_config(tmp_path, link_poll_s=poll_s)
    async with running_site(config) as site:
        watch = ModeWatch(site.runtime)
        async with site.master() as master:
            assert (await master.send_setpoint(100, 20000.0)).positive
            await site.until(lambda: site.outstation.link_up, what="link up")
            mark = watch.mark()
            loop = asyncio.get_running_loop()
            dropped_at = loop.time()
            master.abort()  # SO_LINGER 0: an RST, no STOPDT, no FIN
            await watch.reach(Mode.HOLD, mark, timeout_s=poll_s + 3.0)
            noticed_s = loop.time() - dropped_at
        assert not site.outstation.link_up
        assert noticed_s < poll_s + 1.0


@pytest.mark.parametrize("how", ["abort", "close"])
async def test_a_bare_session_is_counted_and_its_end_noticed(tmp_path: Path, how: str) -> None:
    """STARTDT and gone, on a site that never had a setpoint: seen, then lost."""
    config = site_config(tmp_path, link_poll_s=1.0)
    async with running_site(config) as site:
        async with site.master() as master:
            if how == "abort":
                master.abort()
        await site.until(lambda: sessions_counted(site) == 1.0, what="session counted")
        await site.until(lambda: not site.outstation.link_up, timeout_s=5.0, what="link lost")


async def test_stopdt_is_link_loss_at_once_without_waiting_for_the_poll(tmp_path: Path) -> None:
    poll_s = 30.0  # never runs within this test: the STOPDT con alone must do it
    config = site_config(tmp_path, link_poll_s=poll_s)
    async with running_site(config) as site, site.master() as master:
        watch = ModeWatch(site.runtime)
        assert (await master.send_setpoint(100, 20000.0)).positive
        mark = watch.mark()
        await master.stop_data_transfer()
        await watch.reach(Mode.HOLD, mark, timeout_s=3.0)
        mark = watch.mark()
        await master.start_data_transfer()
        await watch.reach(Mode.NORMAL, mark, timeout_s=3.0)
