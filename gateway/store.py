"""The durable store: the limit in force and its mode, and the DSO command audit log.

SQLite in WAL mode with synchronous=FULL, so a setpoint written here survives a power
cut before the master is told it was accepted. The store never confirms what it cannot
keep:

- **One gateway per store.** An exclusive ``flock`` on ``<store>.lock`` is taken before
  anything touches the database and held until ``close()``. A second gateway gets a
  ``StoreError`` naming the holder's pid and writes nothing.
- **Every write is checked against the files on disk.** Before and after each write
  the main file, its ``-wal`` and ``-shm`` must still be the files that were opened
  (same device and inode), the main file's header must be unchanged, and the WAL's
  header and last frame must match SQLite's own index of it (salts and checksums, see
  https://www.sqlite.org/walformat.html). A file that was deleted, replaced or
  overwritten is a ``StoreError`` before anything is confirmed, and the store stays
  failed: every later write is refused until the gateway restarts on a sound store.
- **Nothing stays in the WAL.** Each write is followed by a passive checkpoint, so the
  main file holds every confirmed limit: losing or garbling the WAL cannot take back a
  confirmation, and the checkpoint SQLite runs when the connection closes has nothing
  left to copy from a WAL that someone else wrote into.

These checks cost a few ``stat`` and ``pread`` calls per write (tens of microseconds).
``PRAGMA quick_check`` is no substitute: it reads through the connection's own page
cache, so it does not see what another process did to the file, and its cost grows
with the audit log.

**Schema version.** ``PRAGMA user_version`` says which schema a store has (0: the 0.1.0
release). Opening an older store upgrades it in one transaction, step by step through
``_MIGRATIONS``; a store from a newer ocpp809 is refused untouched.

**The audit log is a hash chain.** Every row (DSO commands, refusals, releases, limit
entries such as hold and fallback, closed compliance records) carries the SHA-256 of the
row before it (``prev_hash``) and its own (``hash``, over its fields and ``prev_hash``);
``audit_head`` holds the last row's id and hash, written in the same transaction. An edited
row no longer matches its hash, a deleted one breaks the next row's link, and rows deleted
at the end no longer reach the head (``verify_chain``). It is not a signature: whoever can
rewrite the whole file can recompute the chain. The open compliance record
(``compliance_open``, at most one) is not chained: it changes until it closes, and is then
appended to the chain.

**Reading a running gateway's store.** ``AuditReader`` opens the file read-only (a
``mode=ro`` URI, without the gateway's lock). SQLite readers only take a read mark in the
``-shm``, outside the header copies ``_verify`` compares, so they never make the gateway's
checks fail. A store no gateway has open (no ``-wal`` or ``-shm`` beside it) is read
``immutable``, so reading it creates no files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from gateway.core.compliance import ComplianceRecord, record_from_dict
from gateway.core.durable import DurableLimit
from gateway.core.model import Mode
from gateway.errors import StoreError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# PRAGMA application_id of an ocpp809 store ("o809"): a foreign SQLite file is refused,
# never quietly given our tables.
APPLICATION_ID = 0x6F383039

# The schema of the 0.1.0 release (``user_version`` 0). A fresh store is created as this and
# then migrated like any old one, so a fresh store and an upgraded one cannot differ.
_BASE_SCHEMA = """
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
_OUR_TABLES = {
    "limit_state",
    "audit",
    "sqlite_sequence",
    "audit_head",
    "compliance_open",
    "commitments",
    "commitment_journal",
}


