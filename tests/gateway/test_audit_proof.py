"""The runtime keeps proof of execution: records and limit entries reach the chained audit log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.config import parse_config
from gateway.core.arbiter import Arbiter
from gateway.core.compliance import RecordKind, record_json
from gateway.core.decisions import ApplyStationLimit
from gateway.core.events import (
    DsoLinkLost,
    DsoLinkUp,
    MeterSampled,
    ProfileResult,
    SetpointReceived,
    StationConnected,
)
from gateway.core.model import OcppVersion, ProfileOutcome
from gateway.core_build import arbiter_settings
from gateway.errors import StoreError
from gateway.metrics import CoreMetrics
from gateway.proof import FANOUT_WAIT_S
from gateway.runtime import CoreRuntime
from gateway.store import AuditEntry, Store


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_runtime(
    path: Path, clock: Callable[[], float] = time.time, hold_timeout_s: float = 300.0
) -> CoreRuntime:
    config = parse_config({"limits": {"hold_timeout_s": hold_timeout_s, "fallback_limit_w": 10000.0}})
    store = Store(path)
    arbiter = Arbiter.start(arbiter_settings(config), store.load_limit(), clock())
    runtime = CoreRuntime(arbiter, store, CoreMetrics(), AsyncIOScheduler(), clock)
    runtime.scheduler.start()
    runtime.start()
    return runtime


@pytest.fixture
async def clock_runtime(tmp_path: Path) -> AsyncIterator[tuple[CoreRuntime, Clock]]:
    clock = Clock(1_800_000_000.0)
    runtime = make_runtime(tmp_path / "s.sqlite3", clock)
    yield runtime, clock
    await runtime.close()


async def settle() -> None:
    """Let the recorder's writes (scheduled right after each batch) run."""
    for _ in range(3):
        await asyncio.sleep(0)


class Stations:
    """Answers every profile the runtime sends, Accepted, when asked to (time stays explicit)."""

    def __init__(self, runtime: CoreRuntime) -> None:
        self.runtime = runtime
        self.sent: list[ApplyStationLimit] = []
        self._answered = 0
        runtime.add_listener(
            lambda batch: self.sent.extend(d for d in batch if isinstance(d, ApplyStationLimit))
        )

    async def accept_all(self) -> None:
        for _ in range(10):
            await settle()  # a deferred reallocation (a deadline of now) runs
            if self._answered == len(self.sent):
                return
            while self._answered < len(self.sent):
                d = self.sent[self._answered]
                self._answered += 1
                self.runtime.submit(ProfileResult(d.station_id, d.seq, ProfileOutcome.ACCEPTED))

    async def connect(self, station_id: str, draw_w: float) -> None:
        self.runtime.submit(StationConnected(station_id, OcppVersion.V16, 22000, 4140))
        await self.accept_all()
        self.runtime.submit(MeterSampled(station_id, draw_w))


def by_kind(entries: list[AuditEntry]) -> list[str]:
    return [e.row.kind for e in entries]


async def test_a_command_gets_its_record_beside_its_audit_row(
    clock_runtime: tuple[CoreRuntime, Clock],
) -> None:
    runtime, clock = clock_runtime
    start = clock.now
    stations = Stations(runtime)
    runtime.submit(DsoLinkUp())
    await stations.connect("cp1", 11000)
    clock.now = start + 1
    await stations.connect("cp2", 11000)
    clock.now = start + 10
    assert (await runtime.submit_setpoint(SetpointReceived(10000, peer="scada"))).accepted
    await settle()
    [command] = [e for e in runtime.store.entries() if e.is_command]
    # While the cuts are out the record waits (writing it would hold them back); it is
    # kept once they are Accepted.
    assert runtime.store.load_open_record() is None
    assert {(d.station_id, d.limit_w) for d in stations.sent[-2:]} == {("cp1", 5000), ("cp2", 5000)}

    clock.now = start + 10.4
    await stations.accept_all()  # the stations accept their cuts
    await settle()
    kept = runtime.store.load_open_record()
    assert kept is not None and kept.anchor_id == command.id and kept.kind is RecordKind.COMMAND
    assert kept.power_before_w == 22000 and kept.enforced_at_s == pytest.approx(start + 10.4)
    clock.now = start + 12
    runtime.submit(MeterSampled("cp1", 5000))
    runtime.submit(MeterSampled("cp2", 5000))
    runtime.proof.flush()  # the open record reaches the store within a few seconds otherwise
    [latest] = runtime.store.recent_commands(1)
    assert latest.entry.id == command.id and latest.record is not None
    assert (latest.record.time_to_enforce_s, latest.record.time_to_comply_s) == (
        pytest.approx(0.4),
        pytest.approx(2.0),
    )
    assert {s.answer for s in latest.record.stations} == {ProfileOutcome.ACCEPTED}

    clock.now = start + 30
    await runtime.submit_setpoint(SetpointReceived(12000, peer="scada"))  # closes the first record
    await settle()
    # The closed record waits while the raise goes out (it would hold the profiles back) ...
    assert by_kind(runtime.store.entries()) == ["start", "C_SE_NC_1", "C_SE_NC_1"]
    await stations.accept_all()
    await settle()  # ... and is written once the stations answered
    kinds = by_kind(runtime.store.entries())
    assert kinds == ["start", "C_SE_NC_1", "C_SE_NC_1", "compliance"]  # the command, then what it closed
    [closed] = [e.record() for e in runtime.store.entries() if e.row.kind == "compliance"]
    assert closed is not None and closed.anchor_id == command.id and closed.outcome == "complied"
    assert (
        runtime.metrics.registry.get_sample_value("ocpp809_compliance_records_total", {"outcome": "complied"})
        == 1
    )
    assert runtime.metrics.registry.get_sample_value("ocpp809_time_to_comply_seconds_count") == 1
    assert runtime.store.verify_chain().ok


