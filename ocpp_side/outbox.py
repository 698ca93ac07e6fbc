"""The durable outbox: station messages that must reach the CSMS, kept across an outage.

SQLite, one row per message in arrival order (the frame as it is to go upstream: the
station's own text when relayed verbatim, the 2.0.1 CALL when translated), deleted only
once the CSMS has answered it: delivery is at least once, and in order. 1.6 transaction
ids the gateway gave a station during an outage are mapped onto the ones the CSMS
assigns when the StartTransaction is replayed.

The same file keeps, per station, what a restart must not lose: the translation state
(``ocpp_side/translation``), and the upstream subprotocol and last BootNotification, so
the outbox can be replayed while the station is away (``outbox_drain.py``).

**Bounds.** Per station at most ``MAX_ROWS_PER_STATION`` rows, none older than
``MAX_AGE_S``. A station's backlog reaching ``WARN_FRACTION`` of either bound is logged
as a WARNING once (before anything is lost); when a bound is hit, the oldest rows go,
with a WARNING naming how many and why. ``depth`` is the number of rows kept.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Constants, not configuration (issue 11): 10,000 rows hold a week of one station's
# transactions with a MeterValues every 60 s and its status changes; a CSMS away for
# longer than a week has lost interest in the detail, and the file must not grow forever.
MAX_ROWS_PER_STATION = 10_000
MAX_AGE_S = 7 * 24 * 3600.0
WARN_FRACTION = 0.8  # a WARNING once a station's backlog reaches this share of a bound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id TEXT NOT NULL,
    action TEXT NOT NULL,
    raw TEXT NOT NULL,
    local_tx INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_station ON outbox (station_id, seq);
CREATE TABLE IF NOT EXISTS tx_map (
    station_id TEXT NOT NULL,
    local_tx INTEGER NOT NULL,
    csms_tx INTEGER NOT NULL,
    PRIMARY KEY (station_id, local_tx)
);
CREATE TABLE IF NOT EXISTS translation_state (
    station_id TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS station_link (
    station_id TEXT PRIMARY KEY,
    subprotocol TEXT NOT NULL,
    boot TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    action: str
    raw: str
    local_tx: int | None


@dataclass(frozen=True, slots=True)
class StationLink:
    """How a station's upstream link speaks, and its last BootNotification frame (as sent upstream)."""

    subprotocol: str
    boot: str | None


