"""Is an EV charging at this station? From its StatusNotifications and transactions (pure).

The core gives an idle station only its idle share; this module says when a station is
idle. A station is *charging* while it has an open transaction, or any connector is in a
state where an EV is there or about to take power (1.6: Preparing, Charging,
SuspendedEV, SuspendedEVSE; 2.0.1: Occupied). It is *idle* when it has no open
transaction and every connector it reported is Available, Finishing, Reserved,
Unavailable or Faulted. Until it has said anything, it is neither (``None``): a station
that reconnects mid-session keeps its full share until it tells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_IN_USE = frozenset({"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Occupied"})


@dataclass(slots=True)
class Activity:
    statuses: dict[int, str] = field(default_factory=dict)  # connector (or EVSE) -> status
    transactions: set[str] = field(default_factory=set)
    reported: bool | None = None  # what the core was last told

    def status(self, connector: int, status: str) -> bool | None:
        """A StatusNotification; returns the new charging state if it changed, else None."""
        if connector == 0:  # the station as a whole (1.6): says nothing about an EV
            return None
        self.statuses[connector] = status
        return self._changed()

    def transaction(self, transaction_id: str, running: bool) -> bool | None:
        if running:
            self.transactions.add(transaction_id)
        else:
            self.transactions.discard(transaction_id)
        return self._changed()

    def charging(self) -> bool | None:
        if self.transactions or any(s in _IN_USE for s in self.statuses.values()):
            return True
        if self.statuses or self.reported is not None:  # a transaction ended: it said enough
            return False
        return None

    def _changed(self) -> bool | None:
        now = self.charging()
        if now is None or now == self.reported:
            return None
        self.reported = now
        return now
