"""A 2.0.1 CSMS's calls for an OCPP 1.6 station, and the 2.0.1 answers (pure).

``translate(state, station_id, action, payload, now)`` takes one schema-valid 2.0.1 CALL
from the CSMS and returns either ``Refused`` (a CALLERROR ``NotSupported`` for an action
with no 1.6 counterpart) or ``Translated``: the 1.6 calls for the station, in order, and
``answer(answers)`` building the 2.0.1 CALLRESULT from the station's answers (one entry per
call, None for a CALLERROR or no answer: the CSMS then gets a negative status, with
``statusInfo`` where the schema has one). Some calls are answered without asking the
station at all (``calls`` is empty): an unknown transaction, a variable with no 1.6 key,
a profile 1.6 cannot express. The README's "Translation table: CSMS (2.0.1) → station (1.6)" has the table.

EVSEs and connectors: 2.0.1 EVSE *n* with its connector 1 is 1.6 connector *n*; EVSE 0 (or
none, where the message allows it) is the 1.6 connector 0, the whole station.

State: ``translate`` records what later station messages need (``remote_start``,
``firmware_request_id``, ``log_request_id``) before the call goes out, and ``answer``
takes it back when the station refused: the shell persists the state after both.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from ocpp_side.translation import config_keys
from ocpp_side.translation.api import (
    Answers,
    Out,
    Payload,
    Refused,
    Translated,
    Translation,
    TranslationState,
)
from ocpp_side.translation.charging_profiles import (
    PURPOSE_TO_16,
    ProfileError,
    composite_to_201,
    profile_to_16,
)

_T = TypeVar("_T")

ID_TAG_MAX = 20  # 1.6 idTag and parentIdTag: CiString20
CONFIG_VALUE_MAX = 500  # 1.6 ChangeConfiguration value: CiString500
REPORT_ITEMS_PER_MESSAGE = 50  # reportData entries per NotifyReport (under 40 kB each)

# fastjsonschema's "uri" format, which the 1.6 schemas put on UpdateFirmware/GetDiagnostics
# ``location`` (2.0.1 has a plain string): checked here so the station never gets a bad one.
_URI = re.compile(r"^\w+:(\/?\/?)[^\s]+\Z")

# 2.0.1 Reset → 1.6 Reset. Immediate ends the transactions (TransactionEvent Ended,
# ImmediateReset) and reboots: that is 1.6 Soft, which stops them gracefully with their
# final meter readings; 1.6 Hard need not. OnIdle waits for the transactions to end, which
# 1.6 cannot: a Soft reset when none is ongoing, refused otherwise.
RESET_TYPE = {"Immediate": "Soft", "OnIdle": "Soft"}

# TriggerMessage requestedMessage, 2.0.1 → 1.6; the rest have no 1.6 counterpart.
TRIGGER = {
    "BootNotification": "BootNotification",
    "LogStatusNotification": "DiagnosticsStatusNotification",
    "FirmwareStatusNotification": "FirmwareStatusNotification",
    "Heartbeat": "Heartbeat",
    "MeterValues": "MeterValues",
    "StatusNotification": "StatusNotification",
    "TransactionEvent": "MeterValues",  # of the ongoing transaction: TransactionEvent Updated upward
}

# 2.0.1 AuthorizationStatus → 1.6 (local authorisation list entries).
ID_STATUS = {
    "Accepted": "Accepted",
    "Blocked": "Blocked",
    "ConcurrentTx": "ConcurrentTx",
    "Expired": "Expired",
    "Invalid": "Invalid",
    "NoCredit": "Invalid",
    "NotAllowedTypeEVSE": "Invalid",
    "NotAtThisLocation": "Invalid",
    "NotAtThisTime": "Invalid",
    "Unknown": "Invalid",
}

# 1.6 ChangeConfiguration status → 2.0.1 SetVariableStatus.
SET_STATUS = {
    "Accepted": "Accepted",
    "Rejected": "Rejected",
    "RebootRequired": "RebootRequired",
    "NotSupported": "UnknownVariable",  # the station has no such key
}

# 1.6 statuses for which the 2.0.1 enum has no value of the same name.
_NOT_SUPPORTED_16 = "NotSupported"

# 2.0.1 CSMS → station actions with no OCPP 1.6 counterpart: why, for the CALLERROR.
NO_COUNTERPART = {
    "CertificateSigned": "certificates are managed by the 1.6 security extension, not translated",
    "ClearDisplayMessage": "OCPP 1.6 has no display messages",
    "ClearVariableMonitoring": "OCPP 1.6 has no variable monitoring",
    "CostUpdated": "OCPP 1.6 has no tariff or cost messages",
    "CustomerInformation": "OCPP 1.6 has no customer information request",
    "DeleteCertificate": "certificates are managed by the 1.6 security extension, not translated",
    "GetChargingProfiles": "OCPP 1.6 cannot report installed charging profiles",
    "GetDisplayMessages": "OCPP 1.6 has no display messages",
    "GetInstalledCertificateIds": "certificates are managed by the 1.6 security extension, not translated",
    "GetMonitoringReport": "OCPP 1.6 has no variable monitoring",
    "GetReport": "only GetBaseReport is translated (from GetConfiguration)",
    "InstallCertificate": "certificates are managed by the 1.6 security extension, not translated",
    "PublishFirmware": "OCPP 1.6 has no local firmware publishing",
    "SetDisplayMessage": "OCPP 1.6 has no display messages",
    "SetMonitoringBase": "OCPP 1.6 has no variable monitoring",
    "SetMonitoringLevel": "OCPP 1.6 has no variable monitoring",
    "SetNetworkProfile": "the station's connection belongs to the gateway; OCPP 1.6 has no network profiles",
    "SetVariableMonitoring": "OCPP 1.6 has no variable monitoring",
    "UnpublishFirmware": "OCPP 1.6 has no local firmware publishing",
}

Handler = Callable[[TranslationState, Payload, datetime], Translation]


# -- building blocks ------------------------------------------------------------------


def _info(reason: str, text: str) -> Payload:
    """A 2.0.1 StatusInfoType."""
    return {"reasonCode": reason[:20], "additionalInfo": text[:512]}


def _no_answer() -> Payload:
    return _info("Unspecified", "the OCPP 1.6 station answered with a CALLERROR or not at all")


def _iso(now: datetime) -> str:
    """ISO 8601 UTC with a Z; a naive ``now`` is taken as UTC."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local(answer: Payload) -> Translated:
    """Answered without asking the station."""
    return Translated((), lambda answers: copy.deepcopy(answer))


