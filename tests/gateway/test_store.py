"""The durable store: resumes the limit and mode, audits commands, fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.arbiter import DurableLimit
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
