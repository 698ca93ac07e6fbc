"""Did every transaction the stations ran reach the CSMS whole, in order, once? (pure)

Two sides, judged against each other station by station:

- what the stations ran (``ran_transactions``, from a simulated station's events:
  ``tx_started``, ``meter`` while it was open, ``tx_ended``; a 1.6 station also says its
  meterStart and meterStop);
- what the CSMS received (``csms_transactions``, from the recording CSMS's frames: the
  2.0.1 ``TransactionEvent`` CALLs of the station's link, in arrival order, grouped by
  ``transactionInfo.transactionId``).

The rules (``judge``), each broken one a problem in words:

1. per CSMS transaction: the first event is ``Started``, an ended one's last is
   ``Ended`` and nothing follows it, everything between is ``Updated``; the events'
   ``timestamp``s never go back, and none is later than its arrival (plus
   ``CLOCK_SKEW_S``): a station's local time read in the wrong zone shows here;
2. ``seqNo`` strictly increasing in arrival order and without a gap (a gap is an event
   that never arrived), and no ``seqNo`` twice (an event received twice). One repeat is
   no duplicate: the same event again (the same payload, under the same or a new message
   id) when the CSMS's answer to the earlier copy never left it (the link closed under
   it): delivery is at least once, the gateway could not know. It is counted once and
   reported as resent;
3. the transactions of a station do not overlap: the next one's first event arrives
   after the previous one's last (one connector, one EV at a time: in order);
4. one CSMS transaction per station transaction, the k-th for the k-th (none missing,
   none extra); its ``Updated`` events carrying meter values are as many as the
   MeterValues the station sent while it was open, and a 1.6 station's meterStart /
   meterStop are the ``Transaction.Begin`` / ``Transaction.End`` energy register;
   a still open station transaction has no ``Ended`` at the CSMS yet.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

ENERGY = "Energy.Active.Import.Register"
ENERGY_TOLERANCE_WH = 0.5  # 1.6 meterStart/meterStop are integers, 2.0.1 numbers
CLOCK_SKEW_S = 2.0  # how far a station's timestamp may be ahead of the CSMS's clock (loopback)


class _Event(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def detail(self) -> str: ...

    @property
    def value(self) -> float | None: ...


class _Frame(Protocol):
    @property
    def at_s(self) -> float: ...

    @property
    def station_id(self) -> str: ...

    @property
    def direction(self) -> str: ...

    @property
    def action(self) -> str | None: ...

    @property
    def message(self) -> list[Any] | None: ...


@dataclass(frozen=True, slots=True)
class RanTransaction:
    """One transaction as the station ran it."""

    station_tx_id: str  # as the station knows it (1.6: the id the gateway gave it)
    meter_start_wh: float | None  # 1.6 only
    meter_stop_wh: float | None  # 1.6 only, once ended
    meters: int  # MeterValues sent while it was open
    ended: bool


@dataclass(frozen=True, slots=True)
class CsmsEvent:
    """One TransactionEvent as the CSMS received it."""

    message_id: str
    payload: str  # canonical JSON, to tell an exact repeat
    arrived_s: float  # the CSMS's clock
    timestamp_s: float | None  # the event's own ``timestamp`` (None: unreadable)
    event_type: str
    seq_no: int
    transaction_id: str
    has_meter: bool
    begin_wh: float | None  # Transaction.Begin energy register, if any
    end_wh: float | None  # Transaction.End energy register, if any


@dataclass(frozen=True, slots=True)
class CsmsTransaction:
    transaction_id: str
    events: tuple[CsmsEvent, ...]
    first_index: int  # arrival positions among the station's TransactionEvents
    last_index: int


@dataclass
class Verdict:
    stations: int = 0
    ran: int = 0  # station transactions judged
    open: int = 0  # of which still open at the station
    events: int = 0  # TransactionEvents at the CSMS
    resent: int = 0  # of which repeats of a call whose answer was lost (rule 2)
    problems: list[str] = field(default_factory=list)

    @property
    def whole(self) -> int:
        """Transactions the stations ended, whole at the CSMS (all of them, or 0 on a problem)."""
        return 0 if self.problems else self.ran - self.open

    def describe(self) -> str:
        ended = self.ran - self.open
        resent = f", {self.resent} resent after a lost answer" if self.resent else ""
        counts = f"{ended} ended, {self.open} open at {self.stations} stations, {self.events} events{resent}"
        if not self.problems:
            return f"{self.whole} whole ({counts})"
        more = f" (+{len(self.problems) - 2} more)" if len(self.problems) > 2 else ""
        return f"{len(self.problems)} problem(s): " + "; ".join(self.problems[:2]) + f"{more} ({counts})"


def ran_transactions(events: Iterable[_Event]) -> list[RanTransaction]:
    """The transactions a station ran, in order, from its events."""
    out: list[RanTransaction] = []
    current: dict[str, Any] | None = None
    for event in events:
        if event.kind == "tx_started":
            if current is not None:  # started again without an end: keep what we know
                out.append(_ran(current, ended=False))
            current = {"id": event.detail, "start": event.value, "stop": None, "meters": 0}
        elif event.kind == "meter" and current is not None:
            current["meters"] += 1
        elif event.kind == "tx_ended" and current is not None:
            current["stop"] = event.value
            out.append(_ran(current, ended=True))
            current = None
    if current is not None:
        out.append(_ran(current, ended=False))
    return out


def _ran(raw: dict[str, Any], ended: bool) -> RanTransaction:
    return RanTransaction(raw["id"], raw["start"], raw["stop"], raw["meters"], ended)


def csms_transactions(
    frames: Iterable[_Frame], station_id: str, undelivered: Collection[tuple[str, str]] = ()
) -> tuple[list[CsmsTransaction], int, int]:
    """The station's transactions at the CSMS, in order of their first event; how many
    TransactionEvents arrived; how many of those were resent after a lost answer (rule 2:
    ``undelivered`` has the (station id, message id) of answers that never left the CSMS).
    Malformed events are left to the schema check."""
    grouped: dict[str, list[tuple[int, CsmsEvent]]] = {}
    index = resent = 0
    seen: dict[str, str] = {}  # payload -> message id of its latest copy
    for frame in frames:
        if frame.station_id != station_id or frame.direction != "in" or frame.action != "TransactionEvent":
            continue
        msg = frame.message
        event = _event(str(msg[1]), msg[3], frame.at_s) if msg is not None and len(msg) > 3 else None
        if event is None:
            continue
        index += 1
        earlier = seen.get(event.payload)
        seen[event.payload] = event.message_id
        if earlier is not None and (station_id, earlier) in undelivered:
            resent += 1
            continue
        grouped.setdefault(event.transaction_id, []).append((index, event))
    txs = [
        CsmsTransaction(tx_id, tuple(e for _, e in items), items[0][0], items[-1][0])
        for tx_id, items in grouped.items()
    ]
    return sorted(txs, key=lambda t: t.first_index), index, resent


def _event(message_id: str, payload: Any, arrived_s: float) -> CsmsEvent | None:
    if not isinstance(payload, dict):
        return None
    info = payload.get("transactionInfo")
    seq = payload.get("seqNo")
    if not isinstance(info, dict) or not isinstance(seq, int) or "transactionId" not in info:
        return None
    meter = payload.get("meterValue") or []
    return CsmsEvent(
        message_id=message_id,
        payload=json.dumps(payload, sort_keys=True),
        arrived_s=arrived_s,
        timestamp_s=_epoch(payload.get("timestamp")),
        event_type=str(payload.get("eventType")),
        seq_no=seq,
        transaction_id=str(info["transactionId"]),
        has_meter=bool(meter),
        begin_wh=_energy(meter, "Transaction.Begin"),
        end_wh=_energy(meter, "Transaction.End"),
    )


def _epoch(text: Any) -> float | None:
    try:
        stamp = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return stamp.timestamp() if stamp.tzinfo is not None else None


def _energy(meter_values: Any, context: str) -> float | None:
    for value in meter_values if isinstance(meter_values, list) else ():
        for sampled in value.get("sampledValue", ()) if isinstance(value, dict) else ():
            if (
                isinstance(sampled, dict)
                and sampled.get("measurand", ENERGY) == ENERGY
                and sampled.get("context") == context
                and isinstance(sampled.get("value"), int | float)
            ):
                unit = sampled.get("unitOfMeasure") or {}
                scale = (1000.0 if unit.get("unit") == "kWh" else 1.0) * 10.0 ** int(
                    unit.get("multiplier", 0)
                )
                return float(sampled["value"]) * scale
    return None


def judge(
    ran: Mapping[str, Sequence[RanTransaction]],
    frames: Sequence[_Frame],
    native: Iterable[str] = (),
    undelivered: Collection[tuple[str, str]] = (),
) -> Verdict:
    """Every station of ``ran`` against the CSMS's ``frames`` (rules in the module doc).

    ``native``: stations relayed verbatim (2.0.1): their ``transactionId`` must be the
    station's own as well. ``undelivered``: (station id, message id) of the CSMS's
    answers that never left it (``SimCsms.undelivered``)."""
    verdict = Verdict(stations=len(ran))
    native_ids = set(native)
    for station_id, runs in ran.items():
        at_csms, count, resent = csms_transactions(frames, station_id, undelivered)
        verdict.ran += len(runs)
        verdict.open += sum(not r.ended for r in runs)
        verdict.events += count
        verdict.resent += resent
        verdict.problems += _judge_station(station_id, runs, at_csms, station_id in native_ids)
    return verdict


def _judge_station(
    station_id: str, runs: Sequence[RanTransaction], at_csms: Sequence[CsmsTransaction], native: bool
) -> list[str]:
    problems: list[str] = []
    for tx in at_csms:
        problems += [f"{station_id} tx {tx.transaction_id}: {p}" for p in _shape(tx)]
    for before, after in itertools.pairwise(at_csms):
        if after.first_index < before.last_index:
            problems.append(
                f"{station_id}: tx {after.transaction_id} began before tx {before.transaction_id} ended"
            )
    if len(at_csms) < len(runs):
        problems.append(f"{station_id}: {len(runs) - len(at_csms)} of {len(runs)} transaction(s) missing")
    elif len(at_csms) > len(runs):
        problems.append(f"{station_id}: {len(at_csms) - len(runs)} transaction(s) more than it ran")
    for k, (run, tx) in enumerate(zip(runs, at_csms, strict=False), start=1):
        problems += [f"{station_id} tx #{k}: {p}" for p in _match(run, tx, native)]
    return problems


def _shape(tx: CsmsTransaction) -> list[str]:
    """Rules 1 and 2 for one CSMS transaction."""
    problems: list[str] = []
    events = tx.events
    types = [e.event_type for e in events]
    if types[0] != "Started":
        problems.append(f"first event {types[0]}, not Started")
    if types.count("Started") > 1:
        problems.append(f"Started {types.count('Started')} times")
    if types.count("Ended") > 1:
        problems.append(f"Ended {types.count('Ended')} times")
    if "Ended" in types and types.index("Ended") != len(types) - 1:
        problems.append(f"{len(types) - 1 - types.index('Ended')} event(s) after Ended")
    for e in events:
        if e.timestamp_s is None:
            problems.append(f"seqNo {e.seq_no}: timestamp without a zone or unreadable")
        elif e.timestamp_s > e.arrived_s + CLOCK_SKEW_S:
            problems.append(
                f"seqNo {e.seq_no}: timestamp {e.timestamp_s - e.arrived_s:.1f} s after it arrived"
            )
    stamps = [(e.seq_no, e.timestamp_s) for e in events if e.timestamp_s is not None]
    for (seq_a, a), (seq_b, b) in itertools.pairwise(stamps):
        if b < a:
            problems.append(f"seqNo {seq_b}: timestamp {a - b:.3f} s before seqNo {seq_a}'s")
            break
    seqs = [e.seq_no for e in events]
    twice = sorted({s for s in seqs if seqs.count(s) > 1})
    if twice:
        problems.append(f"seqNo {', '.join(map(str, twice))} twice")
    for a, b in itertools.pairwise(seqs):
        if b <= a and b not in twice:
            problems.append(f"seqNo {b} after {a}")
            break
    distinct = sorted(set(seqs))
    gaps = [
        f"{a + 1}..{b - 1}" if b - a > 2 else str(a + 1) for a, b in itertools.pairwise(distinct) if b - a > 1
    ]
    if gaps:
        problems.append(f"seqNo {', '.join(gaps)} missing")
    return problems


def _match(run: RanTransaction, tx: CsmsTransaction, native: bool) -> list[str]:
    """Rule 4: the k-th CSMS transaction is the station's k-th."""
    problems: list[str] = []
    if native and tx.transaction_id != run.station_tx_id:
        problems.append(f"transactionId {tx.transaction_id} is not the station's {run.station_tx_id}")
    ended = any(e.event_type == "Ended" for e in tx.events)
    if run.ended and not ended:
        problems.append("no Ended at the CSMS")
    if not run.ended and ended:
        problems.append("Ended at the CSMS, still open at the station")
    meters = sum(e.event_type == "Updated" and e.has_meter for e in tx.events)
    if meters != run.meters:
        problems.append(f"{meters} Updated with meter values at the CSMS, {run.meters} MeterValues sent")
    begin = next((e.begin_wh for e in tx.events if e.begin_wh is not None), None)
    end = next((e.end_wh for e in tx.events if e.end_wh is not None), None)
    for what, sent, got in (("meterStart", run.meter_start_wh, begin), ("meterStop", run.meter_stop_wh, end)):
        if sent is not None and (got is None or abs(got - sent) > ENERGY_TOLERANCE_WH):
            problems.append(f"{what} {sent:g} Wh, the CSMS has {'none' if got is None else f'{got:g} Wh'}")
    return problems
