"""The durable outbox: station messages that must reach the CSMS, kept across an outage.

SQLite, one row per message in arrival order (the raw frame as the station sent it),
deleted only once the CSMS has answered it: delivery is at least once, and in order.
1.6 transaction ids the gateway gave a station during an outage are mapped onto the
ones the CSMS assigns when the StartTransaction is replayed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

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
"""


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    action: str
    raw: str
    local_tx: int | None


class Outbox:
    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def append(self, station_id: str, action: str, raw: str, local_tx: int | None = None) -> None:
        self._db.execute(
            "INSERT INTO outbox (station_id, action, raw, local_tx) VALUES (?, ?, ?, ?)",
            (station_id, action, raw, local_tx),
        )

    def pending(self, station_id: str, limit: int = 500) -> list[Pending]:
        rows = self._db.execute(
            "SELECT seq, action, raw, local_tx FROM outbox WHERE station_id = ? ORDER BY seq LIMIT ?",
            (station_id, limit),
        ).fetchall()
        return [Pending(*row) for row in rows]

    def has_pending(self, station_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM outbox WHERE station_id = ? LIMIT 1", (station_id,)).fetchone()
        return row is not None

    def delete(self, seq: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

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
