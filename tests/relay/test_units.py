"""The pure parts of the relay: the cap rule, the guard, the limit notices, the outbox, the backoff."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from gateway.core.model import LimitSource, OcppVersion
from gateway.core.profile_cap import cap_limit, cap_limits, dso_limit_in_force
from ocpp_side import outbox as outbox_module
from ocpp_side import schemas, v16, v201
from ocpp_side.csms_guard import judge
from ocpp_side.limit_notice import StationCapNotices, limit_notice, so_limit_call
from ocpp_side.outbox import Outbox
from ocpp_side.profiles import RateUnit, StationCaps
from ocpp_side.upstream import backoff_s

RESERVED = frozenset({809001, 809002})


def test_cap_is_the_minimum_of_csms_and_dso() -> None:
    assert cap_limit(20000.0, 7000.0) == 7000.0
    assert cap_limit(5000.0, 7000.0) == 5000.0
    assert cap_limit(5000.0, None) == 5000.0
    assert cap_limit(5000.0, -1.0) == 0.0
    assert cap_limits((1.0, 9.0), 5.0) == (1.0, 5.0)


def test_dso_limit_in_force_only_below_capacity_and_from_the_dso() -> None:
    assert dso_limit_in_force(LimitSource.DSO_SETPOINT, 7000.0, 100000.0)
    assert dso_limit_in_force(LimitSource.FALLBACK, 10000.0, 100000.0)
    assert not dso_limit_in_force(LimitSource.DSO_SETPOINT, 100000.0, 100000.0)
    assert not dso_limit_in_force(LimitSource.INITIAL, 7000.0, 100000.0)


def _v16_max(profile_id: int, unit: str, limits: list[float], phases: int | None = None) -> dict[str, object]:
    periods = [
        {"startPeriod": 60 * i, "limit": v, **({"numberPhases": phases} if phases else {})}
        for i, v in enumerate(limits)
    ]
    return {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": profile_id,
            "stackLevel": 1,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {"chargingRateUnit": unit, "chargingSchedulePeriod": periods},
        },
    }


def test_guard_caps_each_period_in_its_unit_and_keeps_the_original_untouched() -> None:
    payload = _v16_max(5, "A", [32.0, 8.0], phases=1)
    verdict = judge(v16, "SetChargingProfile", payload, RESERVED, 4600.0, StationCaps(RateUnit.A))
    assert verdict.payload is not None and verdict.max_profile_id == 5
    periods = verdict.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [20.0, 8.0]  # 4600 W / 230 V / 1 phase
    assert payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 32.0
    schemas.validate(OcppVersion.V16, "SetChargingProfile", verdict.payload, request=True)
    three_phase = judge(v16, "SetChargingProfile", _v16_max(5, "A", [32.0]), RESERVED, 6900.0, None)
    assert three_phase.payload is not None
    assert (
        three_phase.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
        == 10.0
    )


def test_guard_refuses_reserved_ids_and_reapplies_after_clear() -> None:
    assert judge(v16, "SetChargingProfile", _v16_max(809002, "W", [1.0]), RESERVED, 1e6, None).answer == {
        "status": "Rejected"
    }
    assert judge(v16, "ClearChargingProfile", {"id": 809001}, RESERVED, 1e6, None).answer == {
        "status": "Unknown"
    }
    assert judge(v201, "ClearChargingProfile", {"chargingProfileId": 809002}, RESERVED, 1e6, None).answer == {
        "status": "Unknown"
    }
    assert judge(v16, "ClearChargingProfile", {}, RESERVED, 1e6, None).reapply
    tx = _v16_max(7, "W", [90000.0])
    tx["csChargingProfiles"]["chargingProfilePurpose"] = "TxDefaultProfile"  # type: ignore[index]
    verdict = judge(v16, "SetChargingProfile", tx, RESERVED, 1000.0, None)
    assert verdict.payload is None and verdict.answer is None and not verdict.reapply
    assert judge(v16, "Reset", {"type": "Soft"}, RESERVED, 1000.0, None).answer is None


def test_limit_notices_are_schema_valid_for_both_identities() -> None:
    action, payload = limit_notice(v201, True, 7000.0, 1.7e9)
    assert action == "NotifyChargingLimit" and payload["chargingLimit"]["chargingLimitSource"] == "SO"
    schemas.validate(OcppVersion.V201, action, payload, request=True)
    action, payload = limit_notice(v201, False, 7000.0, 1.7e9)
    assert (action, payload) == ("ClearedChargingLimit", {"chargingLimitSource": "SO"})
    action, payload = limit_notice(v16, True, 7000.0, 1.7e9)
    assert action == "DataTransfer" and payload["messageId"] == "NotifyChargingLimit"
    schemas.validate(OcppVersion.V16, action, payload, request=True)


def test_outbox_keeps_order_and_maps_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path)
    box.append("A", "StartTransaction", '[2,"1","StartTransaction",{}]', 77)
    box.append("B", "MeterValues", "b")
    box.append("A", "MeterValues", "a2")
    box.map_tx("A", 77, 5)
    box.close()
    box = Outbox(path)  # durable
    rows = box.pending("A")
    assert [(r.action, r.local_tx) for r in rows] == [("StartTransaction", 77), ("MeterValues", None)]
    box.delete("A", rows[0].seq)
    assert [r.raw for r in box.pending("A")] == ["a2"] and box.has_pending("B")
    assert box.tx_map("A") == {77: 5} and box.tx_map("B") == {}
    box.close()


def test_outbox_size_bound_warns_before_it_drops_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outbox_module, "MAX_ROWS_PER_STATION", 10)
    box = Outbox(tmp_path / "o.sqlite3")
    caplog.set_level(logging.WARNING, "ocpp_side.outbox")
    dropped = [box.append("A", "MeterValues", f"m{i}", None, 1000.0 + i) for i in range(8)]
    assert dropped == [0] * 8 and box.depth == 8
    assert [r.message for r in caplog.records] == [
        "A: outbox holds 8 rows for the CSMS; at 10 the oldest are dropped"
    ]  # warned at 80 %, nothing lost yet
    for i in range(8, 12):
        box.append("A", "MeterValues", f"m{i}", None, 1000.0 + i)
    box.append("B", "MeterValues", "b0", None, 1000.0)
    assert [r.raw for r in box.pending("A")] == [f"m{i}" for i in range(2, 12)]
    assert box.depth == 11 and box.count() == 11
    assert "dropping the 1 oldest" in caplog.records[-1].message
    box.close()
    assert Outbox(tmp_path / "o.sqlite3").depth == 11  # counted again from the file


def test_outbox_age_bound_drops_rows_older_than_a_week(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    caplog.set_level(logging.WARNING, "ocpp_side.outbox")
    week = outbox_module.MAX_AGE_S
    box.append("A", "StatusNotification", "old", None, 0.0)
    box.append("A", "StatusNotification", "new", None, 0.5 * week)
    assert box.expire_all(0.85 * week) == 0 and "old" in [r.raw for r in box.pending("A")]
    assert "h old; at 168 h they are dropped" in caplog.records[-1].message
    assert box.expire_all(week + 1.0) == 1
    assert [r.raw for r in box.pending("A")] == ["new"] and box.depth == 1
    box.append("A", "StatusNotification", "later", None, 1.6 * week)  # expires "new" on the way
    assert [r.raw for r in box.pending("A")] == ["later"]


def test_outbox_keeps_translation_state_and_the_station_link(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    assert box.load_state("A") is None and box.link("A") is None
    box.save_state("A", '{"next_tx16":3}')
    box.save_link("A", "ocpp2.0.1", '[2,"b","BootNotification",{}]')
    box.close()
    box = Outbox(tmp_path / "o.sqlite3")
    assert box.load_state("A") == '{"next_tx16":3}'
    link = box.link("A")
    assert link is not None and link.subprotocol == "ocpp2.0.1" and link.boot is not None


def test_station_cap_notices_follow_the_significance_threshold() -> None:
    notices = StationCapNotices(0.1)
    assert not notices.update(None)  # nothing told, nothing to clear
    assert notices.update(10000.0)  # first cap: told
    assert not notices.update(9500.0)  # 5 % of 10 kW: not significant
    assert not notices.update(9100.0)  # 9 % of the cap last told
    assert notices.update(8900.0) and notices.told_w == 8900.0  # 11 %
    assert notices.update(11000.0)  # up: a fraction of the larger one
    assert notices.update(None) and notices.told_w is None  # lifted: cleared once
    assert not notices.update(None)
    assert so_limit_call(None, 0.0) == ("ClearedChargingLimit", {"chargingLimitSource": "SO"})
    action, payload = so_limit_call(7400.0, 0.0)
    assert action == "NotifyChargingLimit" and "evseId" not in payload
    schemas.validate(OcppVersion.V201, action, payload, request=True)


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    delays = backoff_s(1.0, 8.0, random.Random(1))
    got = [next(delays) for _ in range(6)]
    for delay, ceiling in zip(got, (1, 2, 4, 8, 8, 8), strict=True):
        assert ceiling / 2 <= delay <= ceiling
