"""The runner's cap-invariant watch, on stand-in stations and a hand-driven clock (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scenarios.runner import CapWatch
from scenarios.spec import CapInvariant


@dataclass
class Station:
    cap: float | None
    listeners: list[Any] = field(default_factory=list)

    def cap_w(self) -> float | None:
        return self.cap


class Site:
    def __init__(self, limit_w: float, **caps: float | None) -> None:
        self.limit_w = limit_w
        self.now = 100.0
        self.stations = {sid: Station(cap) for sid, cap in caps.items()}
        self.watch = CapWatch(
            self.stations,  # type: ignore[arg-type]
            lambda: self.limit_w,
            CapInvariant(check=True, cut_within_s=1.0),
            clock=lambda: self.now,
        )

    def set(self, after_s: float = 0.0, limit_w: float | None = None, **caps: float | None) -> None:
        self.now += after_s
        if limit_w is not None:
            self.limit_w = limit_w
        for sid, cap in caps.items():
            self.stations[sid].cap = cap
        self.watch.look()


def test_caps_within_the_limit_pass_with_the_peak_and_the_least_room() -> None:
    site = Site(30000, a=10000, b=10000, c=None)  # c has not been bound yet: it counts nothing
    site.set()
    site.set(1, c=5000)
    text, passed, lasted = site.watch.verdict()
    assert passed, text
    assert text.startswith("peak 25000/30000 W, room >= 5000 W, 0 cut(s)")
    assert lasted == 1


def test_caps_above_the_limit_fail_and_name_every_station() -> None:
    site = Site(30000, a=10000, b=10000, c=10000)
    site.set()
    site.set(2.5, b=12500)  # a raise while nothing was cut: 32.5 kW against 30 kW
    site.set(0.5, a=7500)
    text, passed, _ = site.watch.verdict()
    assert not passed
    assert text == ("1 over; first at 2.50 s: caps 32500.0 W > limit 30000.0 W (a 10000, b 12500, c 10000)")


def test_a_lower_limit_opens_a_window_for_the_cuts_then_over_is_over() -> None:
    site = Site(30000, a=15000, b=15000)
    site.set()
    site.set(1, limit_w=20000)  # the DSO cuts: 30 kW of caps over 20 kW, inside the window
    site.set(0.01, a=10000)
    site.set(0.01, b=10000)  # fits 0.02 s after the cut
    site.set(1, b=12000)  # the window (1 s) is over: over is over
    text, passed, _ = site.watch.verdict()
    assert not passed
    assert text.startswith("1 over; first at 2.02 s: caps 22000.0 W > limit 20000.0 W")
    assert site.watch.windows == 1
    assert abs(site.watch.longest_over_s - 0.01) < 1e-9  # last seen over 0.01 s after the cut


def test_a_raise_sent_before_the_cut_may_land_inside_the_window() -> None:
    site = Site(36000, a=9000, b=9000, c=9000, joiner=0)
    site.set()
    site.set(1, limit_w=25000, a=5000, b=5000, c=5000)  # the cuts land at once: 15 kW
    site.set(0.01, joiner=9000)  # the joiner's raise, sent into free room before the cut
    site.set(0.01, joiner=5000)  # and its cut
    text, passed, _ = site.watch.verdict()
    assert passed, text
    assert "1 cut(s) over <= 0.000 s" in text


def test_inside_the_window_the_caps_stay_within_the_limit_before_the_cut() -> None:
    site = Site(30000, a=15000, b=15000, joiner=None)
    site.set()
    site.set(1, limit_w=20000, a=10000)
    site.set(0.01, joiner=6000)  # raised in the window past the 30 kW before the cut
    text, passed, _ = site.watch.verdict()
    assert not passed
    assert "caps 31000.0 W > 30000.0 W, the limit before the cut" in text


def test_cuts_that_do_not_land_within_cut_within_s_fail() -> None:
    site = Site(30000, a=15000, b=15000)
    site.set()
    site.set(1, limit_w=20000)
    site.set(0.5)
    assert site.watch.violations == 0  # still inside the window
    site.set(0.6)
    text, passed, _ = site.watch.verdict()
    assert not passed
    assert "at 2.10 s: caps 30000.0 W > limit 20000.0 W" in text
