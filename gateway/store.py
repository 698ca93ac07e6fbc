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
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from gateway.durable import DurableLimit
from gateway.errors import StoreError
from gateway.model import Mode

log = logging.getLogger(__name__)

# PRAGMA application_id of an ocpp809 store ("o809"): a foreign SQLite file is refused,
# never quietly given our tables.
APPLICATION_ID = 0x6F383039

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL,
    setpoint_w REAL,
    changed_at_s REAL NOT NULL,
    hold_started_at_s REAL,
    master_seen_at_s REAL
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
_OUR_TABLES = {"limit_state", "audit", "sqlite_sequence"}

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
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if app_id != APPLICATION_ID:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.executescript(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(limit_state)")}
            if "master_seen_at_s" not in columns:  # a store from before the column existed
                db.execute("ALTER TABLE limit_state ADD COLUMN master_seen_at_s REAL")
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
        values = (limit.mode.value, limit.setpoint_w, limit.changed_at_s, limit.hold_started_at_s)
        self._write(
            "INSERT INTO limit_state (id, mode, setpoint_w, changed_at_s, hold_started_at_s, master_seen_at_s)"
            " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET mode = excluded.mode,"
            " setpoint_w = excluded.setpoint_w, changed_at_s = excluded.changed_at_s,"
            " hold_started_at_s = excluded.hold_started_at_s,"
            " master_seen_at_s = COALESCE(excluded.master_seen_at_s, master_seen_at_s)",
            (*values, limit.master_seen_at_s),
            "write",
        )
        try:
            row = self._db.execute(
                "SELECT mode, setpoint_w, changed_at_s, hold_started_at_s FROM limit_state WHERE id = 1"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read back store {self.path}: {exc}") from None
        if row is None or tuple(row) != values:
            raise self._fail(f"read back {row} after writing {values}")

    def save_master_seen(self, at_s: float, sync: bool = True) -> None:
        """Record that a master was known to be connected at ``at_s``.

        ``sync=False`` (the periodic refresh) skips the fsync of the commit: a power cut
        may lose the latest refreshes, which only makes a resumed hold end earlier.
        """
        self._write("UPDATE limit_state SET master_seen_at_s = ? WHERE id = 1", (at_s,), "write", sync=sync)

    def append_audit(self, row: AuditRow) -> None:
        self._write(
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
            "append to the audit log in",
        )

    def audit(self) -> list[AuditRow]:
        rows = self._db.execute(
            "SELECT received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail FROM audit ORDER BY id"
        ).fetchall()
        return [AuditRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]
