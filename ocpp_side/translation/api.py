"""What the translation core and its shell share (pure: no I/O, no clock of its own).

One ``TranslationState`` per station, persisted by the shell (``to_json``) after every
translation that changed it, so a gateway restart in the middle of a transaction loses
no id and never repeats a ``seqNo``.

A translation is either ``Translated`` (calls to send to the other side, in order, and
how to answer the originator from their answers) or ``Refused`` (a CALLERROR for the
originator, e.g. ``NotSupported`` for a 2.0.1 action with no 1.6 counterpart).

``answer`` receives one entry per call in ``calls``: the other side's CALLRESULT
payload, or None when it answered with a CALLERROR or not at all (an outage). Upward,
all-None is the normal offline case: the answer is then built locally (the gateway acts
as the station's central system) and the shell queues ``calls`` in the outbox for
replay, already translated, so state such as ``seqNo`` is assigned exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Payload = dict[str, Any]
Answers = Sequence[Payload | None]


@dataclass(frozen=True, slots=True)
class Out:
    """One call to send: its action and payload, in the receiving side's version."""

    action: str
    payload: Payload


def _no_follow_up(answers: Answers) -> tuple[Out, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class Translated:
    calls: tuple[Out, ...]
    # The originator's CALLRESULT payload, from the answers to ``calls`` (see the module doc).
    answer: Callable[[Answers], Payload]
    # Downward only: calls for the CSMS once the originator has its answer
    # (e.g. GetBaseReport -> NotifyReport built from the station's GetConfiguration).
    follow_up: Callable[[Answers], tuple[Out, ...]] = _no_follow_up


@dataclass(frozen=True, slots=True)
class Refused:
    error_code: str  # an OCPP-J error code of the originator's version, e.g. "NotSupported"
    description: str


Translation = Translated | Refused


@dataclass(slots=True)
class TranslationState:
    """Everything one station's translation remembers (JSON-safe: str keys in the file)."""

    next_tx16: int = 1  # the 1.6 transactionId the gateway gives the station next
    tx201_of: dict[int, str] = field(default_factory=dict)  # 1.6 transactionId -> 2.0.1 transactionId
    seq_no: dict[str, int] = field(default_factory=dict)  # 2.0.1 transactionId -> last seqNo sent
    tx_connector: dict[int, int] = field(default_factory=dict)  # open 1.6 transaction -> its connectorId
    remote_start: dict[str, int] = field(default_factory=dict)  # idTag -> remoteStartId not yet started
    connector_status: dict[int, str] = field(default_factory=dict)  # last 1.6 status per connectorId
    log_request_id: int | None = None  # the CSMS's GetLog requestId, for LogStatusNotification
    firmware_request_id: int | None = None  # the CSMS's UpdateFirmware requestId
    extra: dict[str, Any] = field(default_factory=dict)  # room for what a part needs beyond this

    def to_json(self) -> str:
        # orjson serialises the dataclass itself: no deep copy (asdict), int keys as strings;
        # the relay persists this after every translated call (its hot path).
        return orjson.dumps(self, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> TranslationState:
        data = json.loads(text)
        for name in ("tx201_of", "tx_connector", "connector_status"):
            data[name] = {int(k): v for k, v in data.get(name, {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
