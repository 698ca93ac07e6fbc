"""The durable store: resumes the limit and mode, audits commands, fails loudly."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.durable import DurableLimit
from gateway.errors import StoreError
from gateway.model import Mode
from gateway.store import AuditRow, Store


def test_limit_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    assert store.load_limit() is None
    store.save_limit(DurableLimit(Mode.HOLD, 20000.0, 10.0, 9.0))
    store.save_limit(DurableLimit(Mode.NORMAL, 30000.0, 11.0))
    store.close()
    assert Store(path).load_limit() == DurableLimit(Mode.NORMAL, 30000.0, 11.0, None)


def test_audit_is_append_only_and_ordered(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    rows = [
        AuditRow(1.0, "127.0.0.1:5000", "C_SE_NC_1", 0.0, None, False, "below_min", "too low"),
        AuditRow(2.0, "127.0.0.1:5000", "C_SE_TC_1", 20000.0, 1.5, True, "ok", ""),
    ]
    for row in rows:
        store.append_audit(row)
    assert store.audit() == rows


def test_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="bad.sqlite3"):
        Store(path)


def test_unknown_mode_in_store_is_an_error_not_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.save_limit(DurableLimit(Mode.NORMAL, 1.0, 1.0))
    store._db.execute("UPDATE limit_state SET mode = 'bogus'")
    with pytest.raises(StoreError, match="unknown mode"):
        store.load_limit()


def test_a_directory_in_place_of_the_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s.sqlite3").mkdir()
    with pytest.raises(StoreError, match="cannot open store"):
        Store(tmp_path / "s.sqlite3")


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        Store(tmp_path / "no" / "such" / "dir" / "s.sqlite3")


# -- one gateway per store --------------------------------------------------------------


def test_a_second_store_on_the_same_file_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    first = Store(path)
    first.save_limit(DurableLimit(Mode.NORMAL, 20000.0, 1.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(StoreError, match=rf"store {path} is in use by another ocpp809 \(pid {os.getpid()}\)"):
        Store(path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # lock file included
    first.save_limit(DurableLimit(Mode.NORMAL, 30000.0, 2.0))  # the first one is unharmed
    first.close()
    second = Store(path)  # the lock goes with the first one
    assert second.load_limit() == DurableLimit(Mode.NORMAL, 30000.0, 2.0)
    second.close()


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="is not an ocpp809 store"):
        Store(path)
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()


def test_a_store_from_before_the_last_seen_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE limit_state (id INTEGER PRIMARY KEY CHECK (id = 1), mode TEXT NOT NULL,"
        " setpoint_w REAL, changed_at_s REAL NOT NULL, hold_started_at_s REAL);"
        "INSERT INTO limit_state VALUES (1, 'normal', 20000.0, 5.0, NULL);"
    )
    old.close()
    store = Store(path)
    assert store.load_limit() == DurableLimit(Mode.NORMAL, 20000.0, 5.0)
    store.save_master_seen(7.0)
    assert store.load_limit() == DurableLimit(Mode.NORMAL, 20000.0, 5.0, None, 7.0)
    store.close()


def test_master_seen_survives_limit_writes_that_do_not_carry_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    store.save_limit(DurableLimit(Mode.NORMAL, 20000.0, 1.0))
    store.save_master_seen(5.0, sync=False)
    store.save_limit(DurableLimit(Mode.HOLD, 20000.0, 6.0, 6.0))
    assert store.load_limit() == DurableLimit(Mode.HOLD, 20000.0, 6.0, 6.0, 5.0)
    store.close()


def test_a_missing_store_is_reported_as_created(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    assert store.created
    store.close()
    again = Store(path)
    assert not again.created
    again.close()


# -- files that disappear, are replaced or corrupted while running ------------------------


def _garble_wal(path: Path) -> None:
    wal = Path(f"{path}-wal")
    with open(wal, "r+b") as handle:  # same inode, every byte replaced
        handle.write(bytes(range(256)) * (wal.stat().st_size // 256 + 1))


def _replace_with_other_db(path: Path) -> None:
    other = path.with_name("other.sqlite3")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    os.replace(other, path)


def _overwrite_in_place(path: Path) -> None:
    other = path.with_name("other.sqlite3")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with open(path, "r+b") as handle:
        handle.write(other.read_bytes())


FAULTS = {
    "main deleted": (lambda p: os.remove(p), "was deleted"),
    "wal deleted": (lambda p: os.remove(f"{p}-wal"), "-wal was deleted"),
    "shm deleted": (lambda p: os.remove(f"{p}-shm"), "-shm was deleted"),
    "main replaced": (_replace_with_other_db, "was replaced"),
    "main overwritten": (_overwrite_in_place, "its header changed"),
    "wal garbled": (_garble_wal, "-wal header was overwritten"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_store_file_fault_refuses_every_later_write(tmp_path: Path, fault: str) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.save_limit(DurableLimit(Mode.NORMAL, 20000.0, 1.0))
    store.append_audit(AuditRow(1.0, "m", "C_SE_NC_1", 20000.0, None, True, "ok", ""))  # frames in the WAL
    damage, why = FAULTS[fault]
    damage(path)
    with pytest.raises(StoreError, match=why):
        store.save_limit(DurableLimit(Mode.NORMAL, 30000.0, 2.0))
    assert store.failure is not None and why in store.failure
    with pytest.raises(StoreError, match="failed earlier"):  # it stays failed: nothing is confirmed
        store.save_master_seen(3.0)
    with pytest.raises(StoreError, match="failed earlier"):
        store.append_audit(AuditRow(2.0, "m", "C_SE_NC_1", 30000.0, None, False, "store_failed", ""))
    store.close()


def _restart(path: Path) -> DurableLimit | None | str:
    try:
        store = Store(path)
    except StoreError as exc:
        return str(exc)
    try:
        return store.load_limit()
    finally:
        store.close()


@pytest.mark.parametrize("fault", ["main deleted", "wal deleted", "shm deleted", "wal garbled"])
def test_after_a_fault_a_restart_resumes_the_last_confirmed_limit(tmp_path: Path, fault: str) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.save_limit(DurableLimit(Mode.NORMAL, 20000.0, 1.0))
    store.append_audit(AuditRow(1.0, "m", "C_SE_NC_1", 20000.0, None, True, "ok", ""))
    FAULTS[fault][0](path)
    with pytest.raises(StoreError):
        store.save_limit(DurableLimit(Mode.NORMAL, 30000.0, 2.0))
    store.close()
    assert _restart(path) == DurableLimit(Mode.NORMAL, 20000.0, 1.0)
    again = Store(path)
    assert [r.value_w for r in again.audit()] == [20000.0]  # the audit log came through too
    again.close()


@pytest.mark.parametrize("fault", ["main replaced", "main overwritten"])
def test_after_a_replaced_store_a_restart_refuses_with_one_line(tmp_path: Path, fault: str) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.save_limit(DurableLimit(Mode.NORMAL, 20000.0, 1.0))
    FAULTS[fault][0](path)
    with pytest.raises(StoreError):
        store.save_limit(DurableLimit(Mode.NORMAL, 30000.0, 2.0))
    store.close()
    outcome = _restart(path)
    assert isinstance(outcome, str) and "is not an ocpp809 store" in outcome and "\n" not in outcome


def test_a_missing_store_with_its_wal_left_behind_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    Path(f"{path}-wal").write_bytes(b"\0" * 32)
    with pytest.raises(StoreError, match="is missing but its write-ahead log"):
        Store(path)
    assert not path.exists()
