"""1.6 transactions -> 2.0.1 TransactionEvents (pure): Start/MeterValues/Stop, and the
chargingState a StatusNotification implies.

Ids. The gateway gives the 1.6 ``transactionId`` itself (``state.next_tx16``, wrapping
to 1 after 2^31 - 1, never one still open) and makes the 2.0.1 one from it:
``<8 hex of sha256(station id)>-<UTC time of translation, yyyymmddThhmmss>-<1.6 id>``
(at most 36 characters; unique per station even if the state were lost, and across
stations for a CSMS that keys transactions by id alone). ``seqNo`` is assigned here, once:
0 for Started, then the last one sent + 1 (``state.seq_no``), so a replayed outbox never
repeats one. A transaction is open while ``state.tx201_of`` and ``state.tx_connector``
name it; Stop removes it from both (and its ``seq_no``) and remembers the last
``CLOSED_KEPT`` closed ones, so a StopTransaction the station repeats is answered
without telling the CSMS twice.

A StopTransaction for a transaction the gateway never saw start (state lost, or started
before translation was switched on) still reaches the CSMS: a Started (triggerReason
AbnormalCondition, no EVSE: unknown) then its Ended, under a new 2.0.1 id: the energy is
billed, and every Ended has its Started.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ocpp_side.translation import up_meter
from ocpp_side.translation.api import Answers, Out, Payload, Translated, TranslationState
from ocpp_side.translation.up_common import CHARGING_STATE, CLOSED, id_tag_info, id_token

TX16_MAX = 2**31 - 1  # 1.6 stations keep transaction ids in a signed 32-bit integer
CLOSED_KEPT = 16

# 1.6 StopTransaction reason (absent: Local) -> (2.0.1 stoppedReason, triggerReason).
STOP_REASONS: dict[str, tuple[str, str]] = {
    "Local": ("Local", "StopAuthorized"),
    "Remote": ("Remote", "RemoteStop"),
    "DeAuthorized": ("DeAuthorized", "Deauthorized"),
    "EVDisconnected": ("EVDisconnected", "EVCommunicationLost"),
    "EmergencyStop": ("EmergencyStop", "AbnormalCondition"),
    "PowerLoss": ("PowerLoss", "AbnormalCondition"),
    "Reboot": ("Reboot", "AbnormalCondition"),  # 1.6: a local reboot, e.g. the watchdog
    "HardReset": ("ImmediateReset", "ResetCommand"),
    "SoftReset": ("ImmediateReset", "ResetCommand"),  # both stop the transaction on the command
    "UnlockCommand": ("Remote", "UnlockCommand"),  # the CSMS's unlock ended it; no such reason in 2.0.1
    "Other": ("Other", "AbnormalCondition"),
}

# 1.6 connector status -> 2.0.1 chargingState, while a transaction is open on the connector.
CHARGING_STATES: dict[str, str] = {
    "Charging": "Charging",
    "SuspendedEV": "SuspendedEV",
    "SuspendedEVSE": "SuspendedEVSE",
    "Preparing": "EVConnected",  # authorized, no energy yet
    "Finishing": "EVConnected",  # energy over, the EV (cable) still there
    "Available": "Idle",  # the EV left before the station stopped the transaction
}
# What a status already says when the transaction starts (Preparing alone does not say
# whether the EV is plugged in yet).
_AT_START = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE"})


def _new_tx16(state: TranslationState) -> int:
    tx = state.next_tx16 if 1 <= state.next_tx16 <= TX16_MAX else 1
    while tx in state.tx201_of:  # after a wrap: never an id still open
        tx = tx + 1 if tx < TX16_MAX else 1
    state.next_tx16 = tx + 1 if tx < TX16_MAX else 1
    return tx


def new_tx201(station_id: str, tx16: int, now: datetime, unseen: bool = False) -> str:
    """The 2.0.1 id of 1.6 transaction ``tx16`` (``unseen``: one whose start the gateway missed)."""
    station = hashlib.sha256(station_id.encode()).hexdigest()[:8]
    at = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).astimezone(UTC)
    tail = f"{'u' if unseen else ''}{tx16}"
    if len(tail) > 11:  # a station's own id beyond 32 bits: 2.0.1 ids have 36 characters at most
        tail = "h" + hashlib.sha256(tail.encode()).hexdigest()[:10]
    return f"{station}-{at:%Y%m%dT%H%M%S}-{tail}"


def _next_seq(state: TranslationState, tx201: str) -> int:
    seq = state.seq_no.get(tx201, -1) + 1
    state.seq_no[tx201] = seq
    return seq


def open_on(state: TranslationState, connector: int) -> int | None:
    """The open 1.6 transaction on ``connector`` (the newest, should there be more)."""
    txs = [tx for tx, c in state.tx_connector.items() if c == connector and tx in state.tx201_of]
    return max(txs) if txs else None


def _charging_states(state: TranslationState) -> dict[str, str]:
    states: dict[str, str] = state.extra.setdefault(CHARGING_STATE, {})
    return states


def _event(
    state: TranslationState, kind: str, tx201: str, timestamp: str, trigger: str, info: Payload | None = None
) -> Payload:
    seq = 0 if kind == "Started" else _next_seq(state, tx201)
    if kind == "Started":
        state.seq_no[tx201] = 0
    return {
        "eventType": kind,
        "timestamp": timestamp,
        "triggerReason": trigger,
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx201, **(info or {})},
    }


def _last_answer(answers: Answers) -> Payload | None:
    return answers[-1] if answers else None


def _token_info(answer: Payload | None) -> Any:
    return None if answer is None else answer.get("idTokenInfo")


# -- StartTransaction --------------------------------------------------------------


def start(state: TranslationState, station_id: str, payload: Payload, now: datetime) -> Translated:
    connector: int = payload["connectorId"]
    id_tag: str = payload["idTag"]
    timestamp: str = payload["timestamp"]
    tx16 = _new_tx16(state)
    tx201 = new_tx201(station_id, tx16, now)
    state.tx201_of[tx16] = tx201
    state.tx_connector[tx16] = connector
    info: Payload = {}
    trigger = "Authorized"
    remote_start_id = state.remote_start.pop(id_tag, None)
    if remote_start_id is not None:
        trigger = "RemoteStart"
        info["remoteStartId"] = remote_start_id
    status = state.connector_status.get(connector)
    if status in _AT_START:
        info["chargingState"] = _charging_states(state)[tx201] = CHARGING_STATES[status]
    event = _event(state, "Started", tx201, timestamp, trigger, info)
    if connector > 0:
        event["evse"] = {"id": connector, "connectorId": 1}
    event["idToken"] = id_token(id_tag)
    event["meterValue"] = [up_meter.register(payload["meterStart"], "Transaction.Begin", timestamp)]
    if "reservationId" in payload:
        event["reservationId"] = payload["reservationId"]

    def answer(answers: Answers) -> Payload:
        return {"transactionId": tx16, "idTagInfo": id_tag_info(_token_info(_last_answer(answers)))}

    return Translated((Out("TransactionEvent", event),), answer)


# -- MeterValues -------------------------------------------------------------------


def _meter_trigger(entries: Sequence[Mapping[str, Any]]) -> str:
    contexts = {s.get("context", "Sample.Periodic") for e in entries for s in e.get("sampledValue", ())}
    if "Trigger" in contexts:
        return "Trigger"
    if contexts == {"Sample.Clock"}:
        return "MeterValueClock"
    return "MeterValuePeriodic"


def _empty(answers: Answers) -> Payload:
    return {}


def meter_values(state: TranslationState, station_id: str, payload: Payload, now: datetime) -> Translated:
    connector: int = payload["connectorId"]
    entries: list[Payload] = payload["meterValue"]
    tx16 = payload.get("transactionId")
    if tx16 is None and connector > 0:
        tx16 = open_on(state, connector)
    tx201 = state.tx201_of.get(tx16) if isinstance(tx16, int) else None
    kept, left = up_meter.convert(entries)
    body: Payload
    if tx201 is not None:
        body = _event(state, "Updated", tx201, entries[-1]["timestamp"], _meter_trigger(entries))
        if kept:
            body["meterValue"] = kept
        action = "TransactionEvent"
    elif kept:
        body, action = {"evseId": connector, "meterValue": kept}, "MeterValues"
    else:  # 2.0.1 MeterValues needs one translatable value: only Temperature/RPM/garbage here
        return Translated((), _empty)
    if left:
        body["customData"] = up_meter.custom_data(left)
    return Translated((Out(action, body),), _empty)


# -- StatusNotification: the transaction's chargingState ---------------------------


def status_update(state: TranslationState, connector: int, status: str, timestamp: str) -> Out | None:
    """TransactionEvent Updated (ChargingStateChanged) when ``status`` changes the
    chargingState of the transaction open on ``connector``; None otherwise."""
    tx16 = open_on(state, connector) if connector > 0 else None
    charging = CHARGING_STATES.get(status)
    if tx16 is None or charging is None:
        return None
    tx201 = state.tx201_of[tx16]
    states = _charging_states(state)
    if states.get(tx201) == charging:
        return None
    states[tx201] = charging
    event = _event(state, "Updated", tx201, timestamp, "ChargingStateChanged", {"chargingState": charging})
    return Out("TransactionEvent", event)


# -- StopTransaction ---------------------------------------------------------------


def _closed(state: TranslationState) -> list[list[Any]]:
    closed: list[list[Any]] = state.extra.setdefault(CLOSED, [])
    return closed


def _close(state: TranslationState, tx16: int, tx201: str) -> None:
    state.tx201_of.pop(tx16, None)
    state.tx_connector.pop(tx16, None)
    state.seq_no.pop(tx201, None)
    _charging_states(state).pop(tx201, None)
    closed = [pair for pair in _closed(state) if pair[0] != tx16]
    closed.append([tx16, tx201])
    state.extra[CLOSED] = closed[-CLOSED_KEPT:]


def stop(state: TranslationState, station_id: str, payload: Payload, now: datetime) -> Translated:
    tx16: int = payload["transactionId"]
    id_tag: str | None = payload.get("idTag")
    timestamp: str = payload["timestamp"]

    def answer(answers: Answers) -> Payload:
        if id_tag is None:
            return {}
        return {"idTagInfo": id_tag_info(_token_info(_last_answer(answers)))}

    tx201 = state.tx201_of.get(tx16)
    calls: list[Out] = []
    if tx201 is None:
        if any(pair[0] == tx16 for pair in _closed(state)):
            return Translated((), answer)  # the station repeated it: the CSMS has it already
        tx201 = new_tx201(station_id, tx16, now, unseen=True)
        started = _event(state, "Started", tx201, timestamp, "AbnormalCondition")
        if id_tag is not None:
            started["idToken"] = id_token(id_tag)
        calls.append(Out("TransactionEvent", started))
    stopped_reason, trigger = STOP_REASONS[payload.get("reason", "Local")]
    ended = _event(state, "Ended", tx201, timestamp, trigger, {"stoppedReason": stopped_reason})
    if id_tag is not None:
        ended["idToken"] = id_token(id_tag)
    kept, left = up_meter.convert(payload.get("transactionData", ()))
    ended["meterValue"] = [*kept, up_meter.register(payload["meterStop"], "Transaction.End", timestamp)]
    if left:
        ended["customData"] = up_meter.custom_data(left)
    calls.append(Out("TransactionEvent", ended))
    _close(state, tx16, tx201)
    return Translated(tuple(calls), answer)
