"""``ocpp809 audit``: read the audit log and the compliance records, and check the chain.

Reads the store read-only (``gateway.store.AuditReader``), so it runs beside a running
gateway without disturbing it. Times are ISO 8601 in UTC; reasons are said in words.

Exit codes: 0 done (``verify``: the chain is intact), 1 ``verify`` found the chain broken
(or ``show`` found no such entry), 2 bad arguments or configuration, 3 the store cannot be
read.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.core.compliance import ComplianceRecord, record_to_dict, stations_by_answer, summary
from gateway.core.model import RejectReason
from gateway.errors import StoreError
from gateway.store import COMPLIANCE_KIND, AuditEntry, AuditReader, ChainReport

EXIT_BROKEN = 1
EXIT_UNREADABLE = 3

# Every reason code the audit log can hold, in words.
REASON_WORDS: dict[str, str] = {
    "ok": "accepted",
    RejectReason.NOT_FINITE: "refused: not a finite number",
    RejectReason.BELOW_MIN: "refused: below the minimum limit (limits.min_limit_w)",
    RejectReason.ABOVE_MAX: "refused: above the maximum limit (limits.max_limit_w)",
    RejectReason.STALE: "refused: its time tag is too old (limits.max_command_age_s)",
    RejectReason.FUTURE: "refused: its time tag is in the future (limits.future_tolerance_s)",
    RejectReason.STORE_FAILED: "refused: the store could not keep it",
    RejectReason.INTERNAL_ERROR: "refused: internal error",
    RejectReason.TIMEOUT: "refused: the gateway did not decide in time (iec104.command_timeout_s)",
    RejectReason.UNKNOWN_POINT: "refused: no setpoint at this information object address",
    RejectReason.WRONG_COMMON_ADDRESS: "refused: wrong common address",
    RejectReason.UNEXPECTED_CAUSE: "refused: unexpected cause of transmission",
    RejectReason.TEST_COMMAND: "test command (T bit): answered, never applied",
    "released": "station released: its commitment no longer counts",
    "refused": "station release refused",
    "complied": "the site complied",
    "not_complied": "the site did not comply before the record closed",
    "open": "record still open",
}
ENTRY_WORDS: dict[str, str] = {
    "start": "gateway started",
    "hold": "hold started (DSO link lost)",
    "hold_end": "hold ended",
    "fallback": "fallback started",
    "fallback_end": "fallback ended",
    "limit_change": "limit changed",
    COMPLIANCE_KIND: "compliance record",
    "station_release": "station release",
}


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-11-21T08:39:11.123Z``)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """An ISO 8601 date or time for ``--since``/``--until``; without a zone it is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-21 or 2026-11-21T08:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def reason_words(entry: AuditEntry) -> str:
    kind, reason = entry.row.kind, entry.row.reason
    if entry.body is not None and kind != COMPLIANCE_KIND:
        return f"{ENTRY_WORDS.get(kind, kind)}, mode {reason}"
    return REASON_WORDS.get(reason, reason)


def describe(entry: AuditEntry, record: ComplianceRecord | None = None) -> str:
    """One line in words for ``audit list``."""
    row = entry.row
    if row.kind == COMPLIANCE_KIND:
        own = entry.record()
        if own is None:
            return "compliance record (unreadable)"
        anchor = "no anchor" if own.anchor_id is None else f"#{own.anchor_id}"
        return f"record of {anchor}: {summary(own)}"
    if entry.body is not None:
        value = "" if row.value_w is None else f" {row.value_w:g} W"
        return f"{ENTRY_WORDS.get(row.kind, row.kind)}:{value} ({row.reason}): {row.detail}"
    if row.kind == "station_release":
        return f"station release by {row.peer}: {REASON_WORDS.get(row.reason, row.reason)} ({row.detail})"
    value = "no value" if row.value_w is None else f"{row.value_w:g} W"
    text = f"{row.kind} setpoint {value} from {row.peer or 'unknown'}: {reason_words(entry)}"
    if row.detail:
        text += f" ({row.detail})"
    if record is not None:
        ttc = record.time_to_comply_s
        text += f"; {'complying' if not record.closed else record.outcome.replace('_', ' ')}"
        text += "" if ttc is None else f" after {ttc:.2f} s"
    return text


