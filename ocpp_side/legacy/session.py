"""A Series 4 unit's session: a 1.6 ``StationSession`` behind the dialect (pure).

Every frame from the unit goes through its ``UnitDialect`` before the session (and so
the relay, the core, the translation) sees it; every frame to the unit is shown to the
dialect on its way out. Each leniency a frame took is reported to ``on_leniency`` (the
listener logs it once per station and counts it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ocpp_side import v16
from ocpp_side.legacy.dialect import Leniency, UnitDialect
from ocpp_side.session import SessionContext, StationSession

OnLeniency = Callable[[str, Leniency], None]  # (station id, leniency)


class LegacySession(StationSession):
    """See the module docstring."""

    __slots__ = ("dialect", "on_leniency")

    def __init__(
        self,
        ctx: SessionContext,
        station_id: str,
        now: float,
        dialect: UnitDialect,
        on_leniency: OnLeniency,
    ) -> None:
        super().__init__(ctx, v16, station_id, now)
        self.dialect = dialect
        self.on_leniency = on_leniency

    def receive_frame(self, data: str | bytes, now: float) -> None:
        if isinstance(data, str):
            normalised = self.dialect.received(data)
            for leniency in sorted(normalised.leniencies):
                self.on_leniency(self.station_id, leniency)
            data = normalised.data
        super().receive_frame(data, now)

    def frames_to_send(self, now: float) -> Sequence[bytes]:
        frames = super().frames_to_send(now)
        for frame in frames:
            self.dialect.sent(frame)
        return frames
