"""Hypothesis strategies for OCPP-J frames a station may send, and the oracle that says how
each must be answered (issue 13, the project's own fuzz suite).

Frames come in three families:

- **valid** CALLs: every action a station may send, with a payload drawn from the official
  OCPP schema of its version (the ones shipped in the ``ocpp`` package);
- **near-valid** CALLs: a valid one with one or two mutations (a required field dropped, a
  value of the wrong type, an extra field, a huge string, deep nesting, a near-miss enum);
- **hostile** frames: not JSON, not an array, wrong arity or message type, unreadable or
  too long ids, binary frames, CALLRESULTs and CALLERRORs to nothing, duplicate ids.

The oracle (``expect``) is independent of ``ocpp_side``: it reads the frame with orjson
(the JSON reader the gateway is built on, so "valid JSON" means the same thing) and checks
the payload with ``jsonschema`` (a different validator than the gateway's fastjsonschema),
with RFC 3339 ``date-time``. Its rules are OCPP-J's (1.6 section 4.2, 2.0.1 part 4 section
4): a CALL of a served action with a valid payload gets a CALLRESULT with its id, every
other frame that is not a well-formed CALLRESULT/CALLERROR gets a CALLERROR, with the
frame's id when it can be read and ``-1`` otherwise; a well-formed reply to nothing gets
no answer. Frames nested deeper than the gateway's documented 64 levels are refused with
a CALLERROR (``ocpp_side/codec.py``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
import orjson
from hypothesis import strategies as st

from gateway.core.model import OcppVersion
from ocpp_side.answers import served
from ocpp_side.versions import rules_for

V16, V201 = OcppVersion.V16, OcppVersion.V201
MAX_DEPTH = 64  # ocpp_side/codec.py documents this limit; the oracle keeps clear of its edge
UNKNOWN_ID = "-1"
GATEWAY_ID_PREFIX = "ocpp809-"  # ids the gateway's own calls use: never drawn here

# OCPP-J error codes per version (1.6 section 4.2.3 with its "Occurence" spelling; 2.0.1 part 4 4.3).
ERROR_CODES = {
    V16: frozenset(
        {
            "NotImplemented",
            "NotSupported",
            "InternalError",
            "ProtocolError",
            "SecurityError",
            "FormationViolation",
            "PropertyConstraintViolation",
            "OccurenceConstraintViolation",
            "TypeConstraintViolation",
            "GenericError",
        }
    ),
    V201: frozenset(
        {
            "FormatViolation",
            "GenericError",
            "InternalError",
            "MessageTypeNotSupported",
            "NotImplemented",
            "NotSupported",
            "OccurrenceConstraintViolation",
            "PropertyConstraintViolation",
            "ProtocolError",
            "RpcFrameworkError",
            "SecurityError",
            "TypeConstraintViolation",
        }
    ),
}

_ROOT = Path(ocpp.__file__).parent
_SCHEMA_DIRS = {V16: _ROOT / "v16" / "schemas", V201: _ROOT / "v201" / "schemas"}


def _schema_path(version: OcppVersion, action: str) -> Path:
    name = f"{action}.json" if version is V16 else f"{action}Request.json"
    return _SCHEMA_DIRS[version] / name


@functools.cache
def known_actions(version: OcppVersion) -> frozenset[str]:
    return frozenset(
        p.name.removesuffix("Response.json") for p in _SCHEMA_DIRS[version].glob("*Response.json")
    )


@functools.cache
def station_actions(version: OcppVersion) -> tuple[str, ...]:
    """The actions a station may send that the gateway answers itself (standalone mode)."""
    return tuple(sorted(served(rules_for(version))))


@functools.cache
def central_actions(version: OcppVersion) -> tuple[str, ...]:
    """Actions of the version a station has no business sending (Reset, SetChargingProfile ...)."""
    return tuple(sorted(known_actions(version) - set(station_actions(version))))


@functools.cache
def _schema(version: OcppVersion, action: str) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads(_schema_path(version, action).read_text(encoding="utf-8-sig"))
    return schema


_FORMATS = jsonschema.FormatChecker(formats=())
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


@_FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    """RFC 3339 section 5.6 date-time (jsonschema's own checker needs a package not installed)."""
    if not isinstance(value, str):
        return True  # format applies to strings only
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    offset = match.group(8)
    return offset in "Zz" or (int(offset[1:3]) <= 23 and int(offset[4:6]) <= 59)


@functools.cache
def _validator(version: OcppVersion, action: str) -> jsonschema.protocols.Validator:
    schema = _schema(version, action)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=_FORMATS)  # type: ignore[no-any-return]