def _migrate_to_1(db: sqlite3.Connection) -> str:
    """0.1.0 -> 1: when a master was last seen; the audit log chained; the open compliance record."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(limit_state)")}
    if "master_seen_at_s" not in columns:  # development stores between 0.1.0 and 1 have it
        db.execute("ALTER TABLE limit_state ADD COLUMN master_seen_at_s REAL")
    db.execute("ALTER TABLE audit ADD COLUMN body TEXT")  # JSON of an entry or a record; NULL: a command
    db.execute("ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''")
    db.execute(
        "CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), last_id INTEGER NOT NULL,"
        " hash TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE compliance_open (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL,"
        " updated_at_s REAL NOT NULL)"
    )
    prev, last_id, count = GENESIS_HASH, None, 0
    for row in db.execute(f"SELECT {_ROW_COLUMNS} FROM audit ORDER BY id").fetchall():
        digest = entry_hash(prev, row[0], *row[1:10])
        db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row[0]))
        prev, last_id, count = digest, row[0], count + 1
    if last_id is not None:
        db.execute("INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?, ?)", (last_id, prev))
    return f"{count} audit row(s) chained"


def _migrate_to_2(db: sqlite3.Connection) -> str:
    """1 -> 2: each station's commitment ledger, so a restart keeps what stations may still hold."""
    db.execute(
        "CREATE TABLE commitments (station_id TEXT PRIMARY KEY, version TEXT NOT NULL,"
        " entries TEXT NOT NULL, updated_at_s REAL NOT NULL)"
    )
    return "station commitments kept from now on"


def _migrate_to_3(db: sqlite3.Connection) -> str:
    """2 -> 3: profiles journaled before they go out, folded into ``commitments`` soon after."""
    db.execute(
        "CREATE TABLE commitment_journal (id INTEGER PRIMARY KEY, at_s REAL NOT NULL, entries TEXT NOT NULL)"
    )
    return "profiles journaled before they go out"


