"""The Series 4 dialect turned into valid OCPP 1.6 (pure: no I/O, no clock).

A Series 4 unit speaks the 1.6 core action names, loosely. ``normalise`` walks a payload
along its 1.6 JSON schema (the ``ocpp`` package's, as ``schemas.py`` validates with) and
mends exactly these, each a ``Leniency``:

- ``string_number``: a decimal string (``"12"``, ``"-3.5"``; no exponent, at most
  ``MAX_NUMBER_CHARS``) where the schema wants an integer or a number becomes that
  number (an integer wants a whole value: ``"12.5"`` stays and is refused);
- ``naive_timestamp``: an ISO 8601 date-time without a zone where the schema wants a
  ``date-time`` is read in ``[legacy] timezone`` and written in UTC (``...Z``);
- ``unknown_field``: a field where the schema allows no other (``additionalProperties:
  false``) is dropped;
- ``boot_without_serial``: a BootNotification without ``chargePointSerialNumber`` gets
  the serial from the unit's hello (when it fits the schema's length).

Nothing else is touched: whatever is still wrong afterwards (a missing required field, a
bad enum value, a timestamp that is no date) reaches the session's strict validation
and gets its CALLERROR there. A frame that needed no leniency is handed on as the very
text the unit sent.

``UnitDialect`` is one unit's state: the gateway's calls in flight (watched on the way
out, ``sent``) so that the unit's CALLRESULTs are mended along the right response schema.
Frames to the unit are valid 1.6 already and go out unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
import orjson

from ocpp_side import codec, schemas, v16
from ocpp_side.codec import Call, CallError, CallResult

Payload = dict[str, Any]
Schema = Mapping[str, Any]

MAX_NUMBER_CHARS = 32  # a decimal string longer than this is not a meter reading
MAX_PENDING = 16  # the gateway has one call in flight per unit; a few more are kept for late answers
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_WHOLE = re.compile(r"[+-]?\d+(?:\.0*)?", re.ASCII)
# A date-time without a zone; the seconds may be missing.
_NAIVE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?", re.ASCII)
_SCHEMAS = Path(ocpp.__file__).parent / v16.SCHEMA_DIR / "schemas"


class Leniency(StrEnum):
    """One way the dialect differs from 1.6: the label of ``ocpp809_legacy_leniencies_total``."""

    STRING_NUMBER = "string_number"
    NAIVE_TIMESTAMP = "naive_timestamp"
    UNKNOWN_FIELD = "unknown_field"
    BOOT_WITHOUT_SERIAL = "boot_without_serial"


@dataclass(frozen=True, slots=True)
class DialectSettings:
    zone: tzinfo  # of timestamps that carry none ([legacy] timezone)
    serial: str  # from the hello


@dataclass(frozen=True, slots=True)
class Normalised:
    """The frame to hand on, and the leniencies it took (empty: the unit's own text)."""

    data: str
    leniencies: frozenset[Leniency]


def schema(action: str, request: bool) -> Schema | None:
    """The 1.6 JSON schema of ``action`` (None: no such action). A peer's action name is looked
    up among 1.6's actions first: it never names a file, nor grows the cache."""
    if action not in schemas.known_actions(v16.VERSION):
        return None
    return _schema(action, request)


@cache
def _schema(action: str, request: bool) -> Schema:
    loaded: Schema = orjson.loads(
        (_SCHEMAS / v16.schema_file(action, request)).read_text(encoding="utf-8-sig")
    )
    return loaded


def normalise(
    action: str, payload: Payload, request: bool, settings: DialectSettings
) -> tuple[Payload, frozenset[Leniency]]:
    """``payload`` of ``action`` (a request, or the response to one) with the leniencies mended."""
    root = schema(action, request)
    if root is None:
        return payload, frozenset()
    found: set[Leniency] = set()
    mended = _walk(root, payload, root, settings.zone, found)
    if action == "BootNotification" and request and "chargePointSerialNumber" not in mended:
        limit = root.get("properties", {}).get("chargePointSerialNumber", {}).get("maxLength", 25)
        if 0 < len(settings.serial) <= limit:
            mended = {**mended, "chargePointSerialNumber": settings.serial}
            found.add(Leniency.BOOT_WITHOUT_SERIAL)
    return mended, frozenset(found)


def _walk(node: Schema, value: Any, root: Schema, zone: tzinfo, found: set[Leniency]) -> Any:
    """``value`` mended along ``node``; a value of another type than the node's is left alone."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        node = root.get("definitions", {}).get(ref.removeprefix("#/definitions/"), {})
    kind = node.get("type")
    if kind == "object" and type(value) is dict:
        properties: Schema = node.get("properties", {})
        closed = node.get("additionalProperties") is False
        out: Payload = {}
        for key, item in value.items():
            sub = properties.get(key)
            if sub is not None:
                out[key] = _walk(sub, item, root, zone, found)
            elif closed:
                found.add(Leniency.UNKNOWN_FIELD)
            else:
                out[key] = item
        return out
    if kind == "array" and type(value) is list:
        items = node.get("items")
        if isinstance(items, Mapping):
            return [_walk(items, item, root, zone, found) for item in value]
        return value
    if type(value) is not str:
        return value
    if kind == "integer" or kind == "number":
        number = _number(value, whole=kind == "integer")
        if number is not None:
            found.add(Leniency.STRING_NUMBER)
            return number
    elif kind == "string" and node.get("format") == "date-time":
        stamp = _utc(value, zone)
        if stamp is not None:
            found.add(Leniency.NAIVE_TIMESTAMP)
            return stamp
    return value


def _number(text: str, whole: bool) -> int | float | None:
    """The number a decimal string says (an integer if ``whole``), or None."""
    if len(text) > MAX_NUMBER_CHARS:
        return None
    if whole:
        return int(text.split(".")[0]) if _WHOLE.fullmatch(text) else None
    if not _DECIMAL.fullmatch(text):
        return None
    return float(text) if "." in text else int(text)


def _utc(text: str, zone: tzinfo) -> str | None:
    """A zone-less ISO 8601 date-time read in ``zone``, in UTC with ``Z``; None for anything else."""
    if not _NAIVE.fullmatch(text):
        return None  # it has a zone (the schema decides whether it is written right), or is no time
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:  # 2016-02-30 and the like
        return None
    try:
        utc = stamp.replace(tzinfo=zone).astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 or 9999 moved out of range
        return None
    return utc.isoformat().replace("+00:00", "Z")


class UnitDialect:
    """One unit's side of the dialect; see the module docstring."""

    __slots__ = ("_pending", "settings")

    def __init__(self, settings: DialectSettings) -> None:
        self.settings = settings
        self._pending: dict[str, str] = {}  # the gateway's call ids in flight -> action

    def sent(self, frame: bytes) -> None:
        """A frame on its way to the unit: a CALL's answer will be mended along its action."""
        parsed = codec.parse_frame(frame)  # a relayed CSMS call is its own text: no prefix test
        if type(parsed) is Call:
            if len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            self._pending[parsed.unique_id] = parsed.action

    def received(self, data: str) -> Normalised:
        """A frame from the unit, as valid 1.6 as the leniencies make it."""
        frame = codec.parse_frame(data)
        if type(frame) is Call:
            payload, found = normalise(frame.action, frame.payload, True, self.settings)
            if found:
                return Normalised(codec.encode_call(frame.unique_id, frame.action, payload).decode(), found)
        elif type(frame) is CallResult or type(frame) is CallError:
            action = self._pending.pop(frame.unique_id, None)
            if type(frame) is CallResult and action is not None:
                payload, found = normalise(action, frame.payload, False, self.settings)
                if found:
                    return Normalised(codec.encode_result(frame.unique_id, payload).decode(), found)
        return Normalised(data, frozenset())
