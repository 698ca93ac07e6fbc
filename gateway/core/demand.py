"""How much of its share one station can use: idle, EV-limited or hungry (pure).

Rules, with hysteresis so shares do not flap:
- *Idle* (no EV charging: no transaction, connectors Available/Finishing): the station's
  ceiling is ``idle_share_w``, enough for an arriving EV to start at once; the rest of
  its share goes to stations that can use it. Charging again lifts the ceiling.
- *EV-limited*: if over a whole ``window_s`` the station never drew more than
  ``share - 2 x headroom_w``, its ceiling drops to ``peak + headroom_w`` (never below
  its minimum): the EV is nearly full, or takes less than the station could give.
- *Hungry again*: a reading at or above ``ceiling - headroom_w / 2`` lifts the ceiling
  at once, and the arbiter gives room back as cuts elsewhere free it.
The gap between the cut (``2 x headroom``) and the lift (``headroom / 2``) is the
hysteresis. Nothing is decided on a station that has not reported (unknown: full share).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DemandSettings:
    enabled: bool = True
    idle_share_w: float | None = None  # None: the station's own minimum power
    headroom_w: float = 1000.0
    window_s: float = 120.0


@dataclass(slots=True)
class Demand:
    """One station's demand state; ``ceiling_w`` bounds its allocation (None: no bound)."""

    charging: bool | None = None  # None: not told yet, so not idle
    cap_w: float | None = None  # EV-limited ceiling
    window_start_s: float = 0.0
    window_peak_w: float = 0.0

    def ceiling_w(self, settings: DemandSettings, min_w: float) -> float | None:
        if not settings.enabled:
            return None
        if self.charging is False:
            return min_w if settings.idle_share_w is None else settings.idle_share_w
        return self.cap_w

    def restart_window(self, now_s: float) -> None:
        """The share just moved: judge the EV on what it draws from now on."""
        self.window_start_s, self.window_peak_w = now_s, 0.0

    def set_charging(self, charging: bool, now_s: float) -> bool:
        """Returns whether the ceiling may have moved."""
        if charging is self.charging:
            return False
        self.charging = charging
        self.cap_w = None
        self.restart_window(now_s)
        return True

    def sample(
        self, power_w: float, share_w: float, min_w: float, settings: DemandSettings, now_s: float
    ) -> bool:
        """Take one reading; returns whether the ceiling moved."""
        if not settings.enabled or self.charging is False:
            return False
        headroom = settings.headroom_w
        if self.cap_w is not None and power_w >= self.cap_w - headroom / 2:
            self.cap_w = None
            self.restart_window(now_s)
            return True
        self.window_peak_w = max(self.window_peak_w, power_w)
        if now_s - self.window_start_s < settings.window_s:
            return False
        peak = self.window_peak_w
        self.restart_window(now_s)
        ceiling = max(min_w, peak + headroom)
        limit = share_w if self.cap_w is None else min(share_w, self.cap_w)
        if peak + 2 * headroom <= limit and ceiling < limit:
            self.cap_w = ceiling
            return True
        return False
