"""Shared builders for core tests: explicit time, no sockets."""

from __future__ import annotations

from gateway.core.arbiter import Arbiter, ArbiterSettings, DurableLimit
from gateway.core.decisions import Decision
from gateway.core.events import Event, Tick
from gateway.core.setpoint_rules import SetpointBounds

T0 = 1_800_000_000.0  # a fixed wall-clock instant; tests pass time explicitly

SETTINGS = ArbiterSettings(
    bounds=SetpointBounds(min_limit_w=6000, max_limit_w=100000, max_command_age_s=30, future_tolerance_s=5),
    initial_limit_w=50000,
    fallback_limit_w=10000,
    hold_timeout_s=300,
    meter_stale_after_s=180,
)


def new_arbiter(resumed: DurableLimit | None = None, now: float = T0) -> Arbiter:
    return Arbiter.start(SETTINGS, resumed, now)


def step(arbiter: Arbiter, event: Event, now: float) -> list[Decision]:
    """Feed ``event``, then the Tick a shell would feed at once if a deadline is due (a setpoint
    confirms first and reallocates on a deadline of now)."""
    out = arbiter.handle(event, now)
    for _ in range(3):
        deadline = arbiter.next_deadline()
        if deadline is None or deadline > now:
            break
        out += arbiter.handle(Tick(), now)
    return out


def of_type(decisions: list[Decision], kind: type) -> list:  # type: ignore[type-arg]
    return [d for d in decisions if isinstance(d, kind)]