def _refuse(status: str, reason: str, text: str) -> Translated:
    return local({"status": status, "statusInfo": _info(reason, text)})


def _one(action: str, payload: Payload, build: Callable[[Payload | None], Payload]) -> Translated:
    """One 1.6 call; ``build`` makes the 2.0.1 answer from the station's (None: none)."""
    return Translated((Out(action, payload),), lambda answers: build(answers[0]))


def _status(
    answer: Payload | None, fallback: str = "Rejected", renamed: dict[str, str] | None = None
) -> Payload:
    """``{"status": …}`` from the station's status (same names in both versions unless
    ``renamed``); ``fallback`` with a statusInfo when it did not answer or the status
    has no 2.0.1 counterpart."""
    if answer is None:
        return {"status": fallback, "statusInfo": _no_answer()}
    status = answer["status"]
    if renamed is not None and status in renamed:
        return {"status": renamed[status], "statusInfo": _info("UnsupportedRequest", f"OCPP 1.6: {status}")}
    return {"status": status}


def _pass_status(action: str, payload: Payload, fallback: str = "Rejected") -> Translated:
    return _one(action, payload, lambda answer: _status(answer, fallback))


def tx16_of(state: TranslationState, tx201: str) -> int | None:
    """The station's 1.6 transactionId for a 2.0.1 one (the inverse of ``tx201_of``)."""
    return next((tx16 for tx16, tx in state.tx201_of.items() if tx == tx201), None)


