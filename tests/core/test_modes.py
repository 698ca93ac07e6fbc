"""Modes: initial, normal, hold on link loss, fallback after the timeout (T2), resume."""

from __future__ import annotations

import dataclasses

from gateway.core.arbiter import Arbiter, DurableLimit
from gateway.core.decisions import LimitChanged
from gateway.core.events import DsoLinkLost, DsoLinkUp, SetpointReceived, Tick
from gateway.core.model import LimitSource, Mode
from tests.core.helpers import SETTINGS, T0, new_arbiter, of_type, step

HOLD = SETTINGS.hold_timeout_s


def test_initial_limit_applies_before_any_setpoint() -> None:
    arbiter = new_arbiter()
    assert (arbiter.mode, arbiter.limit_w, arbiter.source) == (Mode.INITIAL, 50000, LimitSource.INITIAL)


def test_no_master_within_the_hold_time_of_start_means_fallback() -> None:
    arbiter = new_arbiter()
    assert arbiter.next_deadline() == T0 + HOLD
    assert of_type(step(arbiter, Tick(), T0 + HOLD - 0.001), LimitChanged) == []
    [fell] = of_type(step(arbiter, Tick(), T0 + HOLD), LimitChanged)
    assert (fell.mode, fell.limit_w) == (Mode.FALLBACK, SETTINGS.fallback_limit_w)
    assert "no DSO master" in fell.reason


def test_a_master_before_the_deadline_keeps_the_initial_limit_while_it_stays() -> None:
    arbiter = new_arbiter()
    step(arbiter, DsoLinkUp(), T0 + 10)
    assert arbiter.next_deadline() is None
    # Its loss starts the hold of the initial limit; fallback follows after hold_timeout_s.
    assert step(arbiter, DsoLinkLost(), T0 + 20) == []
    assert arbiter.mode is Mode.INITIAL and arbiter.next_deadline() == T0 + 20 + HOLD
    [fell] = of_type(step(arbiter, Tick(), T0 + 20 + HOLD), LimitChanged)
    assert fell.mode is Mode.FALLBACK


def test_initial_without_the_rule_ignores_link_loss() -> None:
    settings = dataclasses.replace(SETTINGS, fallback_without_master=False)
    arbiter = Arbiter.start(settings, None, T0)
    assert arbiter.next_deadline() is None
    step(arbiter, DsoLinkUp(), T0)
    assert step(arbiter, DsoLinkLost(), T0 + 1) == []
    assert arbiter.mode is Mode.INITIAL and arbiter.next_deadline() is None


def test_t2_link_cut_holds_then_falls_back() -> None:
    arbiter = new_arbiter()
    step(arbiter, DsoLinkUp(), T0)
    step(arbiter, SetpointReceived(20000), T0 + 1)
    cut_at = T0 + 10

    [held] = of_type(step(arbiter, DsoLinkLost(), cut_at), LimitChanged)
    assert (held.limit_w, held.mode, held.source) == (20000, Mode.HOLD, LimitSource.HOLD)
    assert arbiter.next_deadline() == cut_at + HOLD

    # A tick before the deadline changes nothing: the last limit is held.
    assert of_type(step(arbiter, Tick(), cut_at + HOLD - 0.001), LimitChanged) == []
    assert arbiter.limit_w == 20000

    [fell] = of_type(step(arbiter, Tick(), cut_at + HOLD), LimitChanged)
    assert (fell.limit_w, fell.mode, fell.source) == (10000, Mode.FALLBACK, LimitSource.FALLBACK)
    assert arbiter.durable.changed_at_s == cut_at + HOLD

    # The rest of the ten-minute cut: still fallback, no further deadline.
    assert step(arbiter, Tick(), cut_at + 600) == []
    assert arbiter.next_deadline() is None


def test_link_restored_within_hold_returns_to_normal() -> None:
    arbiter = new_arbiter()
    step(arbiter, SetpointReceived(20000), T0)
    step(arbiter, DsoLinkLost(), T0 + 1)
    [back] = of_type(step(arbiter, DsoLinkUp(), T0 + 2), LimitChanged)
    assert (back.mode, back.limit_w) == (Mode.NORMAL, 20000)
    assert arbiter.next_deadline() is None


def test_link_restoration_alone_does_not_lift_the_fallback() -> None:
    arbiter = new_arbiter()
    step(arbiter, SetpointReceived(20000), T0)
    step(arbiter, DsoLinkLost(), T0)
    step(arbiter, Tick(), T0 + HOLD)
    assert step(arbiter, DsoLinkUp(), T0 + HOLD + 1) == []
    assert (arbiter.mode, arbiter.limit_w) == (Mode.FALLBACK, 10000)
    step(arbiter, SetpointReceived(30000), T0 + HOLD + 2)
    assert (arbiter.mode, arbiter.limit_w) == (Mode.NORMAL, 30000)


def test_refused_setpoint_does_not_lift_the_fallback() -> None:
    arbiter = new_arbiter()
    step(arbiter, SetpointReceived(20000), T0)
    step(arbiter, DsoLinkLost(), T0)
    step(arbiter, Tick(), T0 + HOLD)
    step(arbiter, SetpointReceived(0), T0 + HOLD + 1)
    assert arbiter.mode is Mode.FALLBACK


def test_resume_normal_starts_a_hold_at_start_up() -> None:
    arbiter = new_arbiter(DurableLimit(Mode.NORMAL, 20000, T0 - 100), now=T0)
    assert (arbiter.mode, arbiter.limit_w) == (Mode.HOLD, 20000)
    # No master was seen since the store last wrote (T0 - 100): the downtime counts toward the hold.
    assert arbiter.next_deadline() == T0 - 100 + HOLD


def test_resume_hold_that_expired_while_down_is_fallback() -> None:
    arbiter = new_arbiter(DurableLimit(Mode.HOLD, 20000, T0 - 1000, hold_started_at_s=T0 - 1000), now=T0)
    assert (arbiter.mode, arbiter.limit_w) == (Mode.FALLBACK, 10000)


def test_resume_hold_still_running_keeps_its_deadline() -> None:
    arbiter = new_arbiter(DurableLimit(Mode.HOLD, 20000, T0 - 100, hold_started_at_s=T0 - 100), now=T0)
    assert arbiter.mode is Mode.HOLD and arbiter.next_deadline() == T0 - 100 + HOLD


def test_resume_fallback_and_initial_stay() -> None:
    assert new_arbiter(DurableLimit(Mode.FALLBACK, 20000, T0 - 5)).limit_w == 10000
    assert new_arbiter(DurableLimit(Mode.INITIAL, None, T0 - 5)).limit_w == 50000