def schema_valid(version: OcppVersion, action: str, payload: Any) -> bool:
    return bool(_validator(version, action).is_valid(payload))


@functools.cache
def _response_validator(version: OcppVersion, action: str) -> jsonschema.protocols.Validator:
    schema = orjson.loads((_SCHEMA_DIRS[version] / f"{action}Response.json").read_text(encoding="utf-8-sig"))
    return jsonschema.validators.validator_for(schema)(schema, format_checker=_FORMATS)  # type: ignore[no-any-return]


def response_valid(version: OcppVersion, action: str, payload: Any) -> bool:
    """Whether ``payload`` is a schema-valid answer to ``action`` (what a station will check)."""
    return bool(_response_validator(version, action).is_valid(payload))


# -- values from a schema ---------------------------------------------------------------

_DATE_TIMES = st.builds(
    lambda dt, fmt: fmt(dt),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    st.sampled_from(
        [
            lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"),
            lambda d: d.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            lambda d: d.astimezone(UTC).isoformat(),
            lambda d: (d + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
        ]
    ),
)

# Numbers a hostile meter sends, as 1.6 strings (float() reads more than JSON numbers).
_NUMERIC_TEXT = st.one_of(
    st.sampled_from(
        [
            "1e39",
            "-1e39",
            "1e400",
            "nan",
            "NaN",
            "inf",
            "-Infinity",
            "1e-320",
            "-0",
            "0x10",
            "1_000",
            " 7200 ",
            "\u0661\u0662",  # Arabic-Indic digits: float() reads them
            "3.4028235e38",
            "",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
)

# JSON numbers (never NaN: JSON has none) from tiny to the edge of a double.
_NUMBERS = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 1e39, 7.2, 7200]),
)
_INTEGERS = st.one_of(st.integers(-5, 20), st.integers(-(2**63), 2**63 - 1))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        target: dict[str, Any] = root["definitions"][ref.removeprefix("#/definitions/")]
        return _resolve(target, root)
    return node


