"""Setpoint validation and the T3 decision: refused setpoints change nothing."""

from __future__ import annotations

import math

import pytest

from gateway.core.decisions import ConfirmSetpoint, LimitChanged, RejectSetpoint
from gateway.core.events import DsoLinkUp, SetpointReceived
from gateway.core.model import LimitSource, Mode, RejectReason, SetpointKind
from tests.core.helpers import T0, new_arbiter, of_type


def test_valid_setpoint_becomes_the_limit_in_force() -> None:
    arbiter = new_arbiter()
    decisions = arbiter.handle(SetpointReceived(20000, peer="10.0.0.1"), T0)
    assert of_type(decisions, ConfirmSetpoint) == [ConfirmSetpoint(20000)]
    [change] = of_type(decisions, LimitChanged)
    assert (change.limit_w, change.source, change.mode) == (20000, LimitSource.DSO_SETPOINT, Mode.NORMAL)
    assert arbiter.limit_w == 20000


def test_t3_zero_kw_below_the_minimum_profile_is_refused() -> None:
    arbiter = new_arbiter()
    arbiter.handle(SetpointReceived(50000), T0)
    before = arbiter.view(), arbiter.durable
    decisions = arbiter.handle(SetpointReceived(0.0), T0 + 1)
    [reject] = decisions
    assert isinstance(reject, RejectSetpoint)
    assert reject.reason is RejectReason.BELOW_MIN
    assert "6000" in reject.detail
    assert (arbiter.view(), arbiter.durable) == before


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, RejectReason.NOT_FINITE),
        (math.inf, RejectReason.NOT_FINITE),
        (-math.inf, RejectReason.NOT_FINITE),
        (-1.0, RejectReason.BELOW_MIN),
        (5999.9, RejectReason.BELOW_MIN),
        (100000.1, RejectReason.ABOVE_MAX),
    ],
)
def test_invalid_values_are_refused_with_their_reason(value: float, reason: RejectReason) -> None:
    arbiter = new_arbiter()
    [reject] = arbiter.handle(SetpointReceived(value), T0)
    assert isinstance(reject, RejectSetpoint) and reject.reason is reason
    assert arbiter.mode is Mode.INITIAL


@pytest.mark.parametrize("value", [6000.0, 100000.0])
def test_the_bounds_themselves_are_valid(value: float) -> None:
    arbiter = new_arbiter()
    assert of_type(arbiter.handle(SetpointReceived(value), T0), ConfirmSetpoint)


@pytest.mark.parametrize(
    ("tag_offset_s", "reason"),
    [(-30.0, None), (-30.5, RejectReason.STALE), (5.0, None), (5.5, RejectReason.FUTURE), (0.0, None)],
)
def test_time_tag_age_and_future_tolerance(tag_offset_s: float, reason: RejectReason | None) -> None:
    arbiter = new_arbiter()
    event = SetpointReceived(20000, SetpointKind.TIME_TAGGED, time_tag_s=T0 + tag_offset_s)
    decisions = arbiter.handle(event, T0)
    if reason is None:
        assert of_type(decisions, ConfirmSetpoint)
    else:
        [reject] = decisions
        assert isinstance(reject, RejectSetpoint) and reject.reason is reason


def test_a_nan_time_tag_is_stale_not_accepted() -> None:
    arbiter = new_arbiter()
    [reject] = arbiter.handle(SetpointReceived(20000, SetpointKind.TIME_TAGGED, time_tag_s=math.nan), T0)
    assert isinstance(reject, RejectSetpoint) and reject.reason is RejectReason.STALE


def test_check_and_durable_after_agree_with_handle() -> None:
    arbiter = new_arbiter()
    arbiter.handle(DsoLinkUp(), T0)
    event = SetpointReceived(30000)
    assert arbiter.check_setpoint(event, T0) is None
    expected = arbiter.durable_after(event, T0)
    arbiter.handle(event, T0)
    assert arbiter.durable == expected
