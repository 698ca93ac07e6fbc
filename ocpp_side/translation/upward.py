"""A 1.6 station's CALLs as 2.0.1 calls for the CSMS, and its answers from the CSMS's (pure).

``translate(state, station_id, action, payload, now)`` takes one schema-valid 1.6 CALL
and returns ``Translated`` (the 2.0.1 calls, in order, and how to build the 1.6 answer
from their answers) or ``Refused``. It may update ``state``; the shell persists it. No
I/O, no clock (``now`` is the only time), no logging: the result is all there is.

Rows (the README's "Translation table: station (1.6) → CSMS (2.0.1)" has the field-level table):

=============================  ===============================================  ==========
1.6 call                       2.0.1 calls                                      1.6 answer
=============================  ===============================================  ==========
BootNotification               BootNotification (reason PowerUp)                CSMS's
Heartbeat                      Heartbeat                                        CSMS's
StatusNotification             StatusNotification or NotifyEvent, [NotifyEvent  local {}
                               Problem], [TransactionEvent Updated]
Authorize                      Authorize                                        CSMS's
StartTransaction               TransactionEvent Started                         CSMS's + id
MeterValues                    TransactionEvent Updated, or MeterValues, or --  local {}
StopTransaction                [TransactionEvent Started] TransactionEvent      CSMS's
                               Ended, or -- (a repeated Stop)
DataTransfer                   DataTransfer                                     CSMS's
DiagnosticsStatusNotification  LogStatusNotification                            local {}
FirmwareStatusNotification     FirmwareStatusNotification                       local {}
LogStatusNotification (*)      LogStatusNotification                            local {}
SignedFirmwareStatusNot. (*)   FirmwareStatusNotification                       local {}
SecurityEventNotification (*)  SecurityEventNotification                        local {}
SignCertificate (*)            SignCertificate (ChargingStationCertificate)     CSMS's
anything else                  Refused NotSupported                             CALLERROR
=============================  ===============================================  ==========

(*) from the 1.6 security whitepaper. "CSMS's": built from the CSMS's answer; with no
answer (``None``: outage or CALLERROR) the gateway answers as the central system would:
BootNotification Accepted (interval ``OFFLINE_INTERVAL_S``), Heartbeat ``now``,
Authorize / StartTransaction / StopTransaction Accepted, DataTransfer UnknownVendorId,
SignCertificate Rejected. Every such answer is schema-valid 1.6.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ocpp_side.translation import up_status, up_tx
from ocpp_side.translation.api import (
    Answers,
    Out,
    Payload,
    Refused,
    Translated,
    Translation,
    TranslationState,
)
from ocpp_side.translation.up_common import (
    OFFLINE_INTERVAL_S,
    VENDOR_ID,
    first,
    id_tag_info,
    id_token,
    iso,
)

Handler = Callable[[TranslationState, str, Payload, datetime], Translated]

# 1.6 DiagnosticsStatus -> 2.0.1 UploadLogStatusEnumType.
LOG_STATUS = {
    "Idle": "Idle",
    "Uploaded": "Uploaded",
    "UploadFailed": "UploadFailure",
    "Uploading": "Uploading",
}
_REGISTRATION = frozenset({"Accepted", "Pending", "Rejected"})
_DATA_TRANSFER = frozenset({"Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId"})


def _empty(answers: Answers) -> Payload:
    return {}


def _str(answer: Mapping[str, Any] | None, key: str) -> str | None:
    value = None if answer is None else answer.get(key)
    return value if isinstance(value, str) else None


def _boot(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    station: Payload = {"model": p["chargePointModel"], "vendorName": p["chargePointVendor"]}
    serial = p.get("chargeBoxSerialNumber") or p.get("chargePointSerialNumber")
    if serial:
        station["serialNumber"] = serial
    if "firmwareVersion" in p:
        station["firmwareVersion"] = p["firmwareVersion"]
    modem = {k: p[k] for k in ("iccid", "imsi") if k in p}
    if modem:
        station["modem"] = modem
    body: Payload = {"reason": "PowerUp", "chargingStation": station}
    meter = {k: p[k] for k in ("meterType", "meterSerialNumber") if k in p}
    if meter:  # no BootNotification field in 2.0.1 (device model variables): kept as vendor data
        body["customData"] = {"vendorId": VENDOR_ID, **meter}

    def answer(answers: Answers) -> Payload:
        a = first(answers)
        status, current, interval = _str(a, "status"), _str(a, "currentTime"), (a or {}).get("interval")
        if status in _REGISTRATION and current is not None and type(interval) is int:
            return {"status": status, "currentTime": current, "interval": interval}
        return {"status": "Accepted", "currentTime": iso(now), "interval": OFFLINE_INTERVAL_S}

    return Translated((Out("BootNotification", body),), answer)


def _heartbeat(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    def answer(answers: Answers) -> Payload:
        return {"currentTime": _str(first(answers), "currentTime") or iso(now)}

    return Translated((Out("Heartbeat", {}),), answer)


def _authorize(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    def answer(answers: Answers) -> Payload:
        return {"idTagInfo": id_tag_info((first(answers) or {}).get("idTokenInfo"))}

    return Translated((Out("Authorize", {"idToken": id_token(p["idTag"])}),), answer)


def _data_transfer(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    body: Payload = {k: p[k] for k in ("vendorId", "messageId", "data") if k in p}

    def answer(answers: Answers) -> Payload:
        a = first(answers)
        status = _str(a, "status")
        if a is None or status not in _DATA_TRANSFER:
            return {"status": "UnknownVendorId"}  # as the gateway's own central system answers
        out: Payload = {"status": status}
        data = a.get("data")
        if data is not None:  # 2.0.1 data is any JSON; 1.6 data is a string
            out["data"] = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        return out

    return Translated((Out("DataTransfer", body),), answer)


def _with_request_id(status: str, request_id: Any) -> Payload:
    """A 2.0.1 status notification; ``requestId`` (the CSMS's GetLog / UpdateFirmware id) is
    left out for Idle: 2.0.1 makes it optional when nothing is in progress."""
    body: Payload = {"status": status}
    if isinstance(request_id, int) and not isinstance(request_id, bool) and status != "Idle":
        body["requestId"] = request_id
    return body


def _notification(action: str, body: Payload) -> Translated:
    return Translated((Out(action, body),), _empty)


def _diagnostics(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    return _notification(
        "LogStatusNotification", _with_request_id(LOG_STATUS[p["status"]], state.log_request_id)
    )


def _log_status(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    request_id = p.get("requestId", state.log_request_id)
    return _notification("LogStatusNotification", _with_request_id(p["status"], request_id))


def _firmware(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    request_id = p.get("requestId", state.firmware_request_id)  # only the signed variant carries one
    return _notification("FirmwareStatusNotification", _with_request_id(p["status"], request_id))


def _security_event(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    body: Payload = {k: p[k] for k in ("type", "timestamp", "techInfo") if k in p}
    return _notification("SecurityEventNotification", body)


def _sign_certificate(state: TranslationState, station_id: str, p: Payload, now: datetime) -> Translated:
    def answer(answers: Answers) -> Payload:
        status = _str(first(answers), "status")
        return {"status": status if status in ("Accepted", "Rejected") else "Rejected"}

    body = {"csr": p["csr"], "certificateType": "ChargingStationCertificate"}
    return Translated((Out("SignCertificate", body),), answer)


HANDLERS: dict[str, Handler] = {
    "BootNotification": _boot,
    "Heartbeat": _heartbeat,
    "StatusNotification": up_status.status_notification,
    "Authorize": _authorize,
    "StartTransaction": up_tx.start,
    "MeterValues": up_tx.meter_values,
    "StopTransaction": up_tx.stop,
    "DataTransfer": _data_transfer,
    "DiagnosticsStatusNotification": _diagnostics,
    "FirmwareStatusNotification": _firmware,
    "LogStatusNotification": _log_status,
    "SignedFirmwareStatusNotification": _firmware,
    "SecurityEventNotification": _security_event,
    "SignCertificate": _sign_certificate,
}


def translate(
    state: TranslationState, station_id: str, action: str, payload: Payload, now: datetime
) -> Translation:
    """One schema-valid 1.6 CALL from ``station_id`` for a 2.0.1 CSMS (see the module doc)."""
    handler = HANDLERS.get(action)
    if handler is None:
        return Refused("NotSupported", f"{action} is not a charge point's call the 2.0.1 translation knows")
    return handler(state, station_id, payload, now)
