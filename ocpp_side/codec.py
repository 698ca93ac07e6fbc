"""OCPP-J framing: parse and build CALL / CALLRESULT / CALLERROR frames (pure, orjson).

A frame that cannot be read is turned into a ``FrameError`` carrying the CALLERROR to
answer with (OCPP-J 1.6 section 4.2.3, OCPP 2.0.1 part 4 section 4.3): the gateway
never crashes and never drops the connection over one bad frame, whatever its size or
depth. A frame nested deeper than ``MAX_DEPTH`` is refused as unreadable (the deepest
OCPP message, 2.0.1 ReportChargingProfiles, is 14 levels with its frame), so nothing
downstream ever walks a peer's structure a thousand levels deep; descriptions never
``repr`` peer values (``peer_log.brief`` is bounded in depth and length).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from gateway.errors import PeerInputError
from ocpp_side.peer_log import brief

MAX_ID_LEN = 36  # OCPP-J: a message id is at most 36 characters
UNKNOWN_ID = "-1"  # OCPP 2.0.1 part 4: the id to answer with when the caller's cannot be read
MAX_DEPTH = 64  # nesting levels of arrays and objects in a frame (orjson itself stops at 1024)


class MessageType(IntEnum):
    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4


class ErrorKind(StrEnum):
    """What went wrong, independent of how each OCPP version spells its error code
    (each version module's ``ERROR_CODES`` table)."""

    FORMAT = "format"
    PROTOCOL = "protocol"
    TYPE = "type"
    PROPERTY = "property"
    OCCURRENCE = "occurrence"
    NOT_IMPLEMENTED = "not_implemented"
    NOT_SUPPORTED = "not_supported"
    INTERNAL = "internal"
    GENERIC = "generic"
    RPC_FRAMEWORK = "rpc_framework"
    MESSAGE_TYPE = "message_type"


class OcppViolation(PeerInputError):
    """Peer input that breaks OCPP; answered with a CALLERROR of ``kind``."""

    def __init__(self, kind: ErrorKind, description: str) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    error_code: str
    description: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that could not be read; answer with a CALLERROR for ``unique_id``."""

    unique_id: str
    kind: ErrorKind
    description: str


Frame = Call | CallResult | CallError | FrameError


def parse_frame(data: bytes | str) -> Frame:
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return FrameError(UNKNOWN_ID, ErrorKind.RPC_FRAMEWORK, "the frame is not valid JSON")
    if type(msg) is not list or not msg:
        return FrameError(UNKNOWN_ID, ErrorKind.RPC_FRAMEWORK, "an OCPP-J frame is a JSON array")
    unique_id = msg[1] if len(msg) > 1 and type(msg[1]) is str and len(msg[1]) <= MAX_ID_LEN else None
    answer_id = unique_id if unique_id is not None else UNKNOWN_ID
    if _may_be_deep(data) and _deeper_than(msg, MAX_DEPTH):
        return FrameError(
            answer_id, ErrorKind.RPC_FRAMEWORK, f"the frame is nested deeper than {MAX_DEPTH} levels"
        )
    kind = msg[0]
    if kind == MessageType.CALL and type(kind) is int:
        if len(msg) != 4:
            return FrameError(answer_id, ErrorKind.RPC_FRAMEWORK, "a CALL has 4 elements")
        if unique_id is None:
            return FrameError(answer_id, ErrorKind.RPC_FRAMEWORK, "the message id must be a string of 1..36")
        if type(msg[2]) is not str:
            return FrameError(answer_id, ErrorKind.RPC_FRAMEWORK, "the action must be a string")
        if type(msg[3]) is not dict:
            return FrameError(answer_id, ErrorKind.FORMAT, "the payload must be a JSON object")
        return Call(unique_id, msg[2], msg[3])
    if kind == MessageType.CALLRESULT and type(kind) is int:
        if len(msg) != 3 or unique_id is None or type(msg[2]) is not dict:
            return FrameError(answer_id, ErrorKind.RPC_FRAMEWORK, "a CALLRESULT is [3, id, {payload}]")
        return CallResult(unique_id, msg[2])
    if kind == MessageType.CALLERROR and type(kind) is int:
        if len(msg) != 5 or unique_id is None or type(msg[2]) is not str or type(msg[4]) is not dict:
            return FrameError(
                answer_id, ErrorKind.RPC_FRAMEWORK, "a CALLERROR is [4, id, code, text, {details}]"
            )
        return CallError(unique_id, msg[2], str(msg[3]), msg[4])
    return FrameError(answer_id, ErrorKind.MESSAGE_TYPE, f"message type {brief(kind, 40)} is not 2, 3 or 4")


def _may_be_deep(data: bytes | str) -> bool:
    """Cheap (C-speed) pre-check: fewer brackets than MAX_DEPTH cannot nest deeper."""
    if isinstance(data, str):
        return data.count("[") + data.count("{") > MAX_DEPTH
    return data.count(b"[") + data.count(b"{") > MAX_DEPTH


def _deeper_than(root: list[Any], limit: int) -> bool:
    """Whether ``root`` nests more than ``limit`` levels: one level at a time, no recursion."""
    level: list[Any] = [root]
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is list or type(child) is dict
        ]
        if not level:
            return False
    return True


def encode_call(unique_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([MessageType.CALL, unique_id, action, payload])


def encode_call_raw(unique_id: str, action: str, payload_json: bytes) -> bytes:
    """A CALL around a payload already encoded (one encoding shared by many stations)."""
    return b"".join((b"[2,", orjson.dumps(unique_id), b",", orjson.dumps(action), b",", payload_json, b"]"))


def encode_result(unique_id: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([MessageType.CALLRESULT, unique_id, payload])


def encode_error(unique_id: str, code: str, description: str) -> bytes:
    # OCPP 2.0.1 caps errorDescription at 255 characters; 1.6 peers take the same.
    return orjson.dumps([MessageType.CALLERROR, unique_id, code, description[:255], {}])


def iso_utc(epoch_s: float) -> str:
    """ISO 8601 with an explicit UTC designator, millisecond resolution."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
