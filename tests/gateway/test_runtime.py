"""The shell around the core: durable before confirmed, resume, deadlines on the scheduler."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.config import Config, parse_config
from gateway.core.arbiter import Arbiter
from gateway.core.decisions import ApplyStationLimit, Decision, LimitChanged
from gateway.core.events import DsoLinkLost, DsoLinkUp, ProfileResult, SetpointReceived, StationConnected
from gateway.core.model import Mode, OcppVersion, ProfileOutcome, RejectReason
from gateway.core_build import arbiter_settings, build_core
from gateway.errors import StoreError
from gateway.metrics import CoreMetrics
from gateway.runtime import Clock, CoreRuntime
from gateway.store import Store


def make_runtime(path: Path, hold_timeout_s: float = 300.0, clock: Clock = time.time) -> CoreRuntime:
    config = parse_config({"limits": {"hold_timeout_s": hold_timeout_s}})
    store = Store(path)
    arbiter = Arbiter.start(arbiter_settings(config), store.load_limit(), clock())
    runtime = CoreRuntime(arbiter, store, CoreMetrics(), AsyncIOScheduler(), clock)
    runtime.scheduler.start()
    runtime.start()
    return runtime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[CoreRuntime]:
    rt = make_runtime(tmp_path / "s.sqlite3")
    yield rt
    await rt.close()


async def test_accepted_setpoint_is_stored_and_audited(runtime: CoreRuntime) -> None:
    outcome = await runtime.submit_setpoint(SetpointReceived(20000, peer="127.0.0.1:1"))
    assert outcome.accepted
    stored = runtime.store.load_limit()
    assert stored is not None and (stored.mode, stored.setpoint_w) == (Mode.NORMAL, 20000)
    [row] = runtime.store.audit()
    assert (row.peer, row.value_w, row.accepted, row.reason) == ("127.0.0.1:1", 20000, True, "ok")


async def test_t3_refused_setpoint_is_audited_and_changes_nothing(runtime: CoreRuntime) -> None:
    await runtime.submit_setpoint(SetpointReceived(50000))
    outcome = await runtime.submit_setpoint(SetpointReceived(0.0, peer="scada"))
    assert (outcome.accepted, outcome.reason) == (False, RejectReason.BELOW_MIN)
    assert runtime.view().limit_w == 50000
    assert runtime.store.load_limit().setpoint_w == 50000  # type: ignore[union-attr]
    assert [(r.value_w, r.accepted, r.reason) for r in runtime.store.audit()] == [
        (50000, True, "ok"),
        (0.0, False, "below_min"),
    ]


async def test_store_failure_refuses_the_setpoint_and_keeps_the_limit(
    runtime: CoreRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_limit: object, _row: object) -> int:
        raise StoreError("disk full")

    monkeypatch.setattr(runtime.store, "accept_setpoint", broken)
    seen: list[Sequence[Decision]] = []
    runtime.add_listener(seen.append)
    outcome = await runtime.submit_setpoint(SetpointReceived(20000))
    assert (outcome.accepted, outcome.reason) == (False, RejectReason.STORE_FAILED)
    assert runtime.view().limit_w != 20000 and runtime.view().mode is Mode.INITIAL
    assert seen == []  # nothing was announced to the adapters
    assert runtime.store.audit()[-1].reason == "store_failed"


async def test_restart_resumes_the_stored_limit_as_a_hold(tmp_path: Path) -> None:
    first = make_runtime(tmp_path / "s.sqlite3")
    first.submit(DsoLinkUp())
    assert (await first.submit_setpoint(SetpointReceived(20000))).accepted
    await first.close()
    second = make_runtime(tmp_path / "s.sqlite3")
    try:
        view = second.view()
        assert (view.mode, view.limit_w) == (Mode.HOLD, 20000)
    finally:
        await second.close()


async def test_hold_turns_into_fallback_on_the_scheduler(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path / "s.sqlite3", hold_timeout_s=0.3)
    fell_back = asyncio.Event()

    def listen(decisions: Sequence[Decision]) -> None:
        if any(isinstance(d, LimitChanged) and d.mode is Mode.FALLBACK for d in decisions):
            fell_back.set()

    runtime.add_listener(listen)
    try:
        runtime.submit(DsoLinkUp())
        await runtime.submit_setpoint(SetpointReceived(20000))
        runtime.submit(DsoLinkLost())
        assert runtime.view().mode is Mode.HOLD
        await asyncio.wait_for(fell_back.wait(), timeout=10)
        assert runtime.view().limit_w == 10000
        assert runtime.store.load_limit().mode is Mode.FALLBACK  # type: ignore[union-attr]
    finally:
        await runtime.close()


async def test_a_failing_listener_does_not_starve_the_others(runtime: CoreRuntime) -> None:
    got: list[Sequence[Decision]] = []

    def broken(_decisions: Sequence[Decision]) -> None:
        raise RuntimeError("adapter bug")

    runtime.add_listener(broken)
    runtime.add_listener(got.append)
    assert (await runtime.submit_setpoint(SetpointReceived(20000))).accepted
    assert any(isinstance(d, LimitChanged) for batch in got for d in batch)


async def test_setpoints_must_use_submit_setpoint(runtime: CoreRuntime) -> None:
    with pytest.raises(TypeError):
        runtime.submit(SetpointReceived(20000))


# -- the store never confirms what it cannot keep ---------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _replace_with_other_db(path: Path) -> None:
    other = path.with_name("other.sqlite3")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    os.replace(other, path)


def _garble_wal(path: Path) -> None:
    wal = Path(f"{path}-wal")
    with open(wal, "r+b") as handle:
        handle.write(b"\xa5" * wal.stat().st_size)


STORE_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "main deleted": (lambda p: os.remove(p), "s.sqlite3 was deleted"),
    "wal deleted": (lambda p: os.remove(f"{p}-wal"), "s.sqlite3-wal was deleted"),
    "main replaced": (_replace_with_other_db, "s.sqlite3 was replaced"),
    "wal garbled": (_garble_wal, "s.sqlite3-wal header was overwritten"),
}


@pytest.mark.parametrize("fault", STORE_FAULTS)
async def test_a_store_fault_refuses_the_next_setpoint_and_keeps_the_confirmed_limit(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite3"
    runtime = make_runtime(path)
    try:
        runtime.submit(DsoLinkUp())
        assert (await runtime.submit_setpoint(SetpointReceived(20000, peer="scada"))).accepted
        damage, why = STORE_FAULTS[fault]
        damage(path)
        seen: list[Sequence[Decision]] = []
        runtime.add_listener(seen.append)
        with caplog.at_level(logging.ERROR, logger="gateway.runtime"):
            outcome = await runtime.submit_setpoint(SetpointReceived(30000, peer="scada"))
        assert (outcome.accepted, outcome.reason) == (False, RejectReason.STORE_FAILED)
        assert why in outcome.detail
        assert any(r.levelno == logging.ERROR and why in r.getMessage() for r in caplog.records)
        view = runtime.view()
        assert (view.mode, view.limit_w) == (Mode.NORMAL, 20000)  # what is reported is unchanged
        assert seen == []
        # The store stays failed: a later setpoint is refused as well.
        assert not (await runtime.submit_setpoint(SetpointReceived(25000))).accepted
    finally:
        await runtime.close()
    if fault == "main replaced":  # a foreign file at the path: the restart refuses with one line
        with pytest.raises(StoreError, match="is not an ocpp809 store"):
            make_runtime(path)
        return
    restarted = make_runtime(path)  # resumes the last confirmed limit, not initial_limit_w
    try:
        view = restarted.view()
        assert (view.mode, view.limit_w) == (Mode.HOLD, 20000)
        oldest = restarted.store.audit()[0]
        assert (oldest.value_w, oldest.accepted) == (20000, True)
    finally:
        await restarted.close()


async def test_link_events_store_when_a_master_was_last_seen(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    runtime = make_runtime(tmp_path / "s.sqlite3", clock=clock)
    try:
        runtime.submit(DsoLinkUp())
        assert runtime.store.load_limit().master_seen_at_s == 1000.0  # type: ignore[union-attr]
        clock.now = 1042.0
        runtime.submit(DsoLinkLost())
        assert runtime.store.load_limit().master_seen_at_s == 1042.0  # type: ignore[union-attr]
        clock.now = 1050.0
        runtime.submit(DsoLinkLost())  # no change of the link: nothing new to store
        assert runtime.store.load_limit().master_seen_at_s == 1042.0  # type: ignore[union-attr]
    finally:
        await runtime.close()


async def test_downtime_counts_toward_the_hold(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    clock = FakeClock(1000.0)
    first = make_runtime(path, hold_timeout_s=300, clock=clock)
    first.submit(DsoLinkUp())
    assert (await first.submit_setpoint(SetpointReceived(20000))).accepted
    clock.now = 1010.0
    await first.close()  # the master was connected until the gateway stopped
    clock.now = 1200.0
    second = make_runtime(path, hold_timeout_s=300, clock=clock)
    try:
        view = second.view()
        assert (view.mode, view.limit_w) == (Mode.HOLD, 20000)
        assert second.arbiter.next_deadline() == 1010.0 + 300  # from the last sign of a master, not now
    finally:
        await second.close()
    clock.now = 1400.0  # the hold ran out while the gateway was down
    third = make_runtime(path, hold_timeout_s=300, clock=clock)
    try:
        view = third.view()
        assert (view.mode, view.limit_w) == (Mode.FALLBACK, 10000)
        assert third.store.load_limit().mode is Mode.FALLBACK  # type: ignore[union-attr]
    finally:
        await third.close()


async def test_a_crash_loses_at_most_one_refresh_of_the_last_seen_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.runtime.MASTER_SEEN_INTERVAL_S", 0.05)
    clock = FakeClock(1000.0)
    runtime = make_runtime(tmp_path / "s.sqlite3", clock=clock)
    refreshed = asyncio.Event()
    save = runtime.store.save_master_seen

    def spy(at_s: float, sync: bool = True) -> None:
        save(at_s, sync)
        if not sync:
            refreshed.set()

    monkeypatch.setattr(runtime.store, "save_master_seen", spy)
    try:
        runtime.submit(DsoLinkUp())
        clock.now = 1234.0
        await asyncio.wait_for(refreshed.wait(), timeout=10)
        assert runtime.store.load_limit().master_seen_at_s == 1234.0  # type: ignore[union-attr]
    finally:
        await runtime.close()


async def test_a_store_fault_found_by_the_refresh_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("gateway.runtime.MASTER_SEEN_INTERVAL_S", 0.05)
    path = tmp_path / "s.sqlite3"
    runtime = make_runtime(path)
    refreshes = 0
    third = asyncio.Event()
    save = runtime.store.save_master_seen

    def spy(at_s: float, sync: bool = True) -> None:
        nonlocal refreshes
        if not sync:
            refreshes += 1
            if refreshes == 3:
                third.set()
        save(at_s, sync)

    monkeypatch.setattr(runtime.store, "save_master_seen", spy)
    try:
        runtime.submit(DsoLinkUp())
        os.remove(f"{path}-wal")
        with caplog.at_level(logging.ERROR, logger="gateway.runtime"):
            await asyncio.wait_for(third.wait(), timeout=10)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "-wal was deleted" in errors[0].getMessage()
        assert runtime.metrics.store_errors._value.get() >= 3
    finally:
        await runtime.close()


def on_disk(store: Store) -> set[tuple[str, int]]:
    """(station, seq) of every profile a restart would count: stored ledgers and the journal."""
    found = {(sid, int(e[0])) for sid, _, entries in store.load_commitments() for e in json.loads(entries)}
    for journaled in store.load_commitment_journal():
        found |= {(str(e[0]), int(e[2])) for e in json.loads(journaled)}
    return found


async def test_a_profile_goes_out_only_once_its_station_commitment_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: 50 stations joining within one loop turn cost one fsync'd journal write,
    no ApplyStationLimit reaches an adapter before it is on disk, and the ledgers are stored
    whole (the journal emptied) a moment later."""
    config = parse_config({"limits": {"reallocation_settle_s": 0.0}, "store": {"path": str(tmp_path / "s")}})
    runtime = build_core(config, Store(config.store.path), time.time, missing_start=None)
    runtime.scheduler.start()
    runtime.start()
    writes: list[int] = []
    real = runtime.store.journal_commitments

    def counting(entries: str, at_s: float) -> None:
        writes.append(len(json.loads(entries)))
        real(entries, at_s)

    monkeypatch.setattr(runtime.store, "journal_commitments", counting)
    unstored: list[str] = []

    def check(decisions: Sequence[Decision]) -> None:
        stored = on_disk(runtime.store)
        unstored.extend(
            d.station_id
            for d in decisions
            if isinstance(d, ApplyStationLimit) and (d.station_id, d.seq) not in stored
        )

    runtime.add_listener(check)
    for i in range(50):
        decisions = runtime.submit(StationConnected(f"cp{i}", OcppVersion.V16, 11000.0, 0.0))
        assert any(isinstance(d, ApplyStationLimit) for d in decisions)
    assert writes == []  # nothing went out yet: the 50 batches wait for one commit
    await asyncio.sleep(0)  # the loop's next turn
    assert len(writes) == 1 and writes[0] >= 50  # every profile sent, the first ones' cuts too
    assert unstored == []
    assert runtime.store.load_commitments() == []  # whole ledgers come a moment later
    for _ in range(100):  # bounded: 100 x 50 ms (runtime.COMMITMENTS_FLUSH_S is 1 s)
        if len(runtime.store.load_commitments()) == 50:
            break
        await asyncio.sleep(0.05)
    assert len(runtime.store.load_commitments()) == 50
    assert runtime.store.load_commitment_journal() == []
    await runtime.close()