class Outbox:
    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "at_s" not in columns:  # an outbox file from before the age bound
            self._db.execute("ALTER TABLE outbox ADD COLUMN at_s REAL")
        self._rows: dict[str, int] = dict(
            self._db.execute("SELECT station_id, COUNT(*) FROM outbox GROUP BY station_id").fetchall()
        )
        self._warned: set[tuple[str, str]] = set()  # (station, "size" | "age") already warned of
        self._depth = sum(self._rows.values())

    def close(self) -> None:
        self._db.close()

    @property
    def depth(self) -> int:
        """Rows kept, all stations."""
        return self._depth

    def append(
        self, station_id: str, action: str, raw: str, local_tx: int | None = None, now_s: float | None = None
    ) -> int:
        """Keep one frame for the CSMS; returns how many old rows the bounds dropped to make room."""
        dropped = 0 if now_s is None else self.expire(station_id, now_s)
        rows = self._rows.get(station_id, 0)
        if rows >= MAX_ROWS_PER_STATION:
            excess = rows - MAX_ROWS_PER_STATION + 1
            log.warning(
                "%s: outbox full (%d rows): dropping the %d oldest, the CSMS will never see them",
                station_id,
                rows,
                excess,
            )
            dropped += self._drop_oldest(station_id, excess)
        self._db.execute(
            "INSERT INTO outbox (station_id, action, raw, local_tx, at_s) VALUES (?, ?, ?, ?, ?)",
            (station_id, action, raw, local_tx, now_s),
        )
        rows = self._rows[station_id] = self._rows.get(station_id, 0) + 1
        self._depth += 1
        if rows >= WARN_FRACTION * MAX_ROWS_PER_STATION and (station_id, "size") not in self._warned:
            self._warned.add((station_id, "size"))
            log.warning(
                "%s: outbox holds %d rows for the CSMS; at %d the oldest are dropped",
                station_id,
                rows,
                MAX_ROWS_PER_STATION,
            )
        return dropped

    def expire(self, station_id: str, now_s: float) -> int:
        """Drop the station's rows older than ``MAX_AGE_S`` (warning first, at ``WARN_FRACTION``)."""
        row = self._db.execute(
            "SELECT at_s FROM outbox WHERE station_id = ? ORDER BY seq LIMIT 1", (station_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return 0
        age_s = now_s - float(row[0])
        if age_s >= WARN_FRACTION * MAX_AGE_S and (station_id, "age") not in self._warned:
            self._warned.add((station_id, "age"))
            log.warning(
                "%s: outbox rows for the CSMS are %.0f h old; at %.0f h they are dropped",
                station_id,
                age_s / 3600,
                MAX_AGE_S / 3600,
            )
        if age_s < MAX_AGE_S:
            return 0
        cursor = self._db.execute(
            "DELETE FROM outbox WHERE station_id = ? AND at_s < ?", (station_id, now_s - MAX_AGE_S)
        )
        dropped = max(cursor.rowcount, 0)
        if dropped:
            log.warning(
                "%s: dropped %d outbox rows older than %.0f h: the CSMS will never see them",
                station_id,
                dropped,
                MAX_AGE_S / 3600,
            )
            self._counted(station_id, -dropped)
        return dropped

    def expire_all(self, now_s: float) -> int:
        return sum(self.expire(station_id, now_s) for station_id in list(self._rows))

    def _drop_oldest(self, station_id: str, count: int) -> int:
        cursor = self._db.execute(
            "DELETE FROM outbox WHERE seq IN"
            " (SELECT seq FROM outbox WHERE station_id = ? ORDER BY seq LIMIT ?)",
            (station_id, count),
        )
        dropped = max(cursor.rowcount, 0)
        self._counted(station_id, -dropped)
        return dropped

    def _counted(self, station_id: str, change: int) -> None:
        self._depth += change
        rows = self._rows.get(station_id, 0) + change
        if rows > 0:
            self._rows[station_id] = rows
            return
        self._rows.pop(station_id, None)
        self._warned.discard((station_id, "size"))  # drained: warn again next time
        self._warned.discard((station_id, "age"))

    def pending(self, station_id: str, limit: int = 500) -> list[Pending]:
        rows = self._db.execute(
            "SELECT seq, action, raw, local_tx FROM outbox WHERE station_id = ? ORDER BY seq LIMIT ?",
            (station_id, limit),
        ).fetchall()
        return [Pending(*row) for row in rows]

    def has_pending(self, station_id: str) -> bool:
        return station_id in self._rows

    def stations_pending(self) -> list[str]:
        return sorted(self._rows)

    def delete(self, station_id: str, seq: int) -> None:
        cursor = self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        if cursor.rowcount > 0:
            self._counted(station_id, -1)

    def map_tx(self, station_id: str, local_tx: int, csms_tx: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tx_map (station_id, local_tx, csms_tx) VALUES (?, ?, ?)",
            (station_id, local_tx, csms_tx),
        )

    def tx_map(self, station_id: str) -> dict[int, int]:
        rows = self._db.execute("SELECT local_tx, csms_tx FROM tx_map WHERE station_id = ?", (station_id,))
        return dict(rows.fetchall())

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # -- per station: translation state, upstream link ---------------------------------

    def load_state(self, station_id: str) -> str | None:
        row = self._db.execute(
            "SELECT state FROM translation_state WHERE station_id = ?", (station_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def save_state(self, station_id: str, state: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO translation_state (station_id, state) VALUES (?, ?)", (station_id, state)
        )

    def save_link(self, station_id: str, subprotocol: str, boot: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO station_link (station_id, subprotocol, boot) VALUES (?, ?, ?)",
            (station_id, subprotocol, boot),
        )

    def link(self, station_id: str) -> StationLink | None:
        row = self._db.execute(
            "SELECT subprotocol, boot FROM station_link WHERE station_id = ?", (station_id,)
        ).fetchone()
        return None if row is None else StationLink(str(row[0]), row[1])
