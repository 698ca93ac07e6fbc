"""What survives a restart, and how a restart resumes it. Pure: time is passed in.

The store keeps one ``DurableLimit``; ``resume`` turns what it kept into the state the
core starts in. The rule behind every case: **downtime counts**. While the gateway was
down no master could reach it, so every clock that runs while no master is connected
(the hold, the wait for a first master) kept running from the last moment a master was
known to be connected, not from the restart.

    stored      resumes as
    ----------  ---------------------------------------------------------------------
    (nothing)   ``missing_start``: FALLBACK (safe side) or INITIAL, from now
    NORMAL      HOLD started at the last sign of a master (``master_seen_at_s``, or the
                accepted setpoint itself if later), or FALLBACK if that hold has expired
    HOLD        HOLD with its own start, or FALLBACK if it has expired
    INITIAL     INITIAL, or FALLBACK once ``hold_timeout_s`` has passed with no setpoint
                since the start or the last sign of a master (``initial_fallback``; the
                core's run-time rule, ``ArbiterSettings.fallback_without_master``)
    FALLBACK    FALLBACK: only a new DSO setpoint lifts it

A hold never ends later than ``last seen + hold_timeout_s``; times the store holds in
the future (the clock went back) count as now. ``resume`` is idempotent: resuming a
resumed state at the same instant changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.core.model import Mode

MissingStart = Literal["fallback", "initial"]


@dataclass(frozen=True, slots=True)
class DurableLimit:
    """The part of the state that must survive a restart (the store keeps it).

    ``master_seen_at_s`` is the last moment a master was known to be connected. The
    shell keeps it up to date in the store; the core's own transitions leave it None,
    which the store reads as "unchanged".
    """

    mode: Mode
    setpoint_w: float | None
    changed_at_s: float
    hold_started_at_s: float | None = None
    master_seen_at_s: float | None = None


def resume(
    stored: DurableLimit | None,
    hold_timeout_s: float,
    now_s: float,
    *,
    missing_start: MissingStart,
    initial_fallback: bool = True,
) -> DurableLimit:
    """The state to start in at ``now_s``, given what the store kept (None: nothing).

    An INITIAL that keeps waiting for a first master carries the moment the wait began
    in ``hold_started_at_s`` (the core counts its run-time INITIAL timeout from there).
    """
    if stored is None:
        return DurableLimit(Mode.FALLBACK if missing_start == "fallback" else Mode.INITIAL, None, now_s)
    seen = stored.master_seen_at_s
    match stored.mode:
        case Mode.NORMAL:
            # An accepted setpoint proves a master at that moment; a later sign counts if there is one.
            last_seen = stored.changed_at_s if seen is None else max(seen, stored.changed_at_s)
            return _hold(stored, min(last_seen, now_s), hold_timeout_s, now_s)
        case Mode.HOLD:
            started = (
                stored.hold_started_at_s if stored.hold_started_at_s is not None else stored.changed_at_s
            )
            return _hold(stored, min(started, now_s), hold_timeout_s, now_s)
        case Mode.INITIAL:
            if not initial_fallback:
                return stored
            waiting = (
                stored.hold_started_at_s if stored.hold_started_at_s is not None else stored.changed_at_s
            )
            quiet_since = min(waiting if seen is None else max(seen, waiting), now_s)
            expiry = quiet_since + hold_timeout_s
            if expiry <= now_s:
                return DurableLimit(Mode.FALLBACK, None, expiry, None, seen)
            if quiet_since == waiting:
                return stored
            return DurableLimit(Mode.INITIAL, None, stored.changed_at_s, quiet_since, seen)
        case _:
            return stored


def _hold(stored: DurableLimit, started: float, hold_timeout_s: float, now_s: float) -> DurableLimit:
    expiry = started + hold_timeout_s
    if expiry <= now_s:
        return DurableLimit(Mode.FALLBACK, stored.setpoint_w, expiry, None, stored.master_seen_at_s)
    if stored.mode is Mode.HOLD and stored.hold_started_at_s == started:
        return stored
    return DurableLimit(Mode.HOLD, stored.setpoint_w, started, started, stored.master_seen_at_s)


def describe_resume(stored: DurableLimit | None, resumed: DurableLimit, now_s: float) -> str:
    """One line for the log: what the store held and what the gateway starts in."""
    if stored is None:
        return f"no stored limit: starting in {resumed.mode.value} until a DSO setpoint arrives"
    held = f"stored {stored.mode.value}" + ("" if stored.setpoint_w is None else f" {stored.setpoint_w:g} W")
    if resumed.mode is Mode.HOLD and resumed.hold_started_at_s is not None:
        ago = now_s - resumed.hold_started_at_s
        return f"resumed from the store ({held}): hold since the last sign of a master {ago:.1f} s ago"
    if resumed.mode is Mode.FALLBACK and stored.mode is not Mode.FALLBACK:
        ago = now_s - resumed.changed_at_s
        return f"resumed from the store ({held}): no master for longer than the hold, fallback since {ago:.1f} s ago"
    return f"resumed from the store ({held})"
