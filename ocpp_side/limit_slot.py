"""The DSO limit on one station: the slot that holds the core's latest allocation (pure).

Rules, in one place:

- **Latest only (coalescing).** The slot holds one ``ApplyStationLimit``: a newer one
  replaces it, so a busy station never receives a backlog of stale allocations.
- **Both levels.** An allocation is installed as two profiles, live first, then the
  fallback one when its value differs from what the station holds. Each level goes
  when the one before it has been Accepted.
- **Accepted whole.** Once the station holds both levels of an allocation, that
  allocation is reported Accepted, even when a newer one has replaced it meanwhile (the
  core's ledger wants to know what the station is bound by). A report equal to the
  last one is not repeated (a refresh accepted again changes nothing in the core).
- **Refused.** A refusal, CALLERROR, invalid answer or timeout is reported; the same
  allocation is tried again after ``retry_delay_s`` (1, 2, 4 ... 60 x base), unless a
  newer one arrives first.
- **Re-apply.** After a (re)connect or a boot, and after a CSMS clears profiles, nothing
  on the station is assumed: both levels go again (``reapply``).

``ProfileBook`` builds the SetChargingProfile payloads: validated and encoded once per
distinct content and second, since in a fan-out most stations share the same one.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from gateway.core.decisions import ApplyStationLimit
from gateway.core.model import ProfileOutcome
from ocpp_side import schemas
from ocpp_side.profiles import ProfileLevel, ProfileSettings, StationCaps, retry_delay_s, station_max
from ocpp_side.versions import VersionRules


class LimitSlot:
    __slots__ = (
        "dirty",
        "fallback_installed_w",
        "last_report",
        "limit",
        "live_done_seq",
        "retry_at",
        "retry_attempt",
        "retry_seq",
    )

    def __init__(self) -> None:
        self.limit: ApplyStationLimit | None = None  # the latest allocation from the core
        self.dirty = False  # something of it may still have to go out
        self.live_done_seq = -1  # seq whose live profile the station accepted
        self.fallback_installed_w: float | None = None  # the fallback value the station holds
        self.last_report: tuple[int, ProfileOutcome] | None = None
        self.retry_attempt = 0
        self.retry_at: float | None = None  # when to try the refused allocation again
        self.retry_seq = -1

    def set(self, decision: ApplyStationLimit) -> None:
        """The core's latest allocation replaces whatever was waiting (coalescing)."""
        self.limit = decision
        self.dirty = True
        self.retry_attempt = 0
        self.retry_at = None

    def reapply(self, new_session: bool = False) -> None:
        """Install both levels again: nothing on the station is assumed. After a (re)connect
        or a boot (``new_session``) the reports start afresh too."""
        self.live_done_seq = -1
        self.fallback_installed_w = None
        if new_session:
            self.last_report = None
        if self.limit is not None:
            self.dirty = True

    def next(self) -> tuple[ApplyStationLimit, ProfileLevel, float] | None:
        """The level to send next and its value; None (and clean) when the station holds both."""
        limit = self.limit
        assert limit is not None
        if limit.seq != self.live_done_seq:
            return limit, ProfileLevel.LIVE, limit.limit_w
        if limit.fallback_w != self.fallback_installed_w:
            return limit, ProfileLevel.FALLBACK, limit.fallback_w
        self.dirty = False
        return None

    def accepted(self, limit: ApplyStationLimit, level: ProfileLevel) -> bool:
        """The station Accepted ``level`` of ``limit``; True when it now holds ``limit`` whole."""
        if level is ProfileLevel.LIVE:
            self.live_done_seq = limit.seq
        else:
            self.fallback_installed_w = limit.fallback_w
        if self.live_done_seq != limit.seq or self.fallback_installed_w != limit.fallback_w:
            return False  # the other level goes next
        if self.limit is limit:
            self.dirty = False
            self.retry_attempt = 0
        return True

    def refused(self, limit: ApplyStationLimit, now: float, retry_base_s: float) -> None:
        """The station did not take a level of ``limit``: try again later, if still the latest."""
        if self.limit is limit:
            self.dirty = False
            self.retry_at = now + retry_delay_s(self.retry_attempt, retry_base_s)
            self.retry_seq = limit.seq
            self.retry_attempt += 1

    def retry_due(self, now: float) -> None:
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            if self.limit is not None and self.limit.seq == self.retry_seq:
                self.dirty = True

    def report(self, seq: int, outcome: ProfileOutcome) -> bool:
        """Whether to tell the core ``outcome`` for ``seq``: not when it was the last thing told."""
        if self.last_report == (seq, outcome):
            return False
        self.last_report = (seq, outcome)
        return True


class ProfileBook:
    """SetChargingProfile payloads, built, validated and encoded once per distinct content
    and second: in a fan-out most stations share the same one."""

    def __init__(self, settings: ProfileSettings) -> None:
        self.settings = settings
        self._cache: dict[tuple[object, ...], tuple[dict[str, Any], bytes]] = {}
        self._cache_s = -1

    def payload(
        self,
        rules: VersionRules,
        level: ProfileLevel,
        value_w: float,
        caps: StationCaps,
        valid_until_s: float | None,
        now_s: float,
    ) -> tuple[dict[str, Any], bytes]:
        """(payload, its JSON) installing ``value_w`` at ``level``, valid (live) until ``valid_until_s``."""
        second = math.floor(now_s)
        if second != self._cache_s:
            self._cache.clear()
            self._cache_s = second
        until = (
            math.floor(valid_until_s) if level is ProfileLevel.LIVE and valid_until_s is not None else None
        )
        key = (rules.VERSION, level, value_w, caps, until)
        cached = self._cache.get(key)
        if cached is None:
            payload = rules.set_charging_profile(
                station_max(level, value_w, caps, self.settings, second, until)
            )
            schemas.validate(rules.VERSION, "SetChargingProfile", payload, request=True)
            cached = self._cache[key] = (payload, orjson.dumps(payload))
        return cached