async def turns() -> None:
    """Let a deferred reallocation (a deadline of now) and the journal write after it run."""
    for _ in range(10):
        await asyncio.sleep(0)


async def holding_8kw(tmp_path: Path) -> tuple[Config, CoreRuntime, list[ApplyStationLimit]]:
    """A runtime on a store in ``tmp_path`` whose one station cp1 holds 8 kW, stored whole."""
    config = parse_config(
        {
            "limits": {"reallocation_settle_s": 0.0, "fallback_limit_w": 6000.0},
            "sharing": {"raise_interval_s": 0.0},
            "store": {"path": str(tmp_path / "s")},
        }
    )
    runtime = build_core(config, Store(config.store.path), time.time, missing_start=None)
    runtime.scheduler.start()
    runtime.start()
    sent: list[ApplyStationLimit] = []
    runtime.add_listener(lambda ds: sent.extend(d for d in ds if isinstance(d, ApplyStationLimit)))
    assert (await runtime.submit_setpoint(SetpointReceived(8000))).accepted
    runtime.submit(StationConnected("cp1", OcppVersion.V16, 11000.0, 0.0))
    await turns()
    [first] = sent
    runtime.submit(ProfileResult("cp1", first.seq, ProfileOutcome.ACCEPTED))
    runtime._store_commitments()  # the ledger stored whole: 8 kW held
    return config, runtime, sent