def _from_schema(node: dict[str, Any], root: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    node = _resolve(node, root)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object":
        props: dict[str, Any] = node.get("properties", {})
        required = [k for k in node.get("required", []) if k in props]
        return st.fixed_dictionaries(
            {k: _from_schema(props[k], root, k) for k in required},
            optional={k: _from_schema(v, root, k) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        low = int(node.get("minItems", 0))
        high = min(int(node.get("maxItems", low + 2)), low + 2)
        return st.lists(_from_schema(node.get("items", {}), root, name), min_size=low, max_size=high)
    if kind == "string":
        if node.get("format") == "date-time":
            return _DATE_TIMES
        longest = int(node.get("maxLength", 64))
        text = st.text(max_size=min(longest, 20))
        if name == "value":  # a 1.6 sampled value: the meter's reading, as text
            text = st.one_of(text, _NUMERIC_TEXT.filter(lambda s: len(s) <= longest))
        if longest <= 2000:  # exactly at the limit now and then
            text = st.one_of(text, st.text(min_size=longest, max_size=longest, alphabet="aé€𝄞"))
        return text
    if kind == "integer":
        least, most = node.get("minimum"), node.get("maximum")
        if least is not None or most is not None:
            return st.integers(min_value=least, max_value=most)
        return _INTEGERS
    if kind == "number":
        least, most = node.get("minimum"), node.get("maximum")
        if least is not None or most is not None:
            return st.floats(min_value=least, max_value=most, allow_nan=False, allow_infinity=False)
        return _NUMBERS
    if kind == "boolean":
        return st.booleans()
    return st.none()


@functools.cache
def payloads(version: OcppVersion, action: str) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads of ``action`` drawn from its request schema (nearly always schema-valid)."""
    schema = _schema(version, action)
    return _from_schema(schema, schema)  # type: ignore[return-value]


# -- mutations (near-valid) -------------------------------------------------------------

Json = Any
_WRONG: st.SearchStrategy[Any] = st.one_of(
    # Copied on every draw: a later mutation (an "extra" key) must never change the shared
    # literal, or hypothesis sees a strategy that draws differently each time (FlakyStrategyDefinition).
    st.sampled_from([None, True, False, 0, -1, 1.5, 2**64, "", "x", [], {}, [[[]]], {"a": {"b": {}}}]).map(
        copy.deepcopy
    ),
    st.text(max_size=10),
    st.integers(),
)


def nested(depth: int) -> str:
    """A marker ``_text`` turns into ``depth`` levels of arrays (JSON encoders stop far earlier)."""
    return f"@@deep:{depth}@@"


def _text(frame: Json) -> str:
    """The frame as JSON text: big integers kept, deep markers expanded, non-ASCII as it is."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    while "@@deep:" in text:
        start = text.index('"@@deep:')
        end = text.index('@@"', start + 8)
        depth = int(text[start + 8 : end])
        text = text[:start] + "[" * depth + "0" + "]" * depth + text[end + 3 :]
    return text


def depth_of(value: Json) -> int:
    """Levels of arrays and objects, the outermost counting 1 (a scalar is 0); no recursion."""
    depth, level = 0, [value] if isinstance(value, list | dict) else []
    while level:
        depth += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, list | dict)
        ]
    return depth


def _slots(value: Json) -> list[tuple[Json, Any]]:
    """Every (container, key) position in ``value``: where a mutation may land."""
    out: list[tuple[Json, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            out.append((node, key))
            if isinstance(child, list | dict):
                stack.append(child)
    return out


@st.composite
def mutated(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with one or two mutations a confused or hostile station might make."""
    payload = copy.deepcopy(payload)  # ours to change
    for _ in range(draw(st.integers(1, 2))):
        slots = _slots(payload)
        how = draw(st.sampled_from(["drop", "retype", "extra", "huge", "deep", "enum_case", "empty"]))
        if how == "empty":
            payload.clear()
            continue
        if how == "extra" or not slots:
            dicts = [payload] + [c[k] for c, k in slots if isinstance(c[k], dict)]
            target = draw(st.sampled_from(dicts))
            key = draw(st.text(min_size=1, max_size=12))
            target[key] = draw(st.one_of(_WRONG, st.integers(1, 40).map(nested)))
            continue
        container, key = draw(st.sampled_from(slots))
        if how == "drop" and isinstance(container, dict):
            del container[key]
        elif how == "huge":
            container[key] = "x" * draw(st.sampled_from([256, 2_000, 70_000, 300_000]))
        elif how == "deep":
            container[key] = nested(draw(st.sampled_from([8, 40, 80, 200, 900])))
        elif how == "enum_case" and isinstance(container[key], str) and container[key]:
            container[key] = container[key].swapcase()
        else:
            container[key] = draw(_WRONG)
    return payload


# -- frames ---------------------------------------------------------------------------

_IDS = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    st.text(min_size=1, max_size=36),
    st.sampled_from(["dup", "dup", "1", "-1"]),  # duplicates
).filter(lambda i: not i.startswith(GATEWAY_ID_PREFIX))
_BAD_IDS: st.SearchStrategy[Any] = st.one_of(
    st.text(min_size=37, max_size=80),
    st.sampled_from([None, 7, 1.5, True, [], {}, ["a"]]),
)


@dataclass(frozen=True)
class Frame:
    """One frame a station sends: text (or bytes for a binary frame), and what made it."""

    data: str | bytes
    family: str  # valid, near_valid, hostile, reply

    def __repr__(self) -> str:  # falsifying examples stay readable when a frame is huge
        shown = self.data if len(self.data) <= 300 else self.data[:300]
        return (
            f"Frame({self.family}, {shown!r}{' ...' if len(self.data) > 300 else ''}, {len(self.data)} chars)"
        )


@st.composite
def valid_calls(draw: st.DrawFn, version: OcppVersion) -> Frame:
    action = draw(st.sampled_from(station_actions(version)))
    return Frame(_text([2, draw(_IDS), action, draw(payloads(version, action))]), "valid")


@st.composite
def near_valid_calls(draw: st.DrawFn, version: OcppVersion) -> Frame:
    action = draw(st.sampled_from(station_actions(version)))
    payload = draw(mutated(draw(payloads(version, action))))
    unique_id = draw(_IDS)
    how = draw(
        st.sampled_from(["payload"] * 6 + ["action_case", "central", "unknown", "arity", "id", "type"])
    )
    if how == "action_case":
        action = action.lower()
    elif how == "central":
        action = draw(st.sampled_from(central_actions(version)))
    elif how == "unknown":
        action = draw(st.text(min_size=0, max_size=30))
    frame: list[Json] = [2, unique_id, action, payload]
    if how == "arity":
        frame = draw(st.sampled_from([frame[:3], frame + [{}], frame[:2]]))
    elif how == "id":
        frame[1] = draw(_BAD_IDS)
    elif how == "type":
        frame[draw(st.sampled_from([2, 3]))] = draw(_WRONG)
    return Frame(_text(frame), "near_valid")


@st.composite
def hostile_frames(draw: st.DrawFn, version: OcppVersion) -> Frame:
    unique_id = draw(_IDS)
    good = _text([2, unique_id, "Heartbeat", {}])
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "truncated",
                "scalar",
                "empty_array",
                "message_type",
                "bad_reply",
                "deep",
                "binary",
                "nan",
                "surrogate",
                "control",
                "bom",
                "huge_action",
            ]
        )
    )
    data: str | bytes
    if kind == "garbage":
        data = draw(st.text(max_size=40))
    elif kind == "truncated":
        data = good[: draw(st.integers(0, len(good) - 1))]
    elif kind == "scalar":
        data = draw(st.sampled_from(["null", "1", '"x"', "{}", '{"2": 1}', "true", "  "]))
    elif kind == "empty_array":
        data = "[]"
    elif kind == "message_type":
        first = draw(st.sampled_from([0, 1, 5, 2.0, 3.0, "2", True, None, -2, 2**70]))
        data = _text([first, unique_id, "Heartbeat", {}])
    elif kind == "bad_reply":
        data = _text(
            draw(
                st.sampled_from(
                    [
                        [3, unique_id],
                        [3, unique_id, []],
                        [3, unique_id, {}, {}],
                        [4, unique_id, "GenericError"],
                        [4, unique_id, 7, "", {}],
                        [4, unique_id, "GenericError", "", []],
                    ]
                )
            )
        )
    elif kind == "deep":
        depth = draw(st.sampled_from([70, 200, 1000, 1030, 3000]))
        data = draw(
            st.sampled_from(
                [
                    "[" * depth + "]" * depth,
                    _text([2, unique_id, "Heartbeat", {"x": nested(depth)}]) if depth < 1000 else "{" * depth,
                    f'[2,"{unique_id}","Heartbeat",' + '{"a":' * depth + "1" + "}" * depth + "]",
                ]
            )
        )
    elif kind == "binary":
        data = draw(st.sampled_from([good.encode(), b"", b"\x00\xff", draw(st.binary(max_size=40))]))
    elif kind == "nan":
        data = f'[2,"{unique_id}","Heartbeat",{{"x": NaN}}]'
    elif kind == "surrogate":
        data = f'[2,"{unique_id}","Heartbeat",{{"x": "\\ud800"}}]'
    elif kind == "control":
        data = f'[2,"{unique_id}","Heartbeat",{{"x": "a\x01b"}}]'
    elif kind == "bom":
        data = "\ufeff" + good
    else:
        data = _text([2, unique_id, "x" * draw(st.sampled_from([100, 5_000, 400_000])), {}])
    return Frame(data, "hostile")


@st.composite
def replies_to_nothing(draw: st.DrawFn) -> Frame:
    """CALLRESULTs and CALLERRORs for calls that were never made (one nested too deep to read)."""
    unique_id = draw(_IDS)
    frame = draw(
        st.sampled_from(
            [
                [3, unique_id, {}],
                [3, unique_id, {"status": "Accepted"}],
                [4, unique_id, "GenericError", "", {}],
                [4, unique_id, "NotSupported", "x" * 300, {"a": [1]}],
                [3, unique_id, {"a": nested(100)}],  # too deep: refused like any unreadable frame
                [3, unique_id, {"a": nested(30)}],
            ]
        )
    )
    return Frame(_text(frame), "reply")


def frames(version: OcppVersion) -> st.SearchStrategy[Frame]:
    return st.one_of(
        valid_calls(version),
        near_valid_calls(version),
        hostile_frames(version),
        replies_to_nothing(),
    )


# -- the oracle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """How the gateway must answer one frame: ``answer`` is "result", "error" or None (nothing)."""

    answer: str | None
    unique_id: str = UNKNOWN_ID
    code: str | None = None  # when OCPP fixes the error code (NotImplemented, NotSupported)
    why: str = ""


def expect(version: OcppVersion, data: str | bytes) -> Expected:
    """What OCPP-J and the gateway's documented limits require for ``data``."""
    if isinstance(data, bytes):
        return Expected("error", why="OCPP-J runs on text frames")
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Expected("error", why="not JSON")
    if type(msg) is not list or not msg:
        return Expected("error", why="not a JSON array")
    readable = len(msg) > 1 and type(msg[1]) is str and len(msg[1]) <= 36
    answer_id = msg[1] if readable else UNKNOWN_ID
    if depth_of(msg) > MAX_DEPTH:
        return Expected("error", answer_id, why="nested too deep")
    kind = msg[0]
    if type(kind) is int and kind == 2:
        if len(msg) != 4 or not readable or type(msg[2]) is not str or type(msg[3]) is not dict:
            return Expected("error", answer_id, why="not a CALL")
        action, payload = msg[2], msg[3]
        if action not in known_actions(version):
            return Expected("error", answer_id, "NotImplemented", "unknown action")
        if action not in station_actions(version):
            return Expected("error", answer_id, "NotSupported", "a central system's action")
        if not schema_valid(version, action, payload):
            return Expected("error", answer_id, why="payload breaks the schema")
        return Expected("result", answer_id, why="valid CALL")
    if type(kind) is int and kind == 3:
        if len(msg) == 3 and readable and type(msg[2]) is dict:
            return Expected(None, why="a CALLRESULT")
        return Expected("error", answer_id, why="a broken CALLRESULT")
    if type(kind) is int and kind == 4:
        if len(msg) == 5 and readable and type(msg[2]) is str and type(msg[4]) is dict:
            return Expected(None, why="a CALLERROR")
        return Expected("error", answer_id, why="a broken CALLERROR")
    return Expected("error", answer_id, why="unknown message type")


def check_answer(version: OcppVersion, frame: Frame, expected: Expected, answer: Json) -> str | None:
    """Why ``answer`` (a decoded frame the gateway sent) is not what ``expected`` says; None if it is."""
    if not isinstance(answer, list) or len(answer) < 2:
        return f"not an OCPP-J answer: {answer!r:.200}"
    wanted = 3 if expected.answer == "result" else 4
    if answer[0] != wanted or answer[1] != expected.unique_id:
        return (
            f"{frame!r} ({expected.why}) wants [{wanted}, {expected.unique_id!r}, ...],"
            f" got {str(answer)[:300]}"
        )
    if wanted == 4:
        if len(answer) != 5 or answer[2] not in ERROR_CODES[version] or not isinstance(answer[4], dict):
            return f"{frame!r}: malformed CALLERROR {str(answer)[:300]}"
        if not isinstance(answer[3], str) or len(answer[3]) > 255:
            return f"{frame!r}: CALLERROR description over 255 characters"
        if expected.code is not None and answer[2] != expected.code:
            return f"{frame!r} ({expected.why}) wants {expected.code}, got {answer[2]}"
    elif len(answer) != 3 or not isinstance(answer[2], dict):
        return f"{frame!r}: malformed CALLRESULT {str(answer)[:300]}"
    return None
