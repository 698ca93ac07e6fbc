"""The durable store: resumes the limit and mode, audits commands in a hash chain, upgrades, fails loudly."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.store as store_module
from gateway.core.compliance import (
    ComplianceRecord,
    ComplianceTracker,
    RecordKind,
    record_json,
    summary,
)
from gateway.core.decisions import ConfirmSetpoint, LimitChanged
from gateway.core.durable import DurableLimit
from gateway.core.model import LimitSource, Mode, Quality
from gateway.errors import StoreError
from gateway.store import SCHEMA_VERSION, AuditReader, AuditRow, Store


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


# -- schema versions and migrations ---------------------------------------------------------

# What the previous release (0.1.0, git 46acd10: gateway/store.py) created, verbatim.
RELEASE_0_1_SCHEMA = """
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


def write_release_0_1_store(path: Path) -> list[AuditRow]:
    """A store as the 0.1.0 release's code left it: WAL mode, its schema, a limit and audit rows."""
    rows = [
        AuditRow(100.0, "10.0.0.1:2404", "C_SE_NC_1", 0.0, None, False, "below_min", "0 W is below 6000 W"),
        AuditRow(101.0, "10.0.0.1:2404", "C_SE_TC_1", 20000.0, 100.5, True, "ok", ""),
        AuditRow(102.0, "10.0.0.1:2404", "C_SE_NC_1", None, None, False, "not_finite", "nan"),
    ]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(RELEASE_0_1_SCHEMA)
    db.execute(
        "INSERT INTO limit_state (id, mode, setpoint_w, changed_at_s, hold_started_at_s)"
        " VALUES (1, 'normal', 20000.0, 101.0, NULL)"
    )
    for r in rows:
        db.execute(
            "INSERT INTO audit (received_at_s, peer, kind, value_w, time_tag_s, accepted, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.received_at_s, r.peer, r.kind, r.value_w, r.time_tag_s, int(r.accepted), r.reason, r.detail),
        )
    db.close()
    return rows


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def schema_of(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return sorted(db.execute("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL").fetchall())
    finally:
        db.close()


def test_a_store_written_by_the_previous_release_is_upgraded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite3"
    rows = write_release_0_1_store(path)
    assert user_version(path) == 0
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert any(
        f"upgraded from schema version 0 to {SCHEMA_VERSION}" in r.getMessage() for r in caplog.records
    )
    assert store.load_limit() == DurableLimit(Mode.NORMAL, 20000.0, 101.0)  # the limit came through
    assert store.audit() == rows  # and the audit log, in order
    report = store.verify_chain()  # chained as it was found
    assert (report.ok, report.entries, report.head_id) == (True, 3, 3)
    store.save_master_seen(103.0)  # the new column works
    new_id = store.append_audit(AuditRow(104.0, "m", "C_SE_NC_1", 30000.0, None, True, "ok", ""))
    assert new_id == 4 and store.verify_chain().ok
    store.close()
    assert user_version(path) == SCHEMA_VERSION
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        again = Store(path)  # nothing left to migrate
    assert not caplog.records
    assert again.load_limit() == DurableLimit(Mode.NORMAL, 20000.0, 101.0, None, 103.0)
    assert again.verify_chain().entries == 4
    again.close()


def test_a_fresh_store_and_an_upgraded_one_have_the_same_schema(tmp_path: Path) -> None:
    fresh, old = tmp_path / "fresh.sqlite3", tmp_path / "old.sqlite3"
    Store(fresh).close()
    write_release_0_1_store(old)
    Store(old).close()
    assert schema_of(fresh) == schema_of(old)
    assert user_version(fresh) == user_version(old) == SCHEMA_VERSION


def test_a_store_from_a_newer_ocpp809_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this ocpp809"):
        Store(path)
    assert path.read_bytes() == before


def test_a_migration_that_fails_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.sqlite3"
    write_release_0_1_store(path)
    before = schema_of(path)

    def half_done(db: sqlite3.Connection) -> str:
        db.execute("ALTER TABLE audit ADD COLUMN body TEXT")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, "_MIGRATIONS", ((1, half_done),))
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(path)
    assert schema_of(path) == before and user_version(path) == 0
    monkeypatch.undo()
    store = Store(path)  # the real migration still runs afterwards
    assert store.verify_chain().entries == 3
    store.close()


# -- the chain ------------------------------------------------------------------------------


