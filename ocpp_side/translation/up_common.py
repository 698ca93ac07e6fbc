"""Small pieces the upward (1.6 station -> 2.0.1 CSMS) translation shares (pure).

Time, id tokens and authorization info; the names of what upward keeps in
``TranslationState.extra`` (all JSON-safe: string keys only, so a round trip through
``to_json`` / ``from_json`` changes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ocpp_side.translation.api import Answers, Payload

# What a 2.0.1 request carries in ``customData`` (vendor extension, allowed on every type).
VENDOR_ID = "ocpp809"

# Keys of ``TranslationState.extra`` owned by the upward translation.
CHARGING_STATE = "up_charging_state"  # 2.0.1 transactionId -> last chargingState sent
PROBLEMS = "up_problems"  # str(connectorId) -> 1.6 errorCode reported as a Problem, not yet cleared
NEXT_EVENT_ID = "up_next_event_id"  # the next NotifyEvent eventId
CLOSED = "up_closed"  # [[1.6 id, 2.0.1 id], ...]: the last transactions closed, oldest first

# 1.6 has no answer from the CSMS when it is away: the gateway answers as the central system.
OFFLINE_INTERVAL_S = 300  # BootNotification interval while the CSMS is away (the shell may override)

# 2.0.1 AuthorizationStatusEnumType -> 1.6 AuthorizationStatus; the rest (NoCredit,
# NotAllowedTypeEVSE, NotAtThisLocation, NotAtThisTime, Unknown) has no 1.6 name: Invalid.
_AUTH_STATUS = {s: s for s in ("Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid")}
ID_TAG_MAX = 20  # 1.6 IdToken is CiString20Type


def iso(now: datetime) -> str:
    """``now`` as ISO 8601 UTC with a ``Z`` (a naive datetime is taken as UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def id_token(id_tag: str) -> Payload:
    """A 1.6 idTag as a 2.0.1 IdTokenType: 1.6 tags are RFID UIDs in practice."""
    return {"idToken": id_tag, "type": "ISO14443"}


def id_tag_info(token_info: Mapping[str, Any] | None) -> Payload:
    """2.0.1 IdTokenInfoType -> 1.6 IdTagInfo; absent (offline, no info) -> Accepted."""
    if not isinstance(token_info, Mapping):
        return {"status": "Accepted"}
    info: Payload = {"status": _AUTH_STATUS.get(str(token_info.get("status")), "Invalid")}
    expiry = token_info.get("cacheExpiryDateTime")
    if isinstance(expiry, str):
        info["expiryDate"] = expiry
    group = token_info.get("groupIdToken")
    parent = group.get("idToken") if isinstance(group, Mapping) else None
    if isinstance(parent, str) and len(parent) <= ID_TAG_MAX:  # a cut tag would name another tag
        info["parentIdTag"] = parent
    return info


def first(answers: Answers) -> Payload | None:
    """The answer to the first call, if the CSMS gave one."""
    return answers[0] if answers else None
