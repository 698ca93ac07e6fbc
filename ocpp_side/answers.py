"""Standalone answers: what the gateway replies to a station's CALL without a CSMS (pure).

Every answer is schema-valid for its version and carries ISO 8601 UTC timestamps.
What differs per version (which notifications get an empty answer, which requests a
fixed refusal, Authorize and transactions) is in the version modules; Heartbeat and
BootNotification are answered alike. Side effects (meter readings, boot) are the
session's business, not this module's.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from typing import Any

from gateway.core.model import OcppVersion
from ocpp_side.codec import iso_utc
from ocpp_side.versions import VersionRules

Payload = dict[str, Any]

COMMON_ANSWERS = frozenset({"Heartbeat", "BootNotification"})


_SERVED: dict[OcppVersion, frozenset[str]] = {}


def served(rules: VersionRules) -> frozenset[str]:
    """Every action a station may send that the gateway answers itself."""
    actions = _SERVED.get(rules.VERSION)
    if actions is None:
        actions = _SERVED[rules.VERSION] = (
            rules.EMPTY_ANSWERS | frozenset(rules.FIXED_ANSWERS) | COMMON_ANSWERS | rules.COMPUTED_ANSWERS
        )
    return actions


class StandaloneAnswers:
    """Answers the stations' calls; ``authorize`` decides an id tag/token. One per server:
    the 1.6 transaction ids it gives are unique across its stations."""

    def __init__(
        self,
        heartbeat_interval_s: int,
        local_id_tags: Collection[str] | None,
        first_transaction_id: int = 1,
    ) -> None:
        self._interval = heartbeat_interval_s
        self._tags = None if local_id_tags is None else frozenset(local_id_tags)  # None: accept all
        self._transaction_ids = itertools.count(first_transaction_id)

    def authorize(self, id_tag: str) -> str:
        return "Accepted" if self._tags is None or id_tag in self._tags else "Invalid"

    def _new_transaction_id(self) -> int:
        return next(self._transaction_ids)

    def answer(self, rules: VersionRules, action: str, payload: Payload, now_s: float) -> Payload:
        """The CALLRESULT payload for a validated ``action`` request, at ``now_s``."""
        if action in rules.EMPTY_ANSWERS:
            return {}
        fixed = rules.FIXED_ANSWERS.get(action)
        if fixed is not None:
            return fixed
        if action == "Heartbeat":
            return {"currentTime": iso_utc(now_s)}
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": iso_utc(now_s), "interval": self._interval}
        return rules.answer(action, payload, self.authorize, self._new_transaction_id)