def chained_store(path: Path, n: int = 5) -> None:
    store = Store(path)
    for i in range(n):
        store.append_audit(AuditRow(10.0 + i, "m", "C_SE_NC_1", 10000.0 + i, None, True, "ok", f"#{i + 1}"))
    store.close()


def tamper(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


TAMPERING = {
    "a value edited": ("UPDATE audit SET value_w = 99999 WHERE id = 3", 3, "was edited"),
    "a reason edited": ("UPDATE audit SET reason = 'below_min', accepted = 0 WHERE id = 2", 2, "was edited"),
    "a row deleted": ("DELETE FROM audit WHERE id = 3", 4, "an entry between them was deleted"),
    "the first row deleted": ("DELETE FROM audit WHERE id = 1", 2, "the start of the log"),
    "the last row deleted": ("DELETE FROM audit WHERE id = 5", 5, "entries at the end were deleted"),
    "a link edited": (f"UPDATE audit SET prev_hash = '{'0' * 64}' WHERE id = 4", 4, "entry #3"),
    "the head dropped": ("DELETE FROM audit_head", 6, "its head says no entry"),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_verify_finds_the_first_row_that_was_edited_or_deleted(tmp_path: Path, how: str) -> None:
    path = tmp_path / "s.sqlite3"
    chained_store(path)
    sql, bad_id, why = TAMPERING[how]
    tamper(path, sql)
    store = Store(path)
    report = store.verify_chain()
    store.close()
    assert not report.ok
    assert report.first_bad_id == bad_id and why in (report.problem or ""), report


def test_a_row_rehashed_after_an_edit_is_found_at_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    chained_store(path)
    store = Store(path)
    [third] = [e for e in store.entries() if e.id == 3]
    store.close()
    forged = store_module.entry_hash(
        third.prev_hash, 3, third.row.received_at_s, "m", "C_SE_NC_1", 1.0, None, True, "ok", "#3", None
    )
    tamper(path, f"UPDATE audit SET value_w = 1.0, hash = '{forged}' WHERE id = 3")
    store = Store(path)
    report = store.verify_chain()
    store.close()
    assert (report.first_bad_id, report.entries) == (4, 3)


reals = st.one_of(st.none(), st.floats(), st.integers(-(2**53), 2**53))


@given(
    value=reals,
    time_tag=reals,
    received=st.floats(allow_nan=False),
    text=st.text(st.characters(blacklist_categories=["Cs"])),
    accepted=st.booleans(),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_row_hashes_the_same_read_back(
    tmp_path_factory: pytest.TempPathFactory,
    value: float | None,
    time_tag: float | None,
    received: float,
    text: str,
    accepted: bool,
) -> None:
    path = tmp_path_factory.mktemp("chain") / "s.sqlite3"
    store = Store(path)
    try:
        store.append_audit(AuditRow(received, text, "C_SE_NC_1", value, time_tag, accepted, text, text))
        store.append_entry(AuditRow(received, "ocpp809", "hold", value, None, True, "hold", text), '{"x":1}')
        assert store.verify_chain().ok
    finally:
        store.close()


# -- entries, the open record, and what the status page reads --------------------------------


def test_the_gateways_own_entries_are_chained_but_not_commands(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    command = AuditRow(1.0, "m", "C_SE_NC_1", 20000.0, None, True, "ok", "")
    hold = AuditRow(2.0, "ocpp809", "hold", 20000.0, None, True, "hold", "DSO link lost")
    store.append_audit(command)
    store.append_entry(hold, '{"kind":"hold"}', sync=False)
    assert store.audit() == [command]  # the command log as before
    assert [(e.id, e.row, e.body) for e in store.entries()] == [
        (1, command, None),
        (2, hold, '{"kind":"hold"}'),
    ]
    assert [e.id for e in store.entries(since_s=1.5)] == [2]
    assert [e.id for e in store.entries(until_s=1.5)] == [1]
    assert store.verify_chain().ok
    store.close()


def _record(anchor_id: int, opened_at_s: float, **changes: object) -> ComplianceRecord:
    tracker = ComplianceTracker(22000.0, Quality.GOOD)
    tracker.observe(
        [ConfirmSetpoint(10000), LimitChanged(10000, LimitSource.DSO_SETPOINT, Mode.NORMAL, "DSO setpoint")],
        opened_at_s,
    )
    tracker.anchor(anchor_id, RecordKind.COMMAND)
    record = tracker.snapshot()
    assert record is not None
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_an_open_record_is_kept_then_closed_onto_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    first = store.append_audit(AuditRow(10.0, "m", "C_SE_NC_1", 10000.0, None, True, "ok", ""))
    refused = store.append_audit(AuditRow(11.0, "m", "C_SE_NC_1", 0.0, None, False, "below_min", "too low"))
    open_record = _record(first, 10.0)
    store.save_open_record(record_json(open_record), 10.0)
    store.close()
    store = Store(path)
    assert store.load_open_record() == open_record  # kept across a restart
    [newest, older] = store.recent_commands(2)
    assert (newest.entry.id, newest.record) == (refused, None)
    assert (older.entry.id, older.record) == (first, open_record)  # the open one, provisional

    closed = dataclasses.replace(open_record, complied_at_s=14.0, closed_at_s=20.0, close_reason="next")
    row = AuditRow(10.0, "ocpp809", "compliance", 10000.0, None, True, "complied", summary(closed))
    record_id = store.close_record(row, record_json(closed))
    assert store.load_open_record() is None
    [_, older] = store.recent_commands(5)
    assert older.record == closed and older.record.time_to_comply_s == 4.0
    [entry] = [e for e in store.entries() if e.id == record_id]
    assert entry.record() == closed and not entry.is_command
    assert store.audit() == [r.row for r in store.entries() if r.body is None]
    assert store.verify_chain().entries == 3
    store.close()


# -- reading beside a running gateway -------------------------------------------------------


def test_a_reader_beside_the_gateway_never_makes_its_checks_fail(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.save_limit(DurableLimit(Mode.NORMAL, 20000.0, 1.0))
    for i in range(5):
        store.append_audit(AuditRow(float(i), "m", "C_SE_NC_1", 20000.0, None, True, "ok", ""))
        with AuditReader(path) as reader:  # an open reader while the gateway writes, too
            assert len(reader.entries()) == i + 1
            store.save_limit(DurableLimit(Mode.NORMAL, 20000.0 + i, 2.0 + i))
            assert reader.verify_chain().ok
    assert store.failure is None
    store.append_audit(AuditRow(9.0, "m", "C_SE_NC_1", 25000.0, None, True, "ok", ""))
    store.close()


def test_reading_a_store_no_gateway_has_open_creates_no_files(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    chained_store(path, 2)
    before = sorted(p.name for p in tmp_path.iterdir())
    with AuditReader(path) as reader:
        assert [e.id for e in reader.entries()] == [1, 2] and reader.verify_chain().ok
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    store = Store(path)  # and a gateway starts on it as usual
    store.append_audit(AuditRow(20.0, "m", "C_SE_NC_1", 10000.0, None, True, "ok", ""))
    store.close()


def test_a_reader_says_why_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        AuditReader(tmp_path / "missing.sqlite3")
    old = tmp_path / "old.sqlite3"
    write_release_0_1_store(old)
    with pytest.raises(StoreError, match="start the gateway once with this ocpp809"):
        AuditReader(old)
    foreign = tmp_path / "foreign.sqlite3"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(StoreError, match="is not an ocpp809 store"):
        AuditReader(foreign)


def test_commitments_survive_reopen_and_a_release_removes_one(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.save_commitments(
        [("cp1", "ocpp1.6", "[[1,7400.0,1.0,3000.0,1]]"), ("cp2", "ocpp2.0.1", "[]")], [], 1.0, True
    )
    store.save_commitments([("cp1", "ocpp1.6", "[[2,6000.0,2.0,3000.0,1]]")], ["cp2"], 2.0, False)
    store.close()
    again = Store(path)
    try:
        assert again.load_commitments() == [("cp1", "ocpp1.6", "[[2,6000.0,2.0,3000.0,1]]")]
    finally:
        again.close()


def test_journaled_profiles_survive_reopen_in_order_until_the_ledgers_are_stored_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.journal_commitments('[["cp1","ocpp1.6",3,7400.0,9.0,3000.0]]', 1.0)
    store.journal_commitments(
        '[["cp1","ocpp1.6",4,6000.0,9.0,3000.0],["cp2","ocpp2.0.1",5,1.0,9.0,0.0]]', 2.0
    )
    store.close()
    again = Store(path)
    try:
        assert [len(json.loads(j)) for j in again.load_commitment_journal()] == [1, 2]  # oldest first
        again.save_commitments([("cp1", "ocpp1.6", "[[4,6000.0,9.0,3000.0,1]]")], [], 3.0, False)
        assert again.load_commitment_journal() == []  # the whole ledgers include what it held
    finally:
        again.close()
