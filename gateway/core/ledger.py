"""What one station is bound by: its commitment ledger (pure).

The gateway cannot see an EV's current; it can know which charging profiles a station
holds or may hold. Each allocation sent to a station is one ``Profiles`` entry: a live
cap valid until ``live_until_s`` (top stack level) and a fallback cap that never expires
(the level below). Rules (DESIGN.md, "The cap invariant"):

- Sent, not yet Accepted: the entry is *pending* and counts as possibly held.
- Accepted: the entry becomes *held*; every older pending entry is superseded (one
  websocket, calls answered in order, so the station applied them before this one).
- Refused or unanswered: the entry stays pending. A refused cut therefore leaves the
  old value in force (the max of old and new is the old), and a raise that timed out
  may yet have been applied, so it keeps counting until a later entry is Accepted.
- While a held live cap is valid the station is bound by the live candidates (the
  higher stack level prevails); otherwise any candidate, live or fallback, may bind it.

``commitment_w`` is the highest power the station may draw at an instant under those
rules. ``reserve_w`` adds what it may draw *soon* without the gateway doing anything:
the fallback cap too, when the live cap's validity is not assured (the station is
offline, or its refresh is overdue). The arbiter plans with ``reserve_w``, so a live cap
lapsing onto a higher fallback cap can never push the site over its limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Profiles:
    """One allocation as sent to a station."""

    seq: int
    live_w: float
    live_until_s: float
    fallback_w: float


@dataclass(slots=True)
class StationLedger:
    held: Profiles | None = None
    pending: list[Profiles] = field(default_factory=list)  # ascending seq
    answered_seq: int = -1  # the newest seq the station gave any answer to

    # -- facts -------------------------------------------------------------------

    def sent(self, profiles: Profiles, now_s: float) -> None:
        if len(self.pending) > 2:  # the common case (0-2 pending) costs nothing
            self._prune(now_s)
        self.pending.append(profiles)

    def accepted(self, seq: int) -> bool:
        """The station holds the entry ``seq``; False if it is unknown or already superseded."""
        self.answered_seq = max(self.answered_seq, seq)
        for index, entry in enumerate(self.pending):
            if entry.seq == seq:
                self.held = entry
                del self.pending[: index + 1]
                return True
        return False

    def answered(self, seq: int) -> None:
        """A refusal or a timeout: nothing changes in what the station may hold."""
        self.answered_seq = max(self.answered_seq, seq)

    # -- reading -----------------------------------------------------------------

    @property
    def last_sent(self) -> Profiles | None:
        return self.pending[-1] if self.pending else self.held

    @property
    def awaiting(self) -> bool:
        """Something sent has no answer yet."""
        return bool(self.pending) and self.pending[-1].seq > self.answered_seq

    def live_assured(self, now_s: float, margin_s: float) -> bool:
        held = self.held
        return held is not None and held.live_until_s - margin_s > now_s

    def commitment_w(self, now_s: float) -> float:
        return self.bound_w(now_s, self.live_assured(now_s, 0.0))

    def reserve_w(self, now_s: float, online: bool, margin_s: float) -> float:
        return self.bound_w(now_s, online and self.live_assured(now_s, margin_s))

    def fallback_commitment_w(self) -> float:
        best = 0.0 if self.held is None else self.held.fallback_w
        for entry in self.pending:
            best = max(best, entry.fallback_w)
        return best

    def next_change_s(self, now_s: float, margin_s: float) -> float | None:
        """The next instant at which ``reserve_w`` or ``commitment_w`` may change by itself."""
        times = [e.live_until_s for e in self.pending if e.live_until_s > now_s]
        if self.held is not None:
            for t in (self.held.live_until_s - margin_s, self.held.live_until_s):
                if t > now_s:
                    times.append(t)
        return min(times) if times else None

    # -- across a restart --------------------------------------------------------

    def entries(self) -> list[list[float]]:
        """What must survive a restart: every entry as ``[seq, live_w, live_until_s, fallback_w,
        held]`` (held 1 or 0), JSON-safe. Restored with ``StationLedger.restored``."""
        rows = [] if self.held is None else [[self.held.seq, *_values(self.held), 1]]
        rows.extend([e.seq, *_values(e), 0] for e in self.pending)
        return rows

    @classmethod
    def restored(cls, rows: list[list[float]]) -> StationLedger:
        """The ledger ``entries`` described, plus any journaled entries (``held`` 0) appended
        to them: an entry twice counts once, as held if either says so. Every entry counts
        as answered (the station's answers to the gateway that sent them are lost with it)."""
        ledger = cls()
        seen: set[int] = set()
        for seq, live_w, live_until_s, fallback_w, held in sorted(rows, key=lambda r: (r[0], -r[4])):
            entry = Profiles(int(seq), float(live_w), float(live_until_s), float(fallback_w))
            if entry.seq in seen:
                continue  # the held copy came first
            seen.add(entry.seq)
            if held:
                ledger.held = entry
            else:
                ledger.pending.append(entry)
            ledger.answered_seq = max(ledger.answered_seq, entry.seq)
        if ledger.held is not None:  # only entries newer than the held one may still be held
            ledger.pending = [e for e in ledger.pending if e.seq > ledger.held.seq]
        return ledger

    # -- internals ---------------------------------------------------------------

    def bound_w(self, now_s: float, live_certain: bool) -> float:
        """The most the station may draw at ``now_s``: the live candidates only if a held live
        cap is certain to bind (``live_certain``), else any candidate."""
        best = 0.0
        entries = self.pending if self.held is None else [self.held, *self.pending]
        for entry in entries:
            if entry.live_until_s > now_s:
                best = max(best, entry.live_w)
            if not live_certain:
                best = max(best, entry.fallback_w)
        return best

    def _prune(self, now_s: float) -> None:
        """Keep the pending list short when a station never answers (refreshes pile up).

        Lapsed live caps no longer bind; of the lapsed entries only the newest is kept,
        carrying the highest of their fallback caps, so nothing counted is lost.
        """
        lapsed = [e for e in self.pending if e.live_until_s <= now_s]
        if len(lapsed) < 2:
            return
        merged = Profiles(
            lapsed[-1].seq, lapsed[-1].live_w, lapsed[-1].live_until_s, max(e.fallback_w for e in lapsed)
        )
        keep = [e for e in self.pending if e.live_until_s > now_s]
        self.pending = sorted([merged, *keep], key=lambda e: e.seq)


def _values(entry: Profiles) -> tuple[float, float, float]:
    return entry.live_w, entry.live_until_s, entry.fallback_w
