"""The shell around the core: durable before confirmed, resume, deadlines on the scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.app import arbiter_settings
from gateway.arbiter import Arbiter
from gateway.config import parse_config
from gateway.decisions import Decision, LimitChanged
from gateway.errors import StoreError
from gateway.events import DsoLinkLost, DsoLinkUp, SetpointReceived
from gateway.metrics import CoreMetrics
from gateway.model import Mode, RejectReason
from gateway.runtime import CoreRuntime
from gateway.store import Store


def make_runtime(path: Path, hold_timeout_s: float = 300.0) -> CoreRuntime:
    config = parse_config({"limits": {"hold_timeout_s": hold_timeout_s}})
    store = Store(path)
    arbiter = Arbiter.start(arbiter_settings(config), store.load_limit(), __import__("time").time())
    runtime = CoreRuntime(arbiter, store, CoreMetrics(), AsyncIOScheduler())
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
    def broken(_limit: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(runtime.store, "save_limit", broken)
    seen: list[Sequence[Decision]] = []
    runtime.add_listener(seen.append)
    outcome = await runtime.submit_setpoint(SetpointReceived(20000))
    assert (outcome.accepted, outcome.reason) == (False, RejectReason.STORE_FAILED)
    assert runtime.view().limit_w != 20000 and runtime.view().mode is Mode.INITIAL
    assert seen == []  # nothing was announced to the adapters
    assert runtime.store.audit()[-1].reason == "store_failed"


async def test_restart_resumes_the_stored_limit_as_a_hold(tmp_path: Path) -> None:
    first = make_runtime(tmp_path / "s.sqlite3")
    await first.submit(DsoLinkUp())
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
        await runtime.submit(DsoLinkUp())
        await runtime.submit_setpoint(SetpointReceived(20000))
        await runtime.submit(DsoLinkLost())
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
        await runtime.submit(SetpointReceived(20000))
