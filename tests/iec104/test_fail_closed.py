"""Fail closed: a core that errs or hangs gets the master a negative ACT_CON, and the next command works."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.core.events import SetpointReceived
from gateway.runtime import SetpointOutcome
from tests.iec104.conftest import running_site, site_config


async def test_core_error_gives_negative_confirmation_and_the_next_command_is_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_site(site_config(tmp_path)) as site, site.master() as master:
        real = site.runtime.submit_setpoint

        async def broken(event: SetpointReceived) -> SetpointOutcome:
            raise RuntimeError("core exploded")

        monkeypatch.setattr(site.runtime, "submit_setpoint", broken)
        con = await master.send_setpoint(100, 20000.0)
        assert not con.positive
        assert site.runtime.view().limit_w == site.config.limits.initial_limit_w

        monkeypatch.setattr(site.runtime, "submit_setpoint", real)
        again = await master.send_setpoint(100, 20000.0)
        assert again.positive  # c104 kept our callback: it never saw an exception
        assert site.runtime.view().limit_w == 20000.0
        await site.until(lambda: len(site.runtime.store.audit()) == 2, what="both commands audited")
        rows = site.runtime.store.audit()
        assert [(r.accepted, r.reason) for r in rows] == [(False, "internal_error"), (True, "ok")]
        assert "core exploded" in rows[0].detail


async def test_stuck_core_times_out_negatively_and_the_next_command_is_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = site_config(tmp_path, command_timeout_s=0.3)
    async with running_site(config) as site, site.master() as master:
        real = site.runtime.submit_setpoint
        never = asyncio.Event()
        entered = asyncio.Event()

        async def stuck(event: SetpointReceived) -> SetpointOutcome:
            entered.set()
            await never.wait()
            raise AssertionError("unreachable")  # pragma: no cover

        monkeypatch.setattr(site.runtime, "submit_setpoint", stuck)
        con = await master.send_setpoint(100, 20000.0)
        assert entered.is_set()
        assert not con.positive
        assert site.runtime.view().limit_w == site.config.limits.initial_limit_w

        monkeypatch.setattr(site.runtime, "submit_setpoint", real)
        again = await master.send_setpoint(100, 25000.0)
        assert again.positive
        assert site.runtime.view().limit_w == 25000.0
        await site.until(lambda: len(site.runtime.store.audit()) == 2, what="both commands audited")
        rows = site.runtime.store.audit()
        assert [(r.accepted, r.reason, r.value_w) for r in rows] == [
            (False, "timeout", 20000.0),
            (True, "ok", 25000.0),
        ]


async def test_blocked_loop_never_lets_an_abandoned_command_reach_the_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop is blocked longer than command_timeout_s: the command is refused and never applied."""
    config = site_config(tmp_path, command_timeout_s=0.2)
    async with running_site(config) as site, site.master() as master:
        calls: list[SetpointReceived] = []
        real = site.runtime.submit_setpoint

        async def counting(event: SetpointReceived) -> SetpointOutcome:
            calls.append(event)
            return await real(event)

        monkeypatch.setattr(site.runtime, "submit_setpoint", counting)
        send = asyncio.ensure_future(master.send_setpoint(100, 20000.0))
        await asyncio.sleep(0)  # the command is written to the socket before the task first waits
        time.sleep(1.5)  # noqa: ASYNC251 - block the loop, as a core stuck in a synchronous call would, past the timeout
        con = await asyncio.wait_for(send, 5)
        assert not con.positive
        await site.until(lambda: len(site.runtime.store.audit()) == 1, what="the timeout is audited")
        assert calls == []
        assert site.runtime.view().limit_w == site.config.limits.initial_limit_w
        row = site.runtime.store.audit()[0]
        assert (row.accepted, row.reason) == (False, "timeout")
        assert (await master.send_setpoint(100, 20000.0)).positive


async def test_a_command_the_core_took_in_time_is_confirmed_with_its_decision_even_if_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop takes the command before command_timeout_s but is busy past it (a fan-out to
    thousands of stations): the core stores and applies it, so the answer is positive, late.
    Before: a negative ACT_CON for a limit that was in force (27 of them at 5,000 stations)."""
    config = site_config(tmp_path, command_timeout_s=0.3)
    async with running_site(config) as site, site.master() as master:
        real = site.runtime.submit_setpoint

        async def busy(event: SetpointReceived) -> SetpointOutcome:
            time.sleep(0.6)  # noqa: ASYNC251 - the loop busy while deciding, past the timeout
            return await real(event)

        monkeypatch.setattr(site.runtime, "submit_setpoint", busy)
        con = await master.send_setpoint(100, 20000.0, timeout_s=5.0)
        assert con.positive
        assert site.runtime.view().limit_w == 20000.0
        rows = site.runtime.store.audit()
        assert [(r.accepted, r.reason, r.value_w) for r in rows] == [(True, "ok", 20000.0)]
        registry = site.runtime.metrics.registry
        assert registry.get_sample_value("ocpp809_iec104_late_confirmations_total") == 1
        assert registry.get_sample_value("ocpp809_iec104_command_failures_total", {"cause": "timeout"}) == 0
