"""Gateway core bug found running V12 with a station away across the CSMS's return: a
station that comes back after its live cap lapsed stays at 0 W while the others keep its
share, for good. Pure core, explicit time (the builders of tests/core/test_commitments.py);
it belongs there once the fix is made. It FAILS until ``gateway/fleet.py`` is fixed.

What happens (``gateway/fleet.py``): on its return the station still holds its old,
lapsed live profile, so it is *fixed* ("its live cap no longer assured"), and
``Fleet.set_targets`` gives it its fair share (10 kW) while the others split what its
reserve leaves (30 kW - 0 W: 15 kW each). It is bound at 0 W and accepts; it is no
longer fixed, but ``Fleet.targets_stale`` compares only the fixed reserve sums (0 W
before and after), so nothing is split again: its 10 kW raise waits for free room that
never comes (the others' refreshes renew 15 kW), and the targets add up to 40 kW under a
30 kW limit.
"""

from __future__ import annotations

from gateway.arbiter import Arbiter
from gateway.events import StationDisconnected, Tick
from tests.core.helpers import T0, step
from tests.core.test_commitments import accept, join, shares, site


def _tick_until(arbiter: Arbiter, now: float) -> None:
    for _ in range(50):  # the shell ticks at every deadline on the way
        deadline = arbiter.next_deadline()
        if deadline is None or deadline > now:
            break
        accept(arbiter, step(arbiter, Tick(), deadline), deadline)
    accept(arbiter, step(arbiter, Tick(), now), now)


def test_a_station_back_after_its_live_cap_lapsed_gets_its_share_again() -> None:
    arbiter = site()  # cp1..cp3 share 30 kW: 10 kW each
    step(arbiter, StationDisconnected("cp3"), T0 + 10)
    _tick_until(arbiter, T0 + 600)  # cp3's live cap lapses onto its 0 W fallback cap
    assert shares(arbiter) == {"cp1": 15000.0, "cp2": 15000.0}
    back = T0 + 700
    accept(arbiter, join(arbiter, "cp3", back), back)  # bound at 0 W, Accepted: the cuts should follow
    _tick_until(arbiter, back + 1200)  # two refresh cycles later
    view = arbiter.view(back + 1200)
    held = {s.station_id: s.committed_w for s in view.stations}
    targets = {s.station_id: s.limit_w for s in view.stations}
    assert held == {"cp1": 10000.0, "cp2": 10000.0, "cp3": 10000.0}, (held, targets)