# -- the JSON form -----------------------------------------------------------------------


def _with_iso(data: dict[str, Any]) -> dict[str, Any]:
    """Every ``*_at_s`` epoch field gets its ISO 8601 twin ``*_at``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "at_s" or key.endswith("_at_s"):
            out[key[:-2]] = iso(value)
        out[key] = (
            [_with_iso(v) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else value
        )
    return out


def record_json(record: ComplianceRecord) -> dict[str, Any]:
    return _with_iso(record_to_dict(record))


def entry_json(entry: AuditEntry, record: ComplianceRecord | None) -> dict[str, Any]:
    row = entry.row
    data: dict[str, Any] = {
        "id": entry.id,
        "time": iso(row.received_at_s),
        "time_s": row.received_at_s,
        "kind": row.kind,
        "peer": row.peer,
        "value_w": row.value_w,
        "time_tag": iso(row.time_tag_s),
        "time_tag_s": row.time_tag_s,
        "accepted": row.accepted,
        "reason": row.reason,
        "reason_text": reason_words(entry),
        "detail": row.detail,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
    if entry.body is not None and row.kind != COMPLIANCE_KIND:
        try:
            data["entry"] = _with_iso(json.loads(entry.body))
        except ValueError:
            data["entry"] = None
    if record is not None:
        data["record"] = record_json(record)
    return data


def chain_json(report: ChainReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "entries": report.entries,
        "head_id": report.head_id,
        "head_hash": report.head_hash,
        "first_bad_id": report.first_bad_id,
        "problem": report.problem,
    }


CSV_COLUMNS = (
    "id",
    "time",
    "kind",
    "peer",
    "value_w",
    "time_tag",
    "accepted",
    "reason",
    "reason_text",
    "detail",
    "record_kind",
    "limit_w",
    "opened_at",
    "power_before_w",
    "enforced_at",
    "time_to_enforce_s",
    "complied_at",
    "time_to_comply_s",
    "peak_power_w",
    "outcome",
    "closed_at",
    "close_reason",
    "stations",
    "prev_hash",
    "hash",
)


def csv_row(entry: AuditEntry, record: ComplianceRecord | None) -> dict[str, object]:
    row = entry.row
    out: dict[str, object] = {
        "id": entry.id,
        "time": iso(row.received_at_s),
        "kind": row.kind,
        "peer": row.peer,
        "value_w": row.value_w,
        "time_tag": iso(row.time_tag_s),
        "accepted": int(row.accepted),
        "reason": row.reason,
        "reason_text": reason_words(entry),
        "detail": row.detail,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
    if record is not None:
        answers = stations_by_answer(record.stations)
        out |= {
            "record_kind": record.kind.value,
            "limit_w": record.limit_w,
            "opened_at": iso(record.opened_at_s),
            "power_before_w": record.power_before_w,
            "enforced_at": iso(record.enforced_at_s),
            "time_to_enforce_s": record.time_to_enforce_s,
            "complied_at": iso(record.complied_at_s),
            "time_to_comply_s": record.time_to_comply_s,
            "peak_power_w": record.peak_power_w,
            "outcome": record.outcome,
            "closed_at": iso(record.closed_at_s),
            "close_reason": record.close_reason,
            "stations": "; ".join(f"{k}: {v}" for k, v in sorted(answers.items())),
        }
    return {k: "" if v is None else v for k, v in out.items()}


# -- the commands ------------------------------------------------------------------------


def _reader(args: argparse.Namespace) -> AuditReader:
    path = args.store
    if path is None:
        from gateway.config import load_config

        path = load_config(args.config).store.path
    return AuditReader(path)


def _records_for(reader: AuditReader, entries: Iterable[AuditEntry]) -> dict[int, ComplianceRecord]:
    """Each entry's record: a compliance row's own, an anchor's (command, fallback) joined."""
    found: dict[int, ComplianceRecord] = {}
    anchors = []
    for entry in entries:
        own = entry.record()
        if own is not None:
            found[entry.id] = own
        elif entry.row.accepted and (entry.is_command or entry.row.kind == "fallback"):
            anchors.append(entry.id)
    found.update(reader.records_of(anchors))
    return found


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    with _reader(args) as reader:
        entries = reader.entries(args.since, args.until)
        if args.last is not None:
            entries = entries[-args.last :] if args.last > 0 else []
        records = _records_for(reader, entries)
        current = reader.open_record()
    for entry in entries:
        record = records.get(entry.id) if entry.row.kind != COMPLIANCE_KIND else None
        out.write(
            f"#{entry.id:<6} {iso(entry.row.received_at_s)}  {entry.row.kind:<14} {describe(entry, record)}\n"
        )
    if current is not None:
        anchor = "no anchor" if current.anchor_id is None else f"#{current.anchor_id}"
        out.write(
            f"{'open':<7} {iso(current.opened_at_s)}  {COMPLIANCE_KIND:<14} record of {anchor}: {summary(current)}\n"
        )
    return 0


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    with _reader(args) as reader:
        entry = reader.entry(args.id)
        if entry is None:
            print(f"error: no audit entry #{args.id}", file=sys.stderr)
            return 1
        record = _records_for(reader, [entry]).get(entry.id)
    row = entry.row
    fields: list[tuple[str, object]] = [
        ("entry", f"#{entry.id}"),
        ("time", iso(row.received_at_s)),
        ("kind", f"{row.kind} ({ENTRY_WORDS.get(row.kind, 'DSO command')})"),
        ("peer", row.peer),
        ("value", None if row.value_w is None else f"{row.value_w:g} W"),
        ("time tag", iso(row.time_tag_s)),
        ("outcome", reason_words(entry)),
        ("detail", row.detail),
        ("prev hash", entry.prev_hash),
        ("hash", entry.hash),
    ]
    for name, value in fields:
        if value not in (None, ""):
            out.write(f"{name:<16}{value}\n")
    if record is not None:
        out.write("\n")
        _write_record(record, out)
    return 0


