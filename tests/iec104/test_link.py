"""Link supervision and access control over loopback: hold, fallback, allowlist, max_connections."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.core.model import Mode
from iec104.codec import Cot
from iec104.master import Iec104Master, MasterError
from tests.iec104.conftest import Site, running_site, site_config


async def test_cut_connection_holds_then_falls_back_and_a_new_setpoint_lifts_it(tmp_path: Path) -> None:
    config = site_config(tmp_path, limits={"hold_timeout_s": 0.5, "fallback_limit_w": 10000.0})
    async with running_site(config) as site:
        async with site.master() as master:
            assert (await master.send_setpoint(100, 20000.0)).positive
            await site.until(lambda: site.outstation.link_up, what="link up")
            master.abort()  # the cable is cut: no STOPDT, no orderly close
            await site.until(lambda: site.runtime.view().mode is Mode.HOLD, what="hold")
            assert site.runtime.view().limit_w == 20000.0
            await site.until(lambda: site.runtime.view().mode is Mode.FALLBACK, what="fallback")
            assert site.runtime.view().limit_w == 10000.0
        async with site.master() as master:
            # The new master is told at once, without asking: fallback on, limit 10 kW.
            await master.wait_for_measurement(300, lambda m: m.value is True)
            await master.wait_for_measurement(201, lambda m: m.value == 10000.0)
            interrogated = {m.ioa: m.value for m in await master.interrogate()}
            assert interrogated[300] is True and interrogated[201] == 10000.0
            assert site.runtime.view().mode is Mode.FALLBACK  # link up alone does not lift it
            assert (await master.send_setpoint(100, 15000.0)).positive
            off = await master.wait_for_measurement(
                300, lambda m: m.value is False and m.cot == Cot.SPONTANEOUS
            )
            assert off.quality == 0
            await master.wait_for_measurement(201, lambda m: m.value == 15000.0)
            assert site.runtime.view().mode is Mode.NORMAL


async def test_stopdt_is_link_loss_and_startdt_within_hold_restores(tmp_path: Path) -> None:
    async with running_site(site_config(tmp_path)) as site, site.master() as master:
        assert (await master.send_setpoint(100, 20000.0)).positive
        await site.until(lambda: site.outstation.link_up, what="link up")
        await master.stop_data_transfer()
        await site.until(lambda: site.runtime.view().mode is Mode.HOLD, what="hold after STOPDT")
        await master.start_data_transfer()
        await site.until(lambda: site.runtime.view().mode is Mode.NORMAL, what="normal after STARTDT")
        assert site.runtime.view().limit_w == 20000.0


async def test_silent_link_death_is_detected_after_t3_plus_t1(tmp_path: Path) -> None:
    config = site_config(tmp_path, t3_s=1, t1_s=2, t2_s=1)
    async with running_site(config) as site, site.master() as master:
        assert (await master.send_setpoint(100, 20000.0)).positive
        await site.until(lambda: site.outstation.link_up, what="link up")
        master.answer_test_frames = False  # the peer is gone without a FIN or RST
        silent_since = time.monotonic()
        await site.until(
            lambda: site.runtime.view().mode is Mode.HOLD, timeout_s=8, what="hold after t3 + t1"
        )
        assert not site.outstation.link_up
        # Not before the outstation's own TESTFR (t3) went unanswered for t1.
        assert time.monotonic() - silent_since >= 2.0


async def test_master_from_an_address_outside_the_allowlist_is_refused(site: Site) -> None:
    intruder = Iec104Master("127.0.0.1", site.port, source_address="127.0.0.2", answer_timeout_s=1.0)
    with pytest.raises((MasterError, OSError, TimeoutError)):
        async with intruder:
            pass
    assert intruder.closed.is_set()
    assert not site.outstation.link_up
    refused = site.runtime.metrics.registry.get_sample_value("ocpp809_iec104_refused_connections_total")
    assert refused == 1.0
    async with site.master() as master:  # the allowed address still gets in
        assert (await master.send_setpoint(100, 20000.0)).positive


async def test_max_connections_refuses_one_more_master(tmp_path: Path) -> None:
    async with running_site(site_config(tmp_path, max_connections=1)) as site, site.master() as first:
        second = site.master(answer_timeout_s=1.0)
        with pytest.raises((MasterError, OSError, TimeoutError)):
            async with second:
                pass
        assert (await first.send_setpoint(100, 20000.0)).positive


async def test_clock_synchronisation_is_confirmed(site: Site) -> None:
    async with site.master() as master:
        assert (await master.clock_sync()).positive
