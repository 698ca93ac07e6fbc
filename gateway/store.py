"""The durable store: the limit in force and its mode, and the DSO command audit log.

SQLite in WAL mode with synchronous=FULL, so a setpoint written here survives a power
cut before the master is told it was accepted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.durable import DurableLimit
from gateway.errors import StoreError
from gateway.model import Mode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL,
    setpoint_w REAL,
    changed_at_s REAL NOT NULL,
    hold_started_at_s REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_s REAL NOT NULL,
    peer TEXT NOT NULL,
    kind TEXT NOT NULL,
    value_w REAL,
    time_tag_s REAL,
    accepted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class AuditRow:
    received_at_s: float
    peer: str
    kind: str
    value_w: float | None
    time_tag_s: float | None
    accepted: bool
    reason: str
    detail: str


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            check = self._db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"store {self.path} failed its integrity check: {check}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def load_limit(self) -> DurableLimit | None:
        try:
            row = self._db.execute(
                "SELECT mode, setpoint_w, changed_at_s, hold_started_at_s FROM limit_state WHERE id = 1"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None
        if row is None:
            return None
        try:
            mode = Mode(row[0])
        except ValueError:
            raise StoreError(f"store {self.path} holds an unknown mode {row[0]!r}") from None
        return DurableLimit(mode, row[1], row[2], row[3])

    def save_limit(self, limit: DurableLimit) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO limit_state VALUES (1, ?, ?, ?, ?)",
                (limit.mode.value, limit.setpoint_w, limit.changed_at_s, limit.hold_started_at_s),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write store {self.path}: {exc}") from None

    def append_audit(self, row: AuditRow) -> None:
        try:
            self._db.execute(
                "INSERT INTO audit (received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.received_at_s,
                    row.peer,
                    row.kind,
                    row.value_w,
                    row.time_tag_s,
                    int(row.accepted),
                    row.reason,
                    row.detail,
                ),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot append to the audit log in {self.path}: {exc}") from None

    def audit(self) -> list[AuditRow]:
        rows = self._db.execute(
            "SELECT received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail FROM audit ORDER BY id"
        ).fetchall()
        return [AuditRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]