def _write_record(record: ComplianceRecord, out: TextIO) -> None:
    def at(t: float | None) -> str:
        return "never" if t is None else f"{iso(t)} (+{t - record.opened_at_s:.3f} s)"

    def watts(w: float | None, quality: object = None) -> str:
        if w is None:
            return "unmeasured"
        return f"{w:g} W" + ("" if quality is None else f" ({quality})")

    state = (
        "open, provisional"
        if not record.closed
        else f"closed {iso(record.closed_at_s)}: {record.close_reason}"
    )
    anchor = "none" if record.anchor_id is None else f"#{record.anchor_id}"
    lines = [
        ("compliance", f"{record.kind.value} record of {anchor}, {state}"),
        ("outcome", REASON_WORDS.get(record.outcome, record.outcome)),
        ("limit", f"{record.limit_w:g} W ({record.mode.value}, {record.source.value}): {record.reason}"),
        ("opened", iso(record.opened_at_s)),
        ("site before", watts(record.power_before_w, record.power_before_quality)),
        ("enforced", at(record.enforced_at_s)),
        ("complied", at(record.complied_at_s)),
        ("last total", watts(record.power_w, record.power_quality)),
        ("peak total", watts(record.peak_power_w)),
    ]
    out.writelines(f"{name:<16}{value}\n" for name, value in lines)
    if not record.stations:
        out.write(f"{'stations':<16}none\n")
        return
    out.write(f"{'stations':<16}{len(record.stations)}\n")
    out.write(
        f"  {'station':<20} {'share W':>9} {'fallback W':>10} {'seq':>6} {'sent':>10} {'answer':<12} {'answered':>10} {'profiles':>8}\n"
    )
    for s in record.stations:

        def rel(t: float | None) -> str:
            return "-" if t is None else f"+{t - record.opened_at_s:.3f}s"

        answer = "-" if s.seq is None else ("pending" if s.answer is None else s.answer.value)
        seq = "-" if s.seq is None else str(s.seq)
        out.write(
            f"  {s.station_id:<20} {s.share_w:>9g} {s.fallback_w:>10g} {seq:>6} {rel(s.sent_at_s):>10}"
            f" {answer:<12} {rel(s.answered_at_s):>10} {s.profiles:>8}\n"
        )