async def test_a_record_whose_cuts_are_never_answered_is_kept_soon_all_the_same(
    clock_runtime: tuple[CoreRuntime, Clock],
) -> None:
    runtime, clock = clock_runtime
    assert runtime.proof.flush_s == 5.0 > FANOUT_WAIT_S  # the record comes after the shorter wait
    stations = Stations(runtime)
    runtime.submit(DsoLinkUp())
    await stations.connect("cp1", 11000)
    clock.now += 10
    assert (await runtime.submit_setpoint(SetpointReceived(10000, peer="scada"))).accepted
    await settle()
    assert runtime.store.load_open_record() is None  # the cut is out, unanswered
    [command] = [e for e in runtime.store.entries() if e.is_command]
    for _ in range(100):  # bounded: 100 x 20 ms, well short of flush_s
        kept = runtime.store.load_open_record()
        if kept is not None:
            break
        await asyncio.sleep(0.02)
    assert kept is not None and kept.anchor_id == command.id and kept.enforced_at_s is None
    [cut] = [d for d in stations.sent if d.limit_w == 10000]
    [shown] = [s for s in kept.stations if s.station_id == "cp1"]
    assert (shown.seq, shown.answer) == (cut.seq, None)


async def test_hold_fallback_and_their_ends_are_chained_with_a_fallback_record(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path / "s.sqlite3", hold_timeout_s=0.2)
    try:
        runtime.submit(DsoLinkUp())
        await runtime.submit_setpoint(SetpointReceived(20000, peer="scada"))
        runtime.submit(DsoLinkLost())
        runtime.submit(DsoLinkUp())
        runtime.submit(DsoLinkLost())
        async with asyncio.timeout(10):  # the hold times out on the event loop
            while "fallback" not in by_kind(runtime.store.entries()):
                await asyncio.sleep(0.02)
        await runtime.submit_setpoint(SetpointReceived(15000, peer="scada"))
        await settle()
        entries = runtime.store.entries()
        assert by_kind(entries) == [
            "start",
            "C_SE_NC_1",
            "hold",
            "hold_end",
            "hold",
            "compliance",  # the command's record, closed by the fallback
            "fallback",
            "C_SE_NC_1",  # a command: audited at once, what it caused right after
            "compliance",  # the fallback's record, closed by the command
            "fallback_end",
        ]
        fallback = next(e for e in entries if e.row.kind == "fallback")
        assert json.loads(fallback.body or "{}")["previous_mode"] == "hold"
        records = [e.record() for e in entries if e.row.kind == "compliance"]
        assert [(r.kind, r.anchor_id) for r in records if r is not None] == [
            (RecordKind.COMMAND, entries[1].id),
            (RecordKind.FALLBACK, fallback.id),
        ]
        assert runtime.store.verify_chain().ok
    finally:
        await runtime.close()


async def test_stopping_closes_the_open_record_and_a_crash_is_closed_at_the_next_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    runtime = make_runtime(path)
    await runtime.submit_setpoint(SetpointReceived(20000, peer="scada"))
    await runtime.close()
    first = Store(path)
    [record] = [e.record() for e in first.entries() if e.row.kind == "compliance"]
    assert record is not None and record.close_reason == "the gateway stopped"
    assert first.load_open_record() is None
    # A crash: the open record is still in the store when the next run starts.
    left = dataclasses.replace(record, closed_at_s=None, close_reason=None)
    first.save_open_record(record_json(left), left.updated_at_s)
    first.close()
    again = make_runtime(path)
    try:
        closed = [e.record() for e in again.store.entries() if e.row.kind == "compliance"]
        assert (
            len(closed) == 2 and closed[-1] is not None and "interrupted" in (closed[-1].close_reason or "")
        )
        assert again.store.load_open_record() is None
        assert again.store.verify_chain().ok
    finally:
        await again.close()


async def test_a_record_closes_on_the_loop_when_its_window_ends(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path / "s.sqlite3")
    runtime.proof.tracker.window_s = 0.2
    try:
        await runtime.submit_setpoint(SetpointReceived(20000, peer="scada"))
        async with asyncio.timeout(10):
            while not any(e.row.kind == "compliance" for e in runtime.store.entries()):
                await asyncio.sleep(0.02)
        [entry] = [e for e in runtime.store.entries() if e.row.kind == "compliance"]
        record = entry.record()
        assert record is not None and "window of 0.2 s ended" in (record.close_reason or "")
        assert runtime.store.load_open_record() is None
    finally:
        await runtime.close()


async def test_a_failing_store_loses_records_loudly_and_keeps_the_gateway_running(
    clock_runtime: tuple[CoreRuntime, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _ = clock_runtime

    def broken(*_args: object, **_kw: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(runtime.store, "save_open_record", broken)
    assert (await runtime.submit_setpoint(SetpointReceived(20000))).accepted
    await settle()
    assert runtime.metrics.store_errors._value.get() >= 1
    assert (await runtime.submit_setpoint(SetpointReceived(30000))).accepted
