"""Resuming what the store kept: downtime counts toward the hold (pure, time passed in)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.arbiter import Arbiter, DurableLimit
from gateway.core.durable import resume
from gateway.core.model import Mode
from tests.core.helpers import SETTINGS, T0

HOLD = 300.0


def test_nothing_stored_starts_on_the_side_the_shell_asks_for() -> None:
    assert resume(None, HOLD, T0, missing_start="fallback") == DurableLimit(Mode.FALLBACK, None, T0)
    assert resume(None, HOLD, T0, missing_start="initial") == DurableLimit(Mode.INITIAL, None, T0)


def test_normal_resumes_as_a_hold_from_the_last_sign_of_a_master() -> None:
    stored = DurableLimit(Mode.NORMAL, 20000, T0 - 500, master_seen_at_s=T0 - 100)
    resumed = resume(stored, HOLD, T0, missing_start="fallback")
    assert resumed == DurableLimit(Mode.HOLD, 20000, T0 - 100, T0 - 100, T0 - 100)


def test_normal_without_a_later_sign_holds_from_the_accepted_setpoint() -> None:
    stored = DurableLimit(Mode.NORMAL, 20000, T0 - 100)
    resumed = resume(stored, HOLD, T0, missing_start="fallback")
    assert (resumed.mode, resumed.hold_started_at_s) == (Mode.HOLD, T0 - 100)


def test_normal_whose_hold_ran_out_while_down_is_fallback_since_it_ran_out() -> None:
    stored = DurableLimit(Mode.NORMAL, 20000, T0 - 1000, master_seen_at_s=T0 - 400)
    assert resume(stored, HOLD, T0, missing_start="fallback") == DurableLimit(
        Mode.FALLBACK, 20000, T0 - 400 + HOLD, None, T0 - 400
    )


def test_hold_keeps_its_start_or_falls_back() -> None:
    running = DurableLimit(Mode.HOLD, 20000, T0 - 100, T0 - 100)
    assert resume(running, HOLD, T0, missing_start="fallback") is running
    expired = DurableLimit(Mode.HOLD, 20000, T0 - 1000, T0 - 1000)
    assert resume(expired, HOLD, T0, missing_start="fallback") == DurableLimit(
        Mode.FALLBACK, 20000, T0 - 1000 + HOLD
    )


def test_fallback_stays_fallback() -> None:
    stored = DurableLimit(Mode.FALLBACK, 20000, T0 - 5)
    assert resume(stored, HOLD, T0, missing_start="initial") is stored


def test_initial_with_no_master_for_the_hold_time_is_fallback() -> None:
    stored = DurableLimit(Mode.INITIAL, None, T0 - 1000)
    assert resume(stored, HOLD, T0, missing_start="initial") == DurableLimit(
        Mode.FALLBACK, None, T0 - 1000 + HOLD
    )


def test_initial_still_within_the_hold_time_waits_on_from_the_last_sign_of_a_master() -> None:
    fresh = DurableLimit(Mode.INITIAL, None, T0 - 100)
    assert resume(fresh, HOLD, T0, missing_start="initial") is fresh
    seen = DurableLimit(Mode.INITIAL, None, T0 - 1000, master_seen_at_s=T0 - 100)
    assert resume(seen, HOLD, T0, missing_start="initial") == DurableLimit(
        Mode.INITIAL, None, T0 - 1000, T0 - 100, T0 - 100
    )


def test_initial_without_the_fallback_rule_stays_initial() -> None:
    stored = DurableLimit(Mode.INITIAL, None, T0 - 10_000)
    assert resume(stored, HOLD, T0, missing_start="initial", initial_fallback=False) is stored


def test_times_in_the_future_count_as_now() -> None:
    stored = DurableLimit(Mode.NORMAL, 20000, T0 + 50, master_seen_at_s=T0 + 60)
    resumed = resume(stored, HOLD, T0, missing_start="fallback")
    assert (resumed.mode, resumed.hold_started_at_s) == (Mode.HOLD, T0)


def test_the_core_starts_from_the_resumed_state() -> None:
    stored = DurableLimit(Mode.NORMAL, 20000, T0 - 500, master_seen_at_s=T0 - 100)
    arbiter = Arbiter.start(SETTINGS, stored, T0)
    assert (arbiter.mode, arbiter.limit_w) == (Mode.HOLD, 20000)
    assert arbiter.next_deadline() == T0 - 100 + SETTINGS.hold_timeout_s


# -- properties ---------------------------------------------------------------------

offsets = st.floats(min_value=-10_000, max_value=100, allow_nan=False)
modes = st.sampled_from(list(Mode))


@st.composite
def stored_limits(draw: st.DrawFn) -> DurableLimit:
    mode = draw(modes)
    changed = T0 + draw(offsets)
    hold_started = None
    if mode is Mode.HOLD or (mode is Mode.INITIAL and draw(st.booleans())):
        hold_started = changed + draw(st.floats(min_value=0, max_value=100))
    setpoint = None if mode is Mode.INITIAL else draw(st.floats(min_value=6000, max_value=100000))
    seen = draw(st.none() | st.floats(min_value=-10_000, max_value=100).map(lambda o: T0 + o))
    return DurableLimit(mode, setpoint, changed, hold_started, seen)


def last_seen(stored: DurableLimit) -> float:
    """The latest evidence of a master the store holds (an accepted setpoint, a link event)."""
    evidence = [stored.changed_at_s]
    if stored.hold_started_at_s is not None:
        evidence.append(stored.hold_started_at_s)
    if stored.master_seen_at_s is not None:
        evidence.append(stored.master_seen_at_s)
    return max(evidence)


@given(stored_limits(), st.floats(min_value=1, max_value=3600))
def test_a_resumed_hold_never_ends_later_than_last_seen_plus_the_hold_time(
    stored: DurableLimit, hold_timeout_s: float
) -> None:
    resumed = resume(stored, hold_timeout_s, T0, missing_start="fallback")
    if resumed.mode is Mode.HOLD:
        assert resumed.hold_started_at_s is not None
        end = resumed.hold_started_at_s + hold_timeout_s
        assert T0 < end <= last_seen(stored) + hold_timeout_s
    if resumed.mode is Mode.INITIAL:
        start = resumed.hold_started_at_s if resumed.hold_started_at_s is not None else resumed.changed_at_s
        assert T0 < start + hold_timeout_s <= last_seen(stored) + hold_timeout_s


@given(stored_limits(), st.floats(min_value=1, max_value=3600))
def test_resume_never_raises_the_limit_mode_and_never_forgets_a_fallback(
    stored: DurableLimit, hold_timeout_s: float
) -> None:
    resumed = resume(stored, hold_timeout_s, T0, missing_start="fallback")
    allowed = {
        Mode.NORMAL: {Mode.HOLD, Mode.FALLBACK},
        Mode.HOLD: {Mode.HOLD, Mode.FALLBACK},
        Mode.INITIAL: {Mode.INITIAL, Mode.FALLBACK},
        Mode.FALLBACK: {Mode.FALLBACK},
    }
    assert resumed.mode in allowed[stored.mode]
    assert resumed.setpoint_w == stored.setpoint_w
    assert resumed.master_seen_at_s == stored.master_seen_at_s


@given(stored_limits(), st.floats(min_value=1, max_value=3600))
def test_resume_is_idempotent(stored: DurableLimit, hold_timeout_s: float) -> None:
    once = resume(stored, hold_timeout_s, T0, missing_start="fallback")
    assert resume(once, hold_timeout_s, T0, missing_start="fallback") == once