# Each step takes the store from the version before it to its own, inside one transaction.
_MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], str]], ...] = (
    (1, _migrate_to_1),
    (2, _migrate_to_2),
    (3, _migrate_to_3),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


def migrate(db: sqlite3.Connection, version: int, path: str, announce: bool = True) -> int:
    """Bring the store from ``version`` to ``SCHEMA_VERSION``; all or nothing. Returns the version.

    ``announce``: log the upgrade (a WARNING: it is worth knowing; not for a new store).
    """
    steps = [(to, step) for to, step in _MIGRATIONS if to > version]
    if not steps:
        return version
    db.execute("BEGIN IMMEDIATE")
    try:
        done = [f"{to}: {step(db)}" for to, step in steps]
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if announce:
        log.warning(
            "store %s upgraded from schema version %d to %d (%s)",
            path,
            version,
            SCHEMA_VERSION,
            "; ".join(done),
        )
    return SCHEMA_VERSION


# -- the chain -----------------------------------------------------------------------------

GENESIS_HASH = "0" * 64  # what the first row links to
_ROW_COLUMNS = "id, received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail, body"
_ENTRY_COLUMNS = f"{_ROW_COLUMNS}, prev_hash, hash"
# Rows that are not DSO commands (or refusals or releases): their body says what they are.
COMPLIANCE_KIND = "compliance"
ENTRY_PEER = "ocpp809"  # the peer of the gateway's own entries


def _real(value: float | None) -> float | None:
    """A REAL as SQLite gives it back: NaN is NULL, -0.0 is 0.0, an int a float."""
    return None if value is None or math.isnan(value) else float(value) + 0.0


def entry_hash(
    prev_hash: str,
    entry_id: int,
    received_at_s: float,
    peer: str,
    kind: str,
    value_w: float | None,
    time_tag_s: float | None,
    accepted: bool | int,
    reason: str,
    detail: str,
    body: str | None,
) -> str:
    """SHA-256 (hex) of one row's fields and the hash of the row before it.

    The fields are hashed as a compact JSON array (numbers as Python's repr, text as
    UTF-8), normalised the way SQLite stores them, so a row hashes the same before it is
    written and after it is read back.
    """
    canonical = json.dumps(
        [
            entry_id,
            _real(received_at_s),
            peer,
            kind,
            _real(value_w),
            _real(time_tag_s),
            int(accepted),
            reason,
            detail,
            body,
            prev_hash,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_INDEX_VERSION = 3007000
_WAL_INDEX_HEADER = struct.Struct("=IIIBBH8I")  # WalIndexHdr, native byte order (walformat.html 2.1)
# Bytes of the main file's 100-byte header that no write of ours changes: everything but the
# change counter, page count, freelist (24..40) and the version-valid-for/library version (92..100).
_STABLE_HEADER = (slice(0, 24), slice(40, 92))


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


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the chained audit log. ``body`` is None for a DSO command (or a refusal,
    or a release); a limit entry or a compliance record keeps its JSON there."""

    id: int
    row: AuditRow
    body: str | None
    prev_hash: str
    hash: str

    @property
    def is_command(self) -> bool:
        return self.body is None and self.row.kind != "station_release"

    def record(self) -> ComplianceRecord | None:
        """The compliance record this row holds, or None (or StoreError if it is garbled)."""
        if self.row.kind != COMPLIANCE_KIND or self.body is None:
            return None
        return _parse_record(self.body, f"audit row #{self.id}")


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """A DSO command (accepted or refused) and, for an accepted one, its compliance record:
    closed (final) or still open (provisional), or None if it has none (yet)."""

    entry: AuditEntry
    record: ComplianceRecord | None


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify_chain`` found: ``first_bad_id`` and ``problem`` are None when intact."""

    entries: int
    head_id: int | None
    head_hash: str | None
    first_bad_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _parse_record(body: str, where: str) -> ComplianceRecord:
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        return record_from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{where} holds a compliance record that cannot be read: {exc}") from None


def _entry(r: tuple[object, ...]) -> AuditEntry:
    row = AuditRow(r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8])  # type: ignore[arg-type]
    return AuditEntry(int(r[0]), row, r[9], r[10], r[11])  # type: ignore[call-overload, arg-type]


def _select_entries(
    db: sqlite3.Connection, since_s: float | None = None, until_s: float | None = None
) -> list[AuditEntry]:
    where, params = [], []
    if since_s is not None:
        where.append("received_at_s >= ?")
        params.append(since_s)
    if until_s is not None:
        where.append("received_at_s < ?")
        params.append(until_s)
    sql = f"SELECT {_ENTRY_COLUMNS} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_entry(r) for r in db.execute(sql + " ORDER BY id", params)]


def _select_entry(db: sqlite3.Connection, entry_id: int) -> AuditEntry | None:
    r = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM audit WHERE id = ?", (entry_id,)).fetchone()
    return None if r is None else _entry(r)


def _select_open_record(db: sqlite3.Connection) -> ComplianceRecord | None:
    r = db.execute("SELECT body FROM compliance_open WHERE id = 1").fetchone()
    return None if r is None else _parse_record(r[0], "the open compliance record")


def _records_of(db: sqlite3.Connection, anchor_ids: list[int]) -> dict[int, ComplianceRecord]:
    """The compliance records (closed, and the open one) of the rows ``anchor_ids``."""
    if not anchor_ids:
        return {}
    marks = ",".join("?" * len(anchor_ids))
    found: dict[int, ComplianceRecord] = {}
    for entry_id, body in db.execute(
        f"SELECT id, body FROM audit WHERE kind = ? AND id > ? AND json_extract(body, '$.anchor_id') IN ({marks})",
        (COMPLIANCE_KIND, min(anchor_ids), *anchor_ids),
    ):
        record = _parse_record(body, f"audit row #{entry_id}")
        if record.anchor_id is not None:
            found[record.anchor_id] = record
    current = _select_open_record(db)
    if current is not None and current.anchor_id in anchor_ids:
        found[current.anchor_id] = current
    return found


def _recent_commands(db: sqlite3.Connection, n: int) -> list[CommandOutcome]:
    rows = [
        _entry(r)
        for r in db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM audit WHERE body IS NULL AND kind != 'station_release'"
            " ORDER BY id DESC LIMIT ?",
            (max(0, n),),
        )
    ]
    records = _records_of(db, [e.id for e in rows if e.row.accepted])
    return [CommandOutcome(e, records.get(e.id)) for e in rows]


def _verify_chain(db: sqlite3.Connection) -> ChainReport:
    prev, last_id, count = GENESIS_HASH, None, 0
    for r in db.execute(f"SELECT {_ENTRY_COLUMNS} FROM audit ORDER BY id"):
        entry_id, stored_prev, stored_hash = r[0], r[10], r[11]
        if not stored_hash:
            return ChainReport(
                count, last_id, prev, entry_id, "it carries no hash (written by an older ocpp809?)"
            )
        if stored_prev != prev:
            after = "the start of the log" if last_id is None else f"entry #{last_id}"
            return ChainReport(
                count,
                last_id,
                prev,
                entry_id,
                f"its link does not match {after}: an entry between them was deleted, or {after} was changed",
            )
        if entry_hash(stored_prev, *r[:10]) != stored_hash:
            return ChainReport(
                count, last_id, prev, entry_id, "its contents do not match its hash: it was edited"
            )
        prev, last_id, count = stored_hash, entry_id, count + 1
    head = db.execute("SELECT last_id, hash FROM audit_head WHERE id = 1").fetchone()
    head_id, head_hash = (None, GENESIS_HASH) if head is None else (head[0], head[1])
    if head_id is not None and head_id == last_id and head_hash != prev:
        return ChainReport(
            count, last_id, prev, last_id, f"entry #{last_id} does not match the log's head: it was changed"
        )
    if head_id != last_id or head_hash != prev:
        first_missing = 1 if last_id is None else last_id + 1
        ends = "no entry" if last_id is None else f"entry #{last_id}"
        says = "no entry" if head_id is None else f"entry #{head_id}"
        return ChainReport(
            count,
            last_id,
            prev,
            first_missing,
            f"the log ends at {ends} but its head says {says}: entries at the end were deleted or changed",
        )
    return ChainReport(count, last_id, None if last_id is None else prev)


def _wal_checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


class Store:
    """The store at ``path``. ``created`` tells whether the file did not exist before."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._failure: str | None = None
        self._inodes: dict[str, tuple[int, int]] = {}
        self._fds: dict[str, int] = {}  # suffix "", "-wal", "-shm" -> fd opened here, closed last
        self._lock_fd = self._lock()
        try:
            self.created = not os.path.exists(self.path)
            if self.created and os.path.exists(self.path + "-wal"):
                raise StoreError(
                    f"store {self.path} is missing but its write-ahead log {self.path}-wal is there:"
                    " restore the store or move the log away"
                )
            self._db = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening ---------------------------------------------------------------

    def _lock(self) -> int:
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open store {self.path}: {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"store {self.path} is in use by another ocpp809 (pid {holder})") from None
            raise StoreError(f"cannot lock store {self.path}: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock store {self.path}: {lock_path}: {exc.strerror}") from None
        return fd

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            self._close_fds()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        try:
            # Whose file is it? Asked before anything writes to it (journal_mode=WAL would).
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
            if app_id != APPLICATION_ID:
                foreign = tables - _OUR_TABLES
                if app_id != 0 or foreign or (tables and "limit_state" not in tables):
                    raise StoreError(
                        f"store {self.path} is not an ocpp809 store (application_id {app_id:#x},"
                        f" tables {', '.join(sorted(tables)) or 'none'})"
                    )
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"store {self.path} failed its integrity check: {check}")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this ocpp809 knows"
                    f" ({SCHEMA_VERSION}): run the ocpp809 that wrote it"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if app_id != APPLICATION_ID:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            if version == 0:  # a fresh store, or one from before schema versions: as 0.1.0 made it
                db.executescript(_BASE_SCHEMA)
            self.schema_version = migrate(db, version, self.path, announce=bool(tables))
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self._page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        for suffix in ("", "-wal", "-shm"):
            try:
                self._fds[suffix] = os.open(self.path + suffix, os.O_RDONLY)
            except OSError as exc:
                raise StoreError(f"cannot open store {self.path}{suffix}: {exc.strerror}") from None
        self._inodes = {suffix: self._inode(os.fstat(fd)) for suffix, fd in self._fds.items()}
        self._header = self._stable_header()
        self._verify()

    @staticmethod
    def _inode(st: os.stat_result) -> tuple[int, int]:
        return st.st_dev, st.st_ino

    # -- the checks ------------------------------------------------------------

    @property
    def failure(self) -> str | None:
        """Why the store stopped taking writes, or None while it is sound."""
        return self._failure

    def _fail(self, reason: str) -> StoreError:
        if self._failure is None:
            self._failure = reason
        return StoreError(f"store {self.path}: {reason}")

    def _stable_header(self) -> bytes:
        header = os.pread(self._fds[""], 100, 0)
        return b"".join(header[part] for part in _STABLE_HEADER) if len(header) == 100 else b""

    def _verify(self) -> None:
        """Raise StoreError unless the files on disk are still the ones this store wrote."""
        if self._failure is not None:
            raise StoreError(f"store {self.path} failed earlier ({self._failure}): restart on a sound store")
        for suffix, inode in self._inodes.items():
            name = self.path + suffix
            try:
                current = self._inode(os.stat(name))
            except FileNotFoundError:
                raise self._fail(f"{name} was deleted while the gateway ran") from None
            except OSError as exc:
                raise self._fail(f"cannot check {name}: {exc.strerror}") from None
            if current != inode:
                raise self._fail(f"{name} was replaced by another file while the gateway ran")
        if self._stable_header() != self._header:
            raise self._fail(f"{self.path} was overwritten while the gateway ran (its header changed)")
        problem = self._wal_problem()
        if problem is not None:
            raise self._fail(f"{self.path}-wal {problem}")

    def _wal_problem(self) -> str | None:
        index = os.pread(self._fds["-shm"], 2 * _WAL_INDEX_HEADER.size, 0)
        if len(index) < 2 * _WAL_INDEX_HEADER.size or index[:48] != index[48:96]:
            return "no longer matches its index (-shm truncated or overwritten)"
        fields = _WAL_INDEX_HEADER.unpack(index[:48])
        version, is_init, max_frame = fields[0], fields[3], fields[6]
        frame_checksum, salt = fields[8:10], index[32:40]
        if version != _WAL_INDEX_VERSION or not is_init:
            return "index (-shm) is not a valid WAL index"
        if max_frame == 0:
            return None  # SQLite starts the log afresh on the next write
        header = os.pread(self._fds["-wal"], 32, 0)
        if len(header) < 32:
            return "was truncated while the gateway ran"
        magic, _fmt, page_size, _seq = struct.unpack(">4I", header[:16])
        if (
            magic not in _WAL_MAGIC
            or page_size != self._page_size
            or header[16:24] != salt
            or _wal_checksum(header[:24], magic & 1 == 1) != struct.unpack(">2I", header[24:32])
        ):
            return "header was overwritten while the gateway ran"
        last = os.pread(self._fds["-wal"], 24, 32 + (max_frame - 1) * (self._page_size + 24))
        if len(last) < 24 or last[8:16] != salt or struct.unpack(">2I", last[16:24]) != frame_checksum:
            return "frames were overwritten or cut while the gateway ran"
        return None

    def _transaction(self, work: Callable[[sqlite3.Connection], _T], what: str, sync: bool = True) -> _T:
        """Several statements as one checked, checkpointed write; StoreError unless all landed."""
        self._verify()
        try:
            if not sync:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            finally:
                if not sync:
                    self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what} {self.path}: {exc}") from None
        self._verify()
        return result

    def _write(self, sql: str, params: tuple[object, ...], what: str, sync: bool = True) -> None:
        """One checked, checkpointed write; StoreError unless it is on the files we opened."""
        self._verify()
        try:
            if not sync:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute(sql, params)
            finally:
                if not sync:
                    self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what} {self.path}: {exc}") from None
        self._verify()

    # -- the API ---------------------------------------------------------------

    def close(self) -> None:
        """Close the database, then release the lock; a second call does nothing."""
        if self._lock_fd < 0:
            return
        try:
            salvage = self._salvage_deleted()
            self._db.close()
            self._remove_orphans()
            if salvage is not None:
                self._put_back(salvage)
        finally:
            self._close_fds()
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _salvage_deleted(self) -> str | None:
        """A main file deleted while open is still readable here: copy it out before closing."""
        if not self._inodes or self._at_path("") is not None:
            return None
        salvage = self.path + ".salvage"
        try:
            target = sqlite3.connect(salvage)
            try:
                self._db.backup(target)
            finally:
                target.close()
        except sqlite3.Error as exc:
            log.error("store %s was deleted while the gateway ran and cannot be salvaged: %s", self.path, exc)
            return None
        return salvage

    def _put_back(self, salvage: str) -> None:
        if self._at_path("") is not None:  # someone put a file there meanwhile: theirs wins
            log.error(
                "store %s was deleted while the gateway ran; its contents are in %s", self.path, salvage
            )
            return
        fd = os.open(salvage, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(salvage, self.path)
        log.warning(
            "store %s was deleted while the gateway ran: its last contents (limit, mode, audit log)"
            " were written back on close",
            self.path,
        )

    def _remove_orphans(self) -> None:
        """Our -wal and -shm, left behind when the main file was deleted or replaced.

        SQLite keeps them when its database file moved; they belong to the file that is
        gone, so the next start would otherwise lay them over whatever is at the path
        now (and refuse to start while the main file is missing).
        """
        if not self._inodes or self._at_path("") == self._inodes[""]:
            return
        for suffix in ("-wal", "-shm"):
            if self._at_path(suffix) == self._inodes[suffix]:
                try:
                    os.unlink(self.path + suffix)
                except OSError:
                    pass  # the next start says what is wrong

    def _at_path(self, suffix: str) -> tuple[int, int] | None:
        try:
            return self._inode(os.stat(self.path + suffix))
        except OSError:
            return None

    def _close_fds(self) -> None:
        # Only after SQLite closed: closing any descriptor of a file drops the process's
        # POSIX locks on it, SQLite's included.
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def load_limit(self) -> DurableLimit | None:
        try:
            row = self._db.execute(
                "SELECT mode, setpoint_w, changed_at_s, hold_started_at_s, master_seen_at_s"
                " FROM limit_state WHERE id = 1"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None
        if row is None:
            return None
        try:
            mode = Mode(row[0])
        except ValueError:
            raise StoreError(f"store {self.path} holds an unknown mode {row[0]!r}") from None
        return DurableLimit(mode, row[1], row[2], row[3], row[4])

    def save_limit(self, limit: DurableLimit) -> None:
        """Store ``limit`` durably, or raise StoreError: a caller may confirm only after this."""
        self._transaction(lambda db: self._put_limit(db, limit), "write")

    def accept_setpoint(self, limit: DurableLimit, row: AuditRow) -> int:
        """A DSO command accepted: the limit it sets and its audit row, in one transaction
        (a crash keeps both or neither, so a resumed limit always has its audit row).
        Returns the row's id; StoreError unless both landed."""

        def work(db: sqlite3.Connection) -> int:
            self._put_limit(db, limit)
            return self._append(db, row, None)

        return self._transaction(work, "write")

    def _put_limit(self, db: sqlite3.Connection, limit: DurableLimit) -> None:
        values = (limit.mode.value, limit.setpoint_w, limit.changed_at_s, limit.hold_started_at_s)
        db.execute(
            "INSERT INTO limit_state (id, mode, setpoint_w, changed_at_s, hold_started_at_s, master_seen_at_s)"
            " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET mode = excluded.mode,"
            " setpoint_w = excluded.setpoint_w, changed_at_s = excluded.changed_at_s,"
            " hold_started_at_s = excluded.hold_started_at_s,"
            " master_seen_at_s = COALESCE(excluded.master_seen_at_s, master_seen_at_s)",
            (*values, limit.master_seen_at_s),
        )
        row = db.execute(
            "SELECT mode, setpoint_w, changed_at_s, hold_started_at_s FROM limit_state WHERE id = 1"
        ).fetchone()
        if row is None or tuple(row) != values:
            raise self._fail(f"read back {row} after writing {values}")

    def save_master_seen(self, at_s: float, sync: bool = True) -> None:
        """Record that a master was known to be connected at ``at_s``.

        ``sync=False`` (the periodic refresh) skips the fsync of the commit: a power cut
        may lose the latest refreshes, which only makes a resumed hold end earlier.
        """
        self._write("UPDATE limit_state SET master_seen_at_s = ? WHERE id = 1", (at_s,), "write", sync=sync)

    def save_commitments(
        self, changed: list[tuple[str, str, str]], removed: list[str], at_s: float, sync: bool
    ) -> None:
        """Store station ledgers ``(station_id, version, entries JSON)`` whole, forget ``removed``
        and empty the journal they include, as one transaction. ``sync=False`` when nothing
        in them is newer than the journal: a power cut may then lose them with the journal
        kept, which leaves a restart reserving what it did before, never less."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO commitments (station_id, version, entries, updated_at_s) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (station_id) DO UPDATE SET version = excluded.version,"
                " entries = excluded.entries, updated_at_s = excluded.updated_at_s",
                [(station_id, version, entries, at_s) for station_id, version, entries in changed],
            )
            db.executemany("DELETE FROM commitments WHERE station_id = ?", [(i,) for i in removed])
            db.execute("DELETE FROM commitment_journal")

        self._transaction(work, "write commitments to", sync=sync)

    def journal_commitments(self, entries: str, at_s: float) -> None:
        """Append profiles about to go out (``entries``: a JSON array of ``[station_id,
        version, seq, live_w, live_until_s, fallback_w]``), durably, before they are sent."""
        self._write(
            "INSERT INTO commitment_journal (at_s, entries) VALUES (?, ?)",
            (at_s, entries),
            "journal commitments in",
        )

    def load_commitment_journal(self) -> list[str]:
        """The journaled entries not yet folded into ``commitments``, oldest first (JSON)."""
        try:
            rows = self._db.execute("SELECT entries FROM commitment_journal ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None
        return [str(r[0]) for r in rows]

    def load_commitments(self) -> list[tuple[str, str, str]]:
        """Every stored ledger as ``(station_id, version, entries JSON)``."""
        try:
            rows = self._db.execute(
                "SELECT station_id, version, entries FROM commitments ORDER BY rowid"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def append_audit(self, row: AuditRow) -> int:
        """Chain a DSO command (or refusal, or release) onto the audit log; returns its id."""
        return self.append_entry(row)

    def append_entry(self, row: AuditRow, body: str | None = None, sync: bool = True) -> int:
        """Chain one row onto the audit log (``body``: the JSON of an entry or record); returns its id."""
        return self._transaction(lambda db: self._append(db, row, body), "append to the audit log in", sync)

    def save_open_record(self, body: str, updated_at_s: float, sync: bool = False) -> None:
        """Keep the open compliance record (it replaces the one kept before).

        ``sync=False`` by default: a power cut may lose the latest changes of a record
        that is still provisional anyway.
        """
        self._write(
            "INSERT INTO compliance_open (id, body, updated_at_s) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at_s = excluded.updated_at_s",
            (body, updated_at_s),
            "keep the open compliance record in",
            sync=sync,
        )

    def load_open_record(self) -> ComplianceRecord | None:
        """The compliance record kept open, e.g. by a gateway that stopped without closing it."""
        try:
            return _select_open_record(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None

    def close_record(self, row: AuditRow, body: str, sync: bool = False) -> int:
        """Chain a closed compliance record onto the log and drop the open copy, atomically."""

        def work(db: sqlite3.Connection) -> int:
            entry_id = self._append(db, row, body)
            db.execute("DELETE FROM compliance_open")
            return entry_id

        return self._transaction(work, "close a compliance record in", sync)

    def _append(self, db: sqlite3.Connection, row: AuditRow, body: str | None) -> int:
        head = db.execute("SELECT hash FROM audit_head WHERE id = 1").fetchone()
        prev = GENESIS_HASH if head is None else str(head[0])
        cursor = db.execute(
            "INSERT INTO audit (received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail,"
            " body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
            (
                row.received_at_s,
                row.peer,
                row.kind,
                _real(row.value_w),
                _real(row.time_tag_s),
                int(row.accepted),
                row.reason,
                row.detail,
                body,
                prev,
            ),
        )
        entry_id = cursor.lastrowid
        assert entry_id is not None
        digest = entry_hash(
            prev,
            entry_id,
            row.received_at_s,
            row.peer,
            row.kind,
            row.value_w,
            row.time_tag_s,
            row.accepted,
            row.reason,
            row.detail,
            body,
        )
        db.execute("UPDATE audit SET hash = ? WHERE id = ?", (digest, entry_id))
        db.execute(
            "INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash",
            (entry_id, digest),
        )
        return entry_id

    def audit(self) -> list[AuditRow]:
        """The DSO commands, refusals and releases, oldest first (not the gateway's own entries)."""
        rows = self._db.execute(
            "SELECT received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail FROM audit"
            " WHERE body IS NULL ORDER BY id"
        ).fetchall()
        return [AuditRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]

    def entries(self, since_s: float | None = None, until_s: float | None = None) -> list[AuditEntry]:
        """Every row of the chained log in order, optionally those at ``since_s <= t < until_s``."""
        return self._read(lambda db: _select_entries(db, since_s, until_s))

    def recent_commands(self, n: int = 10) -> list[CommandOutcome]:
        """The last ``n`` DSO commands, newest first, each with its compliance record if it has one.

        For a status page: on the gateway's own connection, so call it on the event loop
        thread; another thread (or process) reads with ``AuditReader(path).recent_commands(n)``.
        """
        return self._read(lambda db: _recent_commands(db, n))

    def verify_chain(self) -> ChainReport:
        return self._read(_verify_chain)

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return work(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None


class AuditReader:
    """The audit log of a store, read-only: safe beside a running gateway (see the module doc).

    Never takes the gateway's lock and never writes: every read is one read transaction
    (a consistent snapshot) on a ``mode=ro`` connection.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise StoreError(f"no store at {self.path}")
        self._immutable = False
        self._stamp: tuple[int, int, int] | None = None
        self._db = self._connect()
        try:
            self.schema_version = self._check()
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        # No -wal and no -shm: no gateway has the store open. Read it as immutable then, or
        # SQLite would create both files (and a read-only connection cannot remove them).
        idle = not any(os.path.exists(self.path + suffix) for suffix in ("-wal", "-shm"))
        uri = Path(self.path).absolute().as_uri() + ("?mode=ro&immutable=1" if idle else "?mode=ro")
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path} read-only: {exc}") from None
        self._immutable, self._stamp = idle, self._file_stamp() if idle else None
        return db

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _changed_under_us(self) -> bool:
        """An immutable read is only good if no gateway opened the store meanwhile."""
        if not self._immutable:
            return False
        busy = any(os.path.exists(self.path + suffix) for suffix in ("-wal", "-shm"))
        return busy or self._file_stamp() != self._stamp

    def _check(self) -> int:
        app_id, version, tables = self._read(
            lambda db: (
                int(db.execute("PRAGMA application_id").fetchone()[0]),
                int(db.execute("PRAGMA user_version").fetchone()[0]),
                {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")},
            )
        )
        old_release = app_id == 0 and version == 0 and "limit_state" in tables and tables <= _OUR_TABLES
        if app_id != APPLICATION_ID and not old_release:
            raise StoreError(f"{self.path} is not an ocpp809 store (application_id {app_id:#x})")
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, from before the audit log was chained:"
                f" start the gateway once with this ocpp809 (it upgrades the store to {SCHEMA_VERSION})"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this ocpp809 knows"
                f" ({SCHEMA_VERSION}): use the ocpp809 that wrote it"
            )
        return version

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        for attempt in (1, 2):
            try:
                self._db.execute("BEGIN")
                try:
                    result = work(self._db)
                finally:
                    if self._db.in_transaction:
                        self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if attempt == 1 and self._changed_under_us():
                    self._reconnect()
                    continue
                raise StoreError(f"cannot read store {self.path}: {exc}") from None
            if attempt == 1 and self._changed_under_us():
                self._reconnect()  # a gateway started while we read: read again, the ordinary way
                continue
            return result
        raise StoreError(f"cannot read store {self.path}: it kept changing while being read")

    def _reconnect(self) -> None:
        self._db.close()
        self._db = self._connect()

    def entries(self, since_s: float | None = None, until_s: float | None = None) -> list[AuditEntry]:
        return self._read(lambda db: _select_entries(db, since_s, until_s))

    def entry(self, entry_id: int) -> AuditEntry | None:
        return self._read(lambda db: _select_entry(db, entry_id))

    def open_record(self) -> ComplianceRecord | None:
        return self._read(_select_open_record)

    def records_of(self, anchor_ids: list[int]) -> dict[int, ComplianceRecord]:
        """The compliance records (closed or open) anchored to the rows ``anchor_ids``."""
        return self._read(lambda db: _records_of(db, anchor_ids))

    def recent_commands(self, n: int = 10) -> list[CommandOutcome]:
        return self._read(lambda db: _recent_commands(db, n))

    def verify_chain(self) -> ChainReport:
        return self._read(_verify_chain)

    def snapshot(self) -> tuple[list[AuditEntry], ComplianceRecord | None]:
        """Every entry and the open record, from one consistent read."""
        return self._read(lambda db: (_select_entries(db), _select_open_record(db)))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