def crash_and_restart(config: Config, runtime: CoreRuntime) -> CoreRuntime:
    """No store of whole ledgers, no close: the next gateway starts from the same file."""
    runtime.scheduler.shutdown(wait=False)
    runtime.store.close()
    return build_core(config, Store(config.store.path), time.time, missing_start=None)


async def test_a_crash_between_the_journal_and_the_whole_ledgers_keeps_what_was_sent(tmp_path: Path) -> None:
    """The gateway dies after a raise went out and before its ledger was stored whole: the
    restarted core counts the raise from the journal (the station may hold it)."""
    config, runtime, sent = await holding_8kw(tmp_path)
    assert (await runtime.submit_setpoint(SetpointReceived(11000))).accepted
    await turns()
    raise_ = sent[-1]
    assert raise_.limit_w == 11000.0 and ("cp1", raise_.seq) in on_disk(runtime.store)
    again = crash_and_restart(config, runtime)
    station = again.arbiter.fleet.stations["cp1"]
    assert not station.online and station.ledger.commitment_w(time.time()) == 11000.0
    assert again.arbiter.fleet.reserve_sum(time.time()) == 11000.0
    again.store.close()


async def test_a_failed_store_of_whole_ledgers_never_lets_a_later_one_drop_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raise is journaled; the store of whole ledgers that would fold it in fails (disk
    full, say), then another store succeeds and empties the journal: the raise must be in
    it, or a restart forgets what the station may hold."""
    config, runtime, sent = await holding_8kw(tmp_path)
    assert (await runtime.submit_setpoint(SetpointReceived(11000))).accepted
    await turns()
    assert sent[-1].limit_w == 11000.0  # journaled, out, never answered

    real = runtime.store.save_commitments

    def full(*args: Any, **kwargs: Any) -> None:
        raise StoreError("cannot write commitments to s: database or disk is full")

    monkeypatch.setattr(runtime.store, "save_commitments", full)
    runtime._store_commitments()  # fails: nothing landed, the journal stays
    monkeypatch.setattr(runtime.store, "save_commitments", real)
    runtime.submit(DsoLinkUp())
    runtime._store_commitments()  # succeeds, and empties the journal
    assert runtime.store.load_commitment_journal() == []
    again = crash_and_restart(config, runtime)
    assert again.arbiter.fleet.stations["cp1"].ledger.commitment_w(time.time()) == 11000.0
    again.store.close()


async def test_an_accepted_setpoint_is_validated_once(
    runtime: CoreRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.core.arbiter as arbiter_module

    calls: list[float] = []
    real = arbiter_module.check_setpoint

    def counting(event: SetpointReceived, bounds: Any, now_s: float) -> Any:
        calls.append(event.value_w)
        return real(event, bounds, now_s)

    monkeypatch.setattr(arbiter_module, "check_setpoint", counting)
    assert (await runtime.submit_setpoint(SetpointReceived(20000))).accepted
    assert not (await runtime.submit_setpoint(SetpointReceived(0.0))).accepted
    assert calls == [20000, 0.0]  # once each, though the shell asks before the core decides