# 1.6 connector statuses that mean a transaction is under way, should the id maps miss it.
_IN_TRANSACTION = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE"})


def _busy_connectors(state: TranslationState) -> set[int]:
    """Connectors with a transaction ongoing."""
    busy = {c for c, status in state.connector_status.items() if status in _IN_TRANSACTION}
    return busy | set(state.tx_connector.values())


# -- transactions -----------------------------------------------------------------------


def _request_start(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    id_tag = payload["idToken"]["idToken"]
    remote_start_id = payload["remoteStartId"]
    if len(id_tag) > ID_TAG_MAX:
        return _refuse("Rejected", "InvalidIdToken", f"OCPP 1.6 id tags have at most {ID_TAG_MAX} characters")
    call: Payload = {"idTag": id_tag}
    if "evseId" in payload:
        if payload["evseId"] < 1:
            return _refuse("Rejected", "UnknownEvse", "OCPP 1.6 starts transactions on connectors 1 and up")
        call["connectorId"] = payload["evseId"]
    if "chargingProfile" in payload:
        profile = {k: v for k, v in payload["chargingProfile"].items() if k != "transactionId"}
        if profile["chargingProfilePurpose"] != "TxProfile":
            return _refuse("Rejected", "InvalidProfile", "a remote start takes a TxProfile only")
        try:
            call["chargingProfile"] = profile_to_16(profile, lambda tx: None)
        except ProfileError as exc:
            return _refuse("Rejected", exc.reason, exc.text)
    before = state.remote_start.get(id_tag)
    state.remote_start[id_tag] = remote_start_id  # popped upward when StartTransaction arrives

    def build(answer: Payload | None) -> Payload:
        result = _status(answer)
        if result["status"] != "Accepted" and state.remote_start.get(id_tag) == remote_start_id:
            if before is None:
                del state.remote_start[id_tag]
            else:
                state.remote_start[id_tag] = before
        return result

    return _one("RemoteStartTransaction", call, build)


def _request_stop(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    tx16 = tx16_of(state, payload["transactionId"])
    if tx16 is None:
        return _refuse(
            "Rejected", "UnknownTxId", f"no transaction {payload['transactionId']} on this station"
        )
    return _pass_status("RemoteStopTransaction", {"transactionId": tx16})


def _transaction_status(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    # Answered from the translation state; ``messagesInQueue`` is the relay's outbox to
    # know: False here, for the shell to set.
    answer: Payload = {"messagesInQueue": False}
    if "transactionId" in payload:
        tx16 = tx16_of(state, payload["transactionId"])
        answer["ongoingIndicator"] = tx16 is not None and tx16 in state.tx_connector
    return local(answer)


# -- station control --------------------------------------------------------------------


def _reset(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    if "evseId" in payload:
        return _refuse("Rejected", "UnsupportedRequest", "OCPP 1.6 resets the whole station, not one EVSE")
    if payload["type"] == "OnIdle" and _busy_connectors(state):
        return _refuse("Rejected", "TxInProgress", "OCPP 1.6 cannot defer a reset until the transactions end")
    return _pass_status("Reset", {"type": RESET_TYPE[payload["type"]]})


def _change_availability(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    evse = payload.get("evse")
    if evse is not None and evse.get("connectorId", 1) != 1:
        return _refuse(
            "Rejected", "UnknownConnectorId", "each OCPP 1.6 connector is an EVSE with connector 1"
        )
    connector = 0 if evse is None else evse["id"]
    return _pass_status(
        "ChangeAvailability", {"connectorId": connector, "type": payload["operationalStatus"]}
    )


def _unlock(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    evse_id = payload["evseId"]
    if evse_id < 1 or payload["connectorId"] != 1:
        return local({"status": "UnknownConnector"})
    if evse_id in _busy_connectors(state):
        # 2.0.1 keeps the cable locked during a transaction; 1.6 would end the transaction.
        return local({"status": "OngoingAuthorizedTransaction"})

    def build(answer: Payload | None) -> Payload:
        return _status(answer, "UnlockFailed", {_NOT_SUPPORTED_16: "UnlockFailed"})

    return _one("UnlockConnector", {"connectorId": evse_id}, build)


def _trigger(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    requested = payload["requestedMessage"]
    if requested not in TRIGGER:
        return _refuse("NotImplemented", "UnsupportedRequest", f"OCPP 1.6 cannot trigger {requested}")
    call: Payload = {"requestedMessage": TRIGGER[requested]}
    evse = payload.get("evse")
    if evse is not None:
        if evse.get("connectorId", 1) != 1:
            return _refuse(
                "Rejected", "UnknownConnectorId", "each OCPP 1.6 connector is an EVSE with connector 1"
            )
        call["connectorId"] = evse["id"]
    if requested == "TransactionEvent":
        busy = _busy_connectors(state)
        if not busy or (evse is not None and evse["id"] not in busy):
            return _refuse("Rejected", "TxNotFound", "no transaction ongoing")
    return _pass_status("TriggerMessage", call)


def _clear_cache(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    return _pass_status("ClearCache", {})


def _data_transfer(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    call: Payload = {"vendorId": payload["vendorId"]}
    if "messageId" in payload:
        call["messageId"] = payload["messageId"]
    if "data" in payload:  # 1.6 data is a string: anything else travels as its JSON text
        data = payload["data"]
        call["data"] = data if isinstance(data, str) else orjson.dumps(data).decode()

    def build(answer: Payload | None) -> Payload:
        result = _status(answer)
        if answer is not None and "data" in answer:
            result["data"] = answer["data"]
        return result

    return _one("DataTransfer", call, build)


# -- configuration ----------------------------------------------------------------------


def _named(item: Payload) -> Payload:
    """The component/variable (and attributeType) a result repeats from its request item."""
    out = {"component": item["component"], "variable": item["variable"]}
    if "attributeType" in item:
        out["attributeType"] = item["attributeType"]
    return out


def _resolve(item: Payload) -> str | config_keys.Unknown | None:
    """The 1.6 key of a Get/SetVariables item; Unknown…; None: not the Actual attribute."""
    if item.get("attributeType", "Actual") != "Actual":
        return None
    return config_keys.key_of(item["component"], item["variable"])


_NOT_ACTUAL = {
    "attributeStatus": "NotSupportedAttributeType",
    "attributeStatusInfo": _info("UnsupportedParam", "OCPP 1.6 keys have an actual value only"),
}


def _get_variables(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    items = payload["getVariableData"]
    resolved = [_resolve(item) for item in items]
    keys = list(
        dict.fromkeys(k for k in resolved if isinstance(k, str) and not isinstance(k, config_keys.Unknown))
    )
    calls = (Out("GetConfiguration", {"key": keys}),) if keys else ()

    def build(answers: Answers) -> Payload:
        got = answers[0] if calls else None
        known = {c["key"]: c for c in got.get("configurationKey", ())} if got else {}
        unknown = set(got.get("unknownKey", ())) if got else set()
        results = []
        for item, key in zip(items, resolved, strict=True):
            result = _named(item)
            if key is None:
                result.update(_NOT_ACTUAL)
            elif isinstance(key, config_keys.Unknown):
                result["attributeStatus"] = key.value
            elif got is None:
                result.update(attributeStatus="Rejected", attributeStatusInfo=_no_answer())
            elif key in known:
                value = known[key].get("value", "")
                result.update(attributeStatus="Accepted", attributeValue=config_keys.value_to_201(key, value))
            elif key in unknown:
                result["attributeStatus"] = "UnknownVariable"
            else:
                result.update(
                    attributeStatus="Rejected",
                    attributeStatusInfo=_info("Unspecified", f"the station did not report {key}"),
                )
            results.append(result)
        return {"getVariableResult": results}

    return Translated(calls, build)


def _set_variables(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    items = payload["setVariableData"]
    results: list[Payload | None] = []  # None: from the station's answer, in call order
    calls = []
    for item in items:
        key = _resolve(item)
        value = item["attributeValue"]
        if key is None:
            results.append({**_named(item), **_NOT_ACTUAL})
        elif isinstance(key, config_keys.Unknown):
            results.append({**_named(item), "attributeStatus": key.value})
        elif len(value) > CONFIG_VALUE_MAX:
            info = _info("ValueTooLong", f"OCPP 1.6 values have at most {CONFIG_VALUE_MAX} characters")
            results.append({**_named(item), "attributeStatus": "Rejected", "attributeStatusInfo": info})
        else:
            results.append(None)
            calls.append(
                Out("ChangeConfiguration", {"key": key, "value": config_keys.value_to_16(key, value)})
            )

    def build(answers: Answers) -> Payload:
        station: Iterator[Payload | None] = iter(answers)
        out = []
        for item, result in zip(items, results, strict=True):
            if result is None:
                answer = next(station)
                if answer is None:
                    result = {
                        **_named(item),
                        "attributeStatus": "Rejected",
                        "attributeStatusInfo": _no_answer(),
                    }
                else:
                    result = {**_named(item), **_set_status(answer["status"])}
            out.append(result)
        return {"setVariableResult": out}

    return Translated(tuple(calls), build)


def _set_status(status: str) -> Payload:
    result: Payload = {"attributeStatus": SET_STATUS[status]}
    if status == _NOT_SUPPORTED_16:
        result["attributeStatusInfo"] = _info("NotFound", "OCPP 1.6 ChangeConfiguration: NotSupported")
    return result


def _report_rows(answer: Payload, configuration_only: bool) -> list[Payload]:
    rows = []
    for entry in answer.get("configurationKey", ()):
        if configuration_only and entry["readonly"]:
            continue
        component, variable, kind = config_keys.names_of(entry["key"])
        attribute: Payload = {
            "type": "Actual",
            "mutability": "ReadOnly" if entry["readonly"] else "ReadWrite",
        }
        if "value" in entry:
            attribute["value"] = config_keys.value_to_201(entry["key"], entry["value"])
        rows.append(
            {
                "component": component,
                "variable": variable,
                "variableAttribute": [attribute],
                "variableCharacteristics": {"dataType": kind.value, "supportsMonitoring": False},
            }
        )
    return rows


def _base_report(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    base = payload["reportBase"]
    if base == "SummaryInventory":
        return _refuse("NotSupported", "UnsupportedParam", "OCPP 1.6 reports configuration keys only")
    request_id = payload["requestId"]
    generated_at = _iso(now)

    def rows(answers: Answers) -> list[Payload] | None:
        return None if answers[0] is None else _report_rows(answers[0], base == "ConfigurationInventory")

    def build(answers: Answers) -> Payload:
        found = rows(answers)
        if found is None:
            return {"status": "Rejected", "statusInfo": _no_answer()}
        return {"status": "Accepted" if found else "EmptyResultSet"}

    def follow_up(answers: Answers) -> tuple[Out, ...]:
        found = rows(answers) or []
        size = REPORT_ITEMS_PER_MESSAGE
        chunks = [found[i : i + size] for i in range(0, len(found), size)]
        return tuple(
            Out(
                "NotifyReport",
                {
                    "requestId": request_id,
                    "generatedAt": generated_at,
                    "seqNo": seq_no,
                    "tbc": seq_no < len(chunks) - 1,
                    "reportData": chunk,
                },
            )
            for seq_no, chunk in enumerate(chunks)
        )

    return Translated((Out("GetConfiguration", {}),), build, follow_up)


# -- smart charging ---------------------------------------------------------------------


def _set_profile(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    try:
        profile = profile_to_16(payload["chargingProfile"], lambda tx: tx16_of(state, tx))
    except ProfileError as exc:
        return _refuse("Rejected", exc.reason, exc.text)
    call = {"connectorId": payload["evseId"], "csChargingProfiles": profile}
    return _one(
        "SetChargingProfile", call, lambda answer: _status(answer, renamed={_NOT_SUPPORTED_16: "Rejected"})
    )


def _clear_profile(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    call: Payload = {}
    if "chargingProfileId" in payload:
        call["id"] = payload["chargingProfileId"]
    criteria = payload.get("chargingProfileCriteria", {})
    if "evseId" in criteria:
        call["connectorId"] = criteria["evseId"]
    if "chargingProfilePurpose" in criteria:
        purpose = PURPOSE_TO_16.get(criteria["chargingProfilePurpose"])
        if purpose is None:  # a 1.6 station cannot hold one
            return local({"status": "Unknown"})
        call["chargingProfilePurpose"] = purpose
    if "stackLevel" in criteria:
        call["stackLevel"] = criteria["stackLevel"]
    return _pass_status("ClearChargingProfile", call, fallback="Unknown")


def _composite(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    evse_id, duration = payload["evseId"], payload["duration"]
    call: Payload = {"connectorId": evse_id, "duration": duration}
    if "chargingRateUnit" in payload:
        call["chargingRateUnit"] = payload["chargingRateUnit"]
    requested_at = _iso(now)

    def build(answer: Payload | None) -> Payload:
        result = _status(answer)
        if answer is not None and answer["status"] == "Accepted":
            schedule = composite_to_201(answer, evse_id, duration, requested_at)
            if schedule is not None:
                result["schedule"] = schedule
        return result

    return _one("GetCompositeSchedule", call, build)


# -- local authorisation list and reservations -----------------------------------------


class _TokenError(ValueError):
    pass


def _id_tag(token: Payload) -> str:
    tag: str = token["idToken"]
    if len(tag) > ID_TAG_MAX:
        raise _TokenError(
            f"id token {tag!r} is longer than the {ID_TAG_MAX} characters of an OCPP 1.6 id tag"
        )
    return tag


def _list_entry(entry: Payload) -> Payload:
    out: Payload = {"idTag": _id_tag(entry["idToken"])}
    info = entry.get("idTokenInfo")
    if info is not None:
        if "evseId" in info:  # 1.6 would allow the token on every connector
            raise _TokenError("OCPP 1.6 cannot restrict an id tag to some EVSEs")
        tag_info: Payload = {"status": ID_STATUS[info["status"]]}
        if "cacheExpiryDateTime" in info:
            tag_info["expiryDate"] = info["cacheExpiryDateTime"]
        if "groupIdToken" in info:
            tag_info["parentIdTag"] = _id_tag(info["groupIdToken"])
        out["idTagInfo"] = tag_info
    return out


def _send_local_list(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    call: Payload = {"listVersion": payload["versionNumber"], "updateType": payload["updateType"]}
    try:
        if "localAuthorizationList" in payload:
            call["localAuthorizationList"] = [_list_entry(e) for e in payload["localAuthorizationList"]]
    except _TokenError as exc:
        return _refuse("Failed", "UnsupportedParam", str(exc))
    return _one(
        "SendLocalList", call, lambda answer: _status(answer, "Failed", {_NOT_SUPPORTED_16: "Failed"})
    )


def _local_list_version(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    # 1.6 says -1 for "no local list support"; 2.0.1 has 0 for "no list".
    def build(answer: Payload | None) -> Payload:
        return {"versionNumber": 0 if answer is None else max(0, answer["listVersion"])}

    return _one("GetLocalListVersion", {}, build)


def _reserve(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    try:
        call: Payload = {
            "connectorId": payload.get("evseId", 0),  # connector 0: any connector
            "expiryDate": payload["expiryDateTime"],
            "idTag": _id_tag(payload["idToken"]),
            "reservationId": payload["id"],
        }
        if "groupIdToken" in payload:
            call["parentIdTag"] = _id_tag(payload["groupIdToken"])
    except _TokenError as exc:
        return _refuse("Rejected", "InvalidIdToken", str(exc))
    return _pass_status("ReserveNow", call)


def _cancel_reservation(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    return _pass_status("CancelReservation", {"reservationId": payload["reservationId"]})


# -- firmware and logs ------------------------------------------------------------------


def _optional(payload: Payload, *names: str) -> Payload:
    return {name: payload[name] for name in names if name in payload}


def _firmware(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    firmware = payload["firmware"]
    signed = [name for name in ("signingCertificate", "signature") if name in firmware]
    if len(signed) == 1:
        return _refuse(
            "Rejected", "MissingParam", f"signed firmware needs both signingCertificate and {signed[0]}"
        )
    if signed:
        # The 1.6 security extension's SignedUpdateFirmware carries the same fields: the
        # station verifies the signature. A station without it answers with a CALLERROR.
        fields = ("location", "retrieveDateTime", "installDateTime", "signingCertificate", "signature")
        call: Payload = {"requestId": payload["requestId"], "firmware": _optional(firmware, *fields)}
        call.update(_optional(payload, "retries", "retryInterval"))
        action = "SignedUpdateFirmware"
    else:
        if not _URI.match(firmware["location"]):
            return _refuse("Rejected", "InvalidURL", "OCPP 1.6 needs the firmware location as a URI")
        # 1.6 has no installDateTime: the station installs once downloaded.
        call = {"location": firmware["location"], "retrieveDate": firmware["retrieveDateTime"]}
        call.update(_optional(payload, "retries", "retryInterval"))
        action = "UpdateFirmware"
    before, state.firmware_request_id = state.firmware_request_id, payload["requestId"]

    def build(answer: Payload | None) -> Payload:
        # A 1.6 UpdateFirmware answer is empty: having one means Accepted.
        result = _status(answer) if signed or answer is None else {"status": "Accepted"}
        if result["status"] not in ("Accepted", "AcceptedCanceled"):
            state.firmware_request_id = before
        return result

    return _one(action, call, build)


def _get_log(state: TranslationState, payload: Payload, now: datetime) -> Translation:
    if payload["logType"] != "DiagnosticsLog":
        return Refused("NotSupported", "OCPP 1.6 core has no security log (GetDiagnostics only)")
    log = payload["log"]
    if not _URI.match(log["remoteLocation"]):
        return _refuse("Rejected", "InvalidURL", "OCPP 1.6 needs the log location as a URI")
    call: Payload = {"location": log["remoteLocation"]}
    call.update(_optional(payload, "retries", "retryInterval"))
    if "oldestTimestamp" in log:
        call["startTime"] = log["oldestTimestamp"]
    if "latestTimestamp" in log:
        call["stopTime"] = log["latestTimestamp"]
    before, state.log_request_id = state.log_request_id, payload["requestId"]

    def build(answer: Payload | None) -> Payload:
        if answer is not None and "fileName" in answer:
            return {"status": "Accepted", "filename": answer["fileName"]}
        state.log_request_id = before
        if answer is None:
            return {"status": "Rejected", "statusInfo": _no_answer()}
        return {
            "status": "Rejected",
            "statusInfo": _info("NotFound", "the station has no diagnostics to upload"),
        }

    return _one("GetDiagnostics", call, build)


# -- the entry point --------------------------------------------------------------------

HANDLERS: dict[str, Handler] = {
    "RequestStartTransaction": _request_start,
    "RequestStopTransaction": _request_stop,
    "GetTransactionStatus": _transaction_status,
    "Reset": _reset,
    "ChangeAvailability": _change_availability,
    "UnlockConnector": _unlock,
    "TriggerMessage": _trigger,
    "ClearCache": _clear_cache,
    "DataTransfer": _data_transfer,
    "GetVariables": _get_variables,
    "SetVariables": _set_variables,
    "GetBaseReport": _base_report,
    "SetChargingProfile": _set_profile,
    "ClearChargingProfile": _clear_profile,
    "GetCompositeSchedule": _composite,
    "SendLocalList": _send_local_list,
    "GetLocalListVersion": _local_list_version,
    "ReserveNow": _reserve,
    "CancelReservation": _cancel_reservation,
    "UpdateFirmware": _firmware,
    "GetLog": _get_log,
}


def translate(
    state: TranslationState, station_id: str, action: str, payload: Payload, now: datetime
) -> Translation:
    """The 1.6 calls for a schema-valid 2.0.1 CSMS CALL ``action`` to ``station_id``, and
    how to answer the CSMS; or the CALLERROR when 1.6 has no counterpart."""
    handler = HANDLERS.get(action)
    if handler is not None:
        return _guarded(action, handler(state, payload, now))
    why = NO_COUNTERPART.get(action, "not an OCPP 2.0.1 call a CSMS sends to a station")
    return Refused("NotSupported", f"{action}: {why} (station {station_id} speaks OCPP 1.6)")


# The 2.0.1 answer statuses, per action (checked against the schemas by the tests): a
# station status outside them counts as no answer.
ANSWER_STATUSES: dict[str, frozenset[str]] = {
    action: frozenset(statuses.split())
    for action, statuses in {
        "RequestStartTransaction": "Accepted Rejected",
        "RequestStopTransaction": "Accepted Rejected",
        "Reset": "Accepted Rejected Scheduled",
        "ChangeAvailability": "Accepted Rejected Scheduled",
        "UnlockConnector": "Unlocked UnlockFailed OngoingAuthorizedTransaction UnknownConnector",
        "TriggerMessage": "Accepted Rejected NotImplemented",
        "ClearCache": "Accepted Rejected",
        "DataTransfer": "Accepted Rejected UnknownMessageId UnknownVendorId",
        "GetBaseReport": "Accepted Rejected NotSupported EmptyResultSet",
        "SetChargingProfile": "Accepted Rejected",
        "ClearChargingProfile": "Accepted Unknown",
        "GetCompositeSchedule": "Accepted Rejected",
        "SendLocalList": "Accepted Failed VersionMismatch",
        "ReserveNow": "Accepted Faulted Occupied Rejected Unavailable",
        "CancelReservation": "Accepted Rejected",
        "UpdateFirmware": "Accepted Rejected AcceptedCanceled InvalidCertificate RevokedCertificate",
        "GetLog": "Accepted Rejected AcceptedCanceled",
    }.items()
}


def _guarded(action: str, translation: Translation) -> Translation:
    """``translation`` whose answer and follow-up survive a station answer they cannot
    read: one that breaks them, or gives a status the 2.0.1 answer cannot carry, counts
    as no answer. (The shell passes schema-valid answers; this keeps a station's bad
    answer, or a bug, from crashing the relay or reaching the CSMS.)"""
    if isinstance(translation, Refused):
        return translation
    answer, follow_up = translation.answer, translation.follow_up
    statuses = ANSWER_STATUSES.get(action)

    def checked_answer(answers: Answers) -> Payload:
        result = answer(answers)
        if statuses is not None and result.get("status") not in statuses:
            raise ValueError(f"{action} status {result.get('status')!r}")
        return result

    def safe(build: Callable[[Answers], _T]) -> Callable[[Answers], _T]:
        def run(answers: Answers) -> _T:
            try:
                return build(answers)
            except (KeyError, TypeError, ValueError, AttributeError):
                return build([None] * len(answers))

        return run

    return Translated(translation.calls, safe(checked_answer), safe(follow_up))
