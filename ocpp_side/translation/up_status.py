"""1.6 StatusNotification -> 2.0.1 StatusNotification / NotifyEvent / TransactionEvent (pure).

A 1.6 status says three things, each sent as its own 2.0.1 call, in this order:
1. The connector's availability. Connector n > 0 is 2.0.1 EVSE n with its one connector 1:
   StatusNotification with the status below. Connector 0 (the whole charge point) has no
   2.0.1 StatusNotification: NotifyEvent, component ``ChargingStation``, variable
   ``AvailabilityState`` (trigger Delta, HardWiredNotification), the value as below.
2. An error. A 1.6 ``errorCode`` other than NoError is a NotifyEvent on the component's
   ``Problem`` variable: ``actualValue`` "true", ``techCode`` the errorCode, ``techInfo``
   the ``info``, ``vendorId`` and ``vendorErrorCode``; the next NoError on that connector
   clears it (``actualValue`` "false", ``cleared``). The component is ``Connector`` on
   EVSE n, or ``ChargingStation`` for connector 0.
3. The transaction. While a 1.6 transaction is open on the connector, a status that
   changes its chargingState adds a TransactionEvent Updated (``up_tx.status_update``).
The 1.6 answer is always the empty StatusNotification.conf: nothing to wait for.
"""

from __future__ import annotations

from datetime import datetime

from ocpp_side.translation import up_tx
from ocpp_side.translation.api import Answers, Out, Payload, Translated, TranslationState
from ocpp_side.translation.up_common import NEXT_EVENT_ID, PROBLEMS, iso

# 1.6 ChargePointStatus -> 2.0.1 ConnectorStatusEnumType (AvailabilityState for connector 0).
CONNECTOR_STATUS: dict[str, str] = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "SuspendedEV": "Occupied",
    "SuspendedEVSE": "Occupied",
    "Finishing": "Occupied",
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}
TECH_INFO_MAX = 500


def _component(connector: int) -> Payload:
    if connector > 0:
        return {"name": "Connector", "evse": {"id": connector, "connectorId": 1}}
    return {"name": "ChargingStation"}


def _notify_event(state: TranslationState, now: datetime, data: Payload) -> Out:
    event_id = state.extra.get(NEXT_EVENT_ID, 1)
    if not isinstance(event_id, int) or isinstance(event_id, bool) or event_id < 1:
        event_id = 1
    state.extra[NEXT_EVENT_ID] = event_id + 1
    event = {
        "eventId": event_id,
        "trigger": "Delta",
        "eventNotificationType": "HardWiredNotification",
        **data,
    }
    return Out("NotifyEvent", {"generatedAt": iso(now), "seqNo": 0, "eventData": [event]})


def _problem(state: TranslationState, payload: Payload, timestamp: str, now: datetime) -> Out | None:
    connector: int = payload["connectorId"]
    error: str = payload["errorCode"]
    problems: dict[str, str] = state.extra.setdefault(PROBLEMS, {})
    key = str(connector)
    data: Payload = {
        "timestamp": timestamp,
        "component": _component(connector),
        "variable": {"name": "Problem"},
    }
    if error != "NoError":
        problems[key] = error
        details = [payload.get("info")]
        details += [f"{k}={payload[k]}" for k in ("vendorId", "vendorErrorCode") if k in payload]
        tech_info = "; ".join(d for d in details if d)
        data.update(actualValue="true", techCode=error)
        if tech_info:
            data["techInfo"] = tech_info[:TECH_INFO_MAX]
        return _notify_event(state, now, data)
    previous = problems.pop(key, None)
    if previous is None:
        return None
    data.update(actualValue="false", techCode=previous, cleared=True)
    return _notify_event(state, now, data)


def _empty(answers: Answers) -> Payload:
    return {}


def status_notification(
    state: TranslationState, station_id: str, payload: Payload, now: datetime
) -> Translated:
    connector: int = payload["connectorId"]
    status: str = payload["status"]
    timestamp: str = payload.get("timestamp") or iso(now)
    value = CONNECTOR_STATUS[status]
    calls: list[Out] = []
    if connector > 0:
        body = {"timestamp": timestamp, "connectorStatus": value, "evseId": connector, "connectorId": 1}
        calls.append(Out("StatusNotification", body))
    else:
        availability = {
            "timestamp": timestamp,
            "actualValue": value,
            "component": _component(connector),
            "variable": {"name": "AvailabilityState"},
        }
        calls.append(_notify_event(state, now, availability))
    problem = _problem(state, payload, timestamp, now)
    if problem is not None:
        calls.append(problem)
    update = up_tx.status_update(state, connector, status, timestamp)
    if update is not None:
        calls.append(update)
    state.connector_status[connector] = status
    return Translated(tuple(calls), _empty)
