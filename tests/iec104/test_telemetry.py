"""Telemetry over loopback: total power (T4), limit read-back, status points, quality flags, deadband."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.core.events import MeterSampled, StationConnected
from gateway.core.model import OcppVersion
from iec104.codec import Cot, QualityFlag, TypeId
from tests.iec104.conftest import Site, running_site, site_config


def station(station_id: str = "cs1") -> StationConnected:
    return StationConnected(station_id, OcppVersion.V201, max_power_w=22000.0, min_power_w=4140.0)


async def test_t4_stations_drawing_7200_w_read_7200_at_ioa_200_with_a_current_time_tag(site: Site) -> None:
    async with site.master() as master:
        await site.until(lambda: site.outstation.link_up, what="link up")
        site.runtime.submit(station())
        before = time.time()
        site.runtime.submit(MeterSampled("cs1", 7200.0))
        total = await master.wait_for_measurement(200, lambda m: m.value == 7200.0 and m.quality == 0)
        assert total.type_id == TypeId.M_ME_TF_1
        assert total.cot == Cot.SPONTANEOUS
        assert total.time_tag is not None and not total.time_tag.invalid
        assert before - 1.0 <= total.time_tag.timestamp_s <= time.time() + 1.0
        interrogated = {m.ioa: m for m in await master.interrogate()}
        assert interrogated[200].value == 7200.0
        assert interrogated[200].quality == 0


async def test_a_station_without_a_reading_makes_the_total_invalid(site: Site) -> None:
    async with site.master() as master:
        await site.until(lambda: site.outstation.link_up, what="link up")
        site.runtime.submit(station("cs1"))
        site.runtime.submit(MeterSampled("cs1", 3000.0))
        site.runtime.submit(station("cs2"))  # connected, never reported
        invalid = await master.wait_for_measurement(200, lambda m: bool(m.quality & QualityFlag.IV))
        assert invalid.value == 3000.0
        site.runtime.submit(MeterSampled("cs2", 4000.0))
        good = await master.wait_for_measurement(200, lambda m: m.value == 7000.0)
        assert good.quality == 0


async def test_stale_measurement_is_flagged_not_topical(tmp_path: Path) -> None:
    config = site_config(tmp_path, ocpp={"meter_stale_after_s": 0.3})
    async with running_site(config) as site, site.master() as master:
        await site.until(lambda: site.outstation.link_up, what="link up")
        site.runtime.submit(station())
        site.runtime.submit(MeterSampled("cs1", 7200.0))
        await master.wait_for_measurement(200, lambda m: m.value == 7200.0 and m.quality == 0)
        stale = await master.wait_for_measurement(
            200, lambda m: bool(m.quality & QualityFlag.NT), timeout_s=5
        )
        assert stale.value == 7200.0  # the old value is still shown, but flagged
        interrogated = {m.ioa: m for m in await master.interrogate()}
        assert interrogated[200].quality & QualityFlag.NT
        site.runtime.submit(MeterSampled("cs1", 7000.0))
        fresh = await master.wait_for_measurement(200, lambda m: m.value == 7000.0)
        assert fresh.quality == 0


async def test_spontaneous_only_beyond_the_deadband_and_interrogation_has_the_exact_value(
    tmp_path: Path,
) -> None:
    config = site_config(tmp_path, deadband_w=500.0)
    async with running_site(config) as site, site.master() as master:
        await site.until(lambda: site.outstation.link_up, what="link up")
        site.runtime.submit(station())
        site.runtime.submit(MeterSampled("cs1", 7200.0))
        await master.wait_for_measurement(200, lambda m: m.value == 7200.0)
        site.runtime.submit(MeterSampled("cs1", 7300.0))  # inside the deadband
        interrogated = {m.ioa: m for m in await master.interrogate()}
        assert interrogated[200].value == 7300.0
        site.runtime.submit(MeterSampled("cs1", 7750.0))  # 550 W from the last one sent
        await master.wait_for_measurement(200, lambda m: m.value == 7750.0 and m.cot == Cot.SPONTANEOUS)
        spontaneous = [
            m.value
            for m in master.measurements(200)
            if m.cot == Cot.SPONTANEOUS and isinstance(m.value, float) and m.value > 7000
        ]
        assert spontaneous == [7200.0, 7750.0]


async def test_cyclic_transmission_repeats_every_point_as_spontaneous(tmp_path: Path) -> None:
    """Nothing changes, yet every point keeps arriving: the cyclic re-send (COT 3, as type 36 allows)."""
    config = site_config(tmp_path, periodic_interval_s=0.2)
    async with running_site(config) as site, site.master() as master:
        for ioa in (200, 201, 300, 301):
            await master.wait_for_measurement(ioa, timeout_s=5)
        seen = len(master.received)
        for ioa in (200, 201, 300, 301):
            await master.wait_for_measurement(
                ioa,
                lambda m: (
                    m.cot == Cot.SPONTANEOUS and m.received_at_s > master.received[seen - 1].received_at_s
                ),
            )
        assert {m.value for m in master.measurements(201)} == {site.config.limits.initial_limit_w}
        cyclic = site.runtime.metrics.registry.get_sample_value(
            "ocpp809_iec104_transmissions_total", {"why": "cyclic"}
        )
        assert cyclic is not None and cyclic >= 4


async def test_values_are_sent_when_data_transfer_starts_and_answer_interrogation(site: Site) -> None:
    site.runtime.submit(station())
    site.runtime.submit(MeterSampled("cs1", 5000.0))  # no master yet: nothing can be queued
    async with site.master() as master:
        for ioa, value in ((200, 5000.0), (201, 100000.0), (300, False), (301, False)):
            got = await master.wait_for_measurement(ioa, timeout_s=5)
            assert got.value == value, ioa
        interrogated = {m.ioa: (m.type_id, m.value) for m in await master.interrogate()}
        assert interrogated == {
            200: (TypeId.M_ME_TF_1, 5000.0),
            201: (TypeId.M_ME_TF_1, 100000.0),
            300: (TypeId.M_SP_TB_1, False),
            301: (TypeId.M_SP_TB_1, False),  # the station has not accepted its profile yet
            202: (TypeId.M_ME_TF_1, 0.0),  # no DSO command has closed yet (quality NT)
        }


async def test_a_burst_of_samples_ends_with_the_master_holding_the_last_value(tmp_path: Path) -> None:
    config = site_config(tmp_path, periodic_interval_s=0.5)
    async with running_site(config) as site, site.master() as master:
        await site.until(lambda: site.outstation.link_up, what="link up")
        site.runtime.submit(station())
        for i in range(1, 501):
            site.runtime.submit(MeterSampled("cs1", float(i)))
            if i % 2:
                await asyncio.sleep(0)  # let some flushes through, so c104's queue sees a burst
        last = await master.wait_for_measurement(200, lambda m: m.value == 500.0, timeout_s=10)
        assert last.quality == 0
        interrogated = {m.ioa: m.value for m in await master.interrogate()}
        assert interrogated[200] == 500.0


async def test_the_last_commands_time_to_comply_reaches_the_master(site: Site) -> None:
    """IOA 202: a command's time to comply, from its compliance record, once the record closes
    (here: when the next command arrives); not topical until then."""
    site.runtime.submit(station())
    async with site.master() as master:
        first = await master.wait_for_measurement(202, timeout_s=5)
        assert (first.value, first.quality) == (0.0, QualityFlag.NT)
        site.runtime.submit(MeterSampled("cs1", 30000.0))  # above the coming limit
        assert (await master.send_setpoint(100, 20000.0)).positive
        await asyncio.sleep(0.3)
        site.runtime.submit(MeterSampled("cs1", 15000.0))  # ... then complies
        assert (await master.send_setpoint(100, 25000.0)).positive  # closes the first record
        got = await master.wait_for_measurement(
            202, lambda m: m.cot == Cot.SPONTANEOUS and m.quality == 0, timeout_s=5
        )
        assert isinstance(got.value, float) and 0.3 <= got.value < 5.0, got
        interrogated = {m.ioa: m.value for m in await master.interrogate()}
        assert interrogated[202] == got.value