def _cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    with _reader(args) as reader:
        entries, current = reader.snapshot()
        chain = reader.verify_chain()
        in_range = [
            e
            for e in entries
            if (args.since is None or e.row.received_at_s >= args.since)
            and (args.until is None or e.row.received_at_s < args.until)
        ]
        records = _records_for(reader, in_range)
        path, version = reader.path, reader.schema_version
    if args.format == "json":
        document = {
            "store": path,
            "schema_version": version,
            "exported_at": iso(datetime.now(UTC).timestamp()),
            "since": iso(args.since),
            "until": iso(args.until),
            "chain": chain_json(chain),
            "entries": [entry_json(e, records.get(e.id)) for e in in_range],
            "open_record": None if current is None else record_json(current),
        }
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for entry in in_range:
            writer.writerow(csv_row(entry, records.get(entry.id)))
    return 0


def _cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    with _reader(args) as reader:
        report = reader.verify_chain()
    if report.ok:
        head = "empty" if report.head_id is None else f"head #{report.head_id} sha256 {report.head_hash}"
        out.write(f"audit log intact: {report.entries} entries, {head}\n")
        return 0
    out.write(f"audit log broken at entry #{report.first_bad_id}: {report.problem}\n")
    return EXIT_BROKEN


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        out = sys.stdout
        target = getattr(args, "output", None)
        try:
            if target is not None:
                with open(target, "w", encoding="utf-8", newline="") as handle:
                    return int(handler(args, handle))
            return int(handler(args, out))
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
        except OSError as exc:
            print(f"error: {target}: {exc.strerror}", file=sys.stderr)
            return EXIT_UNREADABLE

    return run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser(
        "audit",
        help="read the audit log and the compliance records; verify the chain (read-only, safe while running)",
        description="Read the store's audit log without disturbing a running gateway. Exit codes: 0 done,"
        " 1 chain broken (verify) or no such entry (show), 2 bad arguments, 3 store unreadable.",
    )
    where = argparse.ArgumentParser(add_help=False)
    source = where.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="the gateway's configuration (its store.path)")
    source.add_argument("--store", metavar="PATH", help="the store file itself")
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument(
        "--since", type=parse_time, metavar="TIME", help="from this ISO 8601 time (UTC if no zone)"
    )
    window.add_argument("--until", type=parse_time, metavar="TIME", help="before this ISO 8601 time")
    commands = audit.add_subparsers(dest="audit_command", required=True)

    listing = commands.add_parser("list", parents=[where, window], help="one line per entry, in words")
    listing.add_argument("--last", type=int, metavar="N", help="only the last N entries")
    listing.set_defaults(handler=_run(_cmd_list))

    show = commands.add_parser("show", parents=[where], help="one entry in full, with its compliance record")
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(handler=_run(_cmd_show))

    export = commands.add_parser("export", parents=[where, window], help="every entry as JSON or CSV")
    export.add_argument("--format", choices=["json", "csv"], default="json")
    export.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    export.set_defaults(handler=_run(_cmd_export))

    verify = commands.add_parser(
        "verify", parents=[where], help="check the hash chain: exit 0 intact, 1 broken (first bad id)"
    )
    verify.set_defaults(handler=_run(_cmd_verify))
