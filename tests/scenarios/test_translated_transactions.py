"""The judge of transactions at the CSMS (``scenarios.csms_transactions``): pure, frames in,
problems out; each rule of its module doc broken once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from scenarios.csms_transactions import RanTransaction, judge, ran_transactions
from scenarios.sim_csms import Frame
from scenarios.sim_station import StationEvent

CP = "CP1"
BASE_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ARRIVED_S = BASE_S + 3600.0  # every test frame arrives after every test timestamp
_ids = iter(range(1_000_000))


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(BASE_S + seconds, UTC).isoformat().replace("+00:00", "Z")


def event(
    event_type: str,
    seq: int,
    tx: str = "T1",
    *,
    meter: bool = False,
    begin_wh: float | None = None,
    end_wh: float | None = None,
    station: str = CP,
    message_id: str | None = None,
    timestamp: str | None = None,
) -> Frame:
    values: list[dict[str, Any]] = []
    if meter:
        values.append({"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": 7200}]})
    for context, wh in (("Transaction.Begin", begin_wh), ("Transaction.End", end_wh)):
        if wh is not None:
            sampled = {"value": wh, "context": context, "measurand": "Energy.Active.Import.Register"}
            values.append({"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [sampled]})
    payload: dict[str, Any] = {
        "eventType": event_type,
        "timestamp": stamp(seq) if timestamp is None else timestamp,
        "triggerReason": "Trigger",
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx},
    }
    if values:
        payload["meterValue"] = values
    mid = message_id or f"m{next(_ids)}"
    return Frame(ARRIVED_S, station, "in", json.dumps([2, mid, "TransactionEvent", payload]), "ocpp2.0.1")


def whole(tx: str = "T1", updates: int = 2, first_seq: int = 0) -> list[Frame]:
    frames = [event("Started", first_seq, tx)]
    frames += [event("Updated", first_seq + 1 + i, tx, meter=True) for i in range(updates)]
    return [*frames, event("Ended", first_seq + 1 + updates, tx)]


def ran(*meters: int, open_last: bool = False) -> list[RanTransaction]:
    out = [RanTransaction(f"s{i}", None, None, m, True) for i, m in enumerate(meters)]
    if open_last:
        last = out[-1]
        out[-1] = RanTransaction(last.station_tx_id, None, None, last.meters, False)
    return out


def problems(frames: list[Frame], runs: list[RanTransaction], **kwargs: Any) -> list[str]:
    return judge({CP: runs}, frames, **kwargs).problems


def test_two_whole_transactions_in_order() -> None:
    verdict = judge({CP: ran(2, 3)}, whole("T1", 2) + whole("T2", 3, first_seq=4))
    assert verdict.problems == []
    assert (verdict.whole, verdict.ran, verdict.events) == (2, 2, 9)
    assert verdict.describe().startswith("2 whole (2 ended, 0 open at 1 stations, 9 events")


def test_an_open_transaction_has_no_ended_yet() -> None:
    frames = whole("T1", 1) + [event("Started", 0, "T2"), event("Updated", 1, "T2", meter=True)]
    verdict = judge({CP: ran(1, 1, open_last=True)}, frames)
    assert verdict.problems == [] and verdict.whole == 1 and verdict.open == 1
    assert problems(whole("T1", 1), ran(1, open_last=True)) == [
        "CP1 tx #1: Ended at the CSMS, still open at the station"
    ]


def test_an_event_twice_under_another_message_id() -> None:
    frames = whole("T1", 2)
    frames.insert(2, event("Updated", 1, "T1", meter=True))
    found = problems(frames, ran(2))
    assert "CP1 tx T1: seqNo 1 twice" in found
    assert any("3 Updated with meter values at the CSMS, 2 MeterValues sent" in p for p in found)


def test_an_exact_repeat_after_a_lost_answer_is_resent_not_twice() -> None:
    frames = whole("T1", 2)
    frames.insert(3, frames[2])  # the same call again: same message id, same payload
    repeated = str(frames[2].message[1])  # type: ignore[index]
    verdict = judge({CP: ran(2)}, frames, undelivered={(CP, repeated)})
    assert verdict.problems == [] and verdict.resent == 1
    assert "1 resent after a lost answer" in verdict.describe()
    # the CSMS had answered it: a repeat is then an event twice
    assert "CP1 tx T1: seqNo 2 twice" in problems(frames, ran(2))
    # a retry under a new message id (as OCPP 2.0.1 Part 4 wants) is resent all the same
    frames[3] = Frame(ARRIVED_S, CP, "in", frames[2].raw.replace(repeated, "fresh-id"), "ocpp2.0.1")
    verdict = judge({CP: ran(2)}, frames, undelivered={(CP, repeated)})
    assert verdict.problems == [] and verdict.resent == 1


def test_a_gap_is_an_event_missing() -> None:
    frames = whole("T1", 3)
    del frames[2]
    found = problems(frames, ran(2))
    assert found == ["CP1 tx T1: seqNo 2 missing"]


def test_seqno_out_of_order() -> None:
    frames = whole("T1", 2)
    frames[1], frames[2] = frames[2], frames[1]
    assert problems(frames, ran(2)) == [
        "CP1 tx T1: seqNo 1: timestamp 1.000 s before seqNo 2's",
        "CP1 tx T1: seqNo 1 after 2",
    ]


def test_timestamps_never_go_back_nor_run_ahead_of_arrival() -> None:
    later = whole("T1", 1)
    later[1] = event("Updated", 1, "T1", meter=True, timestamp=stamp(-5))
    assert problems(later, ran(1)) == ["CP1 tx T1: seqNo 1: timestamp 5.000 s before seqNo 0's"]
    ahead = whole("T1", 1)  # local time read in the wrong zone: an hour ahead of the CSMS
    ahead[2] = event("Ended", 2, "T1", timestamp=stamp(7200))
    assert problems(ahead, ran(1)) == ["CP1 tx T1: seqNo 2: timestamp 3600.0 s after it arrived"]
    naive = whole("T1", 1)
    naive[2] = event("Ended", 2, "T1", timestamp="2026-01-01T00:00:02")
    assert problems(naive, ran(1)) == ["CP1 tx T1: seqNo 2: timestamp without a zone or unreadable"]


def test_started_first_ended_last() -> None:
    frames = whole("T1", 1)
    frames.append(event("Updated", 3, "T1", meter=True))
    assert "CP1 tx T1: 1 event(s) after Ended" in problems(frames, ran(2))
    assert "CP1 tx T2: first event Updated, not Started" in problems(
        [event("Updated", 1, "T2", meter=True), event("Ended", 2, "T2")], ran(1)
    )


def test_no_ended_for_an_ended_transaction() -> None:
    assert problems(whole("T1", 2)[:-1], ran(2)) == ["CP1 tx #1: no Ended at the CSMS"]


def test_a_transaction_missing_or_extra() -> None:
    assert problems(whole("T1", 2), ran(2, 1)) == ["CP1: 1 of 2 transaction(s) missing"]
    assert problems(whole("T1", 2) + whole("T2", 0), ran(2)) == ["CP1: 1 transaction(s) more than it ran"]
    assert problems([], ran(1)) == ["CP1: 1 of 1 transaction(s) missing"]


def test_transactions_of_one_station_do_not_overlap() -> None:
    first, second = whole("T1", 1), whole("T2", 1)
    frames = [first[0], second[0], *first[1:], *second[1:]]
    assert problems(frames, ran(1, 1)) == ["CP1: tx T2 began before tx T1 ended"]


def test_meter_values_and_16_meter_start_stop_must_match() -> None:
    frames = [
        event("Started", 0, "T1", begin_wh=1000),
        event("Updated", 1, "T1", meter=True),
        event("Ended", 2, "T1", end_wh=1500),
    ]
    good = RanTransaction("1", 1000.0, 1500.0, 1, True)
    assert problems(frames, [good]) == []
    assert problems(frames, [RanTransaction("1", 1000.0, 1600.0, 1, True)]) == [
        "CP1 tx #1: meterStop 1600 Wh, the CSMS has 1500 Wh"
    ]
    assert problems(frames, [RanTransaction("1", 1000.0, 1500.0, 2, True)]) == [
        "CP1 tx #1: 1 Updated with meter values at the CSMS, 2 MeterValues sent"
    ]


def test_a_native_station_keeps_its_transaction_id() -> None:
    runs = [RanTransaction("T1", None, None, 2, True)]
    assert problems(whole("T1", 2), runs, native=[CP]) == []
    assert problems(whole("X9", 2), runs, native=[CP]) == [
        "CP1 tx #1: transactionId X9 is not the station's T1"
    ]


def test_other_stations_and_frames_are_not_mixed_in() -> None:
    other = [
        event("Started", 0, "T9", station="CP2"),
        event("Updated", 1, "T9", meter=True, station="CP2"),
        event("Ended", 2, "T9", station="CP2"),
    ]
    frames = [*whole("T1", 1)[:2], *other, whole("T1", 1)[2]]
    frames.append(Frame(ARRIVED_S, CP, "out", '[3,"x",{}]', "ocpp2.0.1"))  # an answer: not an event
    verdict = judge({CP: ran(1), "CP2": ran(1)}, frames)
    assert verdict.problems == [] and verdict.whole == 2 and verdict.stations == 2


def test_what_the_station_ran_from_its_events() -> None:
    events = [
        StationEvent(1.0, "meter"),  # before any transaction: not counted
        StationEvent(2.0, "tx_started", "7", 100.0),
        StationEvent(3.0, "meter"),
        StationEvent(4.0, "meter"),
        StationEvent(5.0, "tx_ended", "7", 180.0),
        StationEvent(6.0, "meter"),
        StationEvent(7.0, "tx_started", "8", 180.0),
        StationEvent(8.0, "meter"),
    ]
    assert ran_transactions(events) == [
        RanTransaction("7", 100.0, 180.0, 2, True),
        RanTransaction("8", 180.0, None, 1, False),
    ]
