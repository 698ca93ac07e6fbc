"""Setpoint commands over loopback: a real master, the real c104 outstation, the whole core."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.core.model import Mode
from iec104.codec import Cot
from tests.iec104.conftest import Site, running_site, site_config


async def test_20_kw_is_confirmed_and_read_back_at_ioa_201(site: Site) -> None:
    async with site.master() as master:
        con = await master.send_setpoint(100, 20000.0)
        assert con.positive
        assert con.cot == Cot.ACTIVATION_CON
        assert site.runtime.view().limit_w == 20000.0
        assert site.runtime.view().mode is Mode.NORMAL
        limit = await master.wait_for_measurement(201, lambda m: m.value == 20000.0, timeout_s=5)
        assert limit.quality == 0
    rows = site.runtime.store.audit()
    assert [(r.kind, r.value_w, r.accepted) for r in rows] == [("C_SE_NC_1", 20000.0, True)]
    assert rows[0].peer.startswith("127.0.0.1")
    assert site.runtime.store.load_limit().setpoint_w == 20000.0  # type: ignore[union-attr]


async def test_below_minimum_is_refused_changes_nothing_and_is_audited(site: Site) -> None:
    async with site.master() as master:
        assert (await master.send_setpoint(100, 20000.0)).positive
        con = await master.send_setpoint(100, 0.0)
        assert not con.positive
        assert con.asdu.negative
        assert site.runtime.view().limit_w == 20000.0
        interrogated = {m.ioa: m.value for m in await master.interrogate()}
        assert interrogated[201] == 20000.0
    last = site.runtime.store.audit()[-1]
    assert (last.value_w, last.accepted, last.reason) == (0.0, False, "below_min")


async def test_invalid_values_and_unknown_points_are_refused(site: Site) -> None:
    async with site.master() as master:
        assert (await master.send_setpoint(100, 30000.0)).positive
        refused = [
            await master.send_setpoint(100, float("nan")),
            await master.send_setpoint(100, float("inf")),
            await master.send_setpoint(100, -1.0),
            await master.send_setpoint(100, 100001.0),
            await master.send_setpoint(101, 20000.0, time_tag=time.time() - 3600),
            await master.send_setpoint(102, 20000.0),
            await master.send_setpoint(100, 20000.0, common_address=7),
            await master.send_setpoint(201, 20000.0),  # a monitored point is no command target
            await master.send_setpoint(100, 20000.0, cot=Cot.DEACTIVATION),
        ]
        assert [c.positive for c in refused] == [False] * len(refused)
        assert site.runtime.view().limit_w == 30000.0
    await site.until(lambda: len(site.runtime.store.audit()) == 10, what="every command audited")
    # c104 reports unknown points from a later task of its own: order among them is not fixed.
    reasons = sorted(r.reason for r in site.runtime.store.audit()[1:])
    assert reasons == sorted(
        [
            "not_finite",
            "not_finite",
            "below_min",
            "above_max",
            "stale",
            "unknown_point",
            "wrong_common_address",
            "unknown_point",
            "unexpected_cause",
        ]
    )


async def test_time_tagged_setpoint_within_age_is_confirmed(site: Site) -> None:
    async with site.master() as master:
        con = await master.send_setpoint(101, 12000.0, time_tag=time.time() - 1)
        assert con.positive
        assert site.runtime.view().limit_w == 12000.0
        stale = await master.send_setpoint(101, 15000.0, time_tag=time.time() - 31)
        assert not stale.positive
        future = await master.send_setpoint(101, 15000.0, time_tag=time.time() + 60)
        assert not future.positive
        assert site.runtime.view().limit_w == 12000.0
    row = site.runtime.store.audit()[0]
    assert row.kind == "C_SE_TC_1" and row.time_tag_s is not None and abs(row.time_tag_s - time.time()) < 10


async def test_setpoint_in_kilowatts(tmp_path: Path) -> None:
    config = site_config(
        tmp_path,
        points={"limit_setpoint": {"ioa": 100, "unit": "kW"}, "limit_in_force": {"ioa": 201, "unit": "kW"}},
    )
    async with running_site(config) as site, site.master() as master:
        assert (await master.send_setpoint(100, 20.0)).positive
        assert site.runtime.view().limit_w == 20000.0
        await master.wait_for_measurement(201, lambda m: m.value == 20.0)
        assert not (await master.send_setpoint(100, 5.9)).positive
        assert site.runtime.store.audit()[-1].value_w == 5900.0


async def test_select_before_operate(tmp_path: Path) -> None:
    config = site_config(tmp_path, points={"limit_setpoint": {"ioa": 100, "select_before_operate": True}})
    async with running_site(config) as site, site.master() as master:
        direct = await master.send_setpoint(100, 20000.0)
        assert not direct.positive  # execute without a selection
        assert site.runtime.view().mode is Mode.INITIAL
        con = await master.select_and_execute(100, 20000.0)
        assert con.positive
        assert site.runtime.view().limit_w == 20000.0
