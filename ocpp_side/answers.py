"""Standalone answers: what the gateway replies to a station's CALL without a CSMS (pure).

Every answer is schema-valid for its version and carries ISO 8601 UTC timestamps.
Side effects (meter readings, boot) are the connection's business, not this module's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection
from typing import Any

from gateway.model import OcppVersion
from ocpp_side.codec import ErrorKind, OcppViolation, iso_utc

Payload = dict[str, Any]

# Notifications a central system acknowledges with an empty payload.
_EMPTY_ANSWER: dict[OcppVersion, frozenset[str]] = {
    OcppVersion.V16: frozenset(
        {
            "StatusNotification",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "SignedFirmwareStatusNotification",
            "LogStatusNotification",
            "SecurityEventNotification",
            "MeterValues",
        }
    ),
    OcppVersion.V201: frozenset(
        {
            "StatusNotification",
            "FirmwareStatusNotification",
            "PublishFirmwareStatusNotification",
            "LogStatusNotification",
            "SecurityEventNotification",
            "MeterValues",
            "NotifyReport",
            "NotifyEvent",
            "NotifyMonitoringReport",
            "NotifyChargingLimit",
            "ClearedChargingLimit",
            "NotifyCustomerInformation",
            "NotifyDisplayMessages",
            "ReportChargingProfiles",
            "ReservationStatusUpdate",
        }
    ),
}

# Requests a standalone controller cannot serve: a proper negative answer.
_FIXED_ANSWER: dict[OcppVersion, dict[str, Payload]] = {
    OcppVersion.V16: {
        "DataTransfer": {"status": "UnknownVendorId"},
        "SignCertificate": {"status": "Rejected"},  # no certificate authority here
    },
    OcppVersion.V201: {
        "DataTransfer": {"status": "UnknownVendorId"},
        "SignCertificate": {"status": "Rejected"},
        "Get15118EVCertificate": {"status": "Failed", "exiResponse": ""},
        "GetCertificateStatus": {"status": "Failed"},
        "NotifyEVChargingNeeds": {"status": "Rejected"},  # no schedule to offer the EV
        "NotifyEVChargingSchedule": {"status": "Accepted"},
    },
}


_COMPUTED: dict[OcppVersion, frozenset[str]] = {
    OcppVersion.V16: frozenset(
        {"Heartbeat", "BootNotification", "Authorize", "StartTransaction", "StopTransaction"}
    ),
    OcppVersion.V201: frozenset({"Heartbeat", "BootNotification", "Authorize", "TransactionEvent"}),
}

# Every action a station may send that the gateway answers itself.
SERVED: dict[OcppVersion, frozenset[str]] = {
    version: _EMPTY_ANSWER[version] | frozenset(_FIXED_ANSWER[version]) | _COMPUTED[version]
    for version in OcppVersion
}


class StandaloneAnswers:
    """Answers one station's calls; ``authorize`` decides an id tag/token."""

    def __init__(
        self,
        heartbeat_interval_s: int,
        local_id_tags: Collection[str] | None,
        clock: Callable[[], float],
        first_transaction_id: int = 1,
    ) -> None:
        self._interval = heartbeat_interval_s
        self._tags = None if local_id_tags is None else frozenset(local_id_tags)  # None: accept all
        self._clock = clock
        self._transaction_ids = itertools.count(first_transaction_id)

    def authorize(self, id_tag: str) -> str:
        return "Accepted" if self._tags is None or id_tag in self._tags else "Invalid"

    def answer(self, version: OcppVersion, action: str, payload: Payload) -> Payload:
        """The CALLRESULT payload for a validated ``action`` request."""
        if action in _EMPTY_ANSWER[version]:
            return {}
        fixed = _FIXED_ANSWER[version].get(action)
        if fixed is not None:
            return fixed
        if action == "Heartbeat":
            return {"currentTime": iso_utc(self._clock())}
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": iso_utc(self._clock()), "interval": self._interval}
        if version is OcppVersion.V16:
            return self._answer_v16(action, payload)
        return self._answer_v201(action, payload)

    def _answer_v16(self, action: str, payload: Payload) -> Payload:
        if action == "Authorize":
            return {"idTagInfo": {"status": self.authorize(payload["idTag"])}}
        if action == "StartTransaction":
            # The id is ours to give; 1.6 wants an integer (32-bit signed on most stations).
            transaction_id = next(self._transaction_ids) & 0x7FFFFFFF
            return {
                "transactionId": transaction_id,
                "idTagInfo": {"status": self.authorize(payload["idTag"])},
            }
        if action == "StopTransaction":
            id_tag = payload.get("idTag")
            return {} if id_tag is None else {"idTagInfo": {"status": self.authorize(id_tag)}}
        raise OcppViolation(ErrorKind.NOT_SUPPORTED, f"{action} is not served by this central system")

    def _answer_v201(self, action: str, payload: Payload) -> Payload:
        if action == "Authorize":
            return {"idTokenInfo": {"status": self.authorize(payload["idToken"]["idToken"])}}
        if action == "TransactionEvent":
            token = payload.get("idToken")
            return {} if token is None else {"idTokenInfo": {"status": self.authorize(token["idToken"])}}
        raise OcppViolation(ErrorKind.NOT_SUPPORTED, f"{action} is not served by this central system")
