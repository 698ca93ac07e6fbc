"""What a station's call says about charging there, in version-neutral terms (pure).

Each version module reads its own payloads into these (``v16.observe``,
``v201.observe``); the session turns them into core events (``StationActivity``,
``MeterSampled``) without knowing which version spoke.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MeterValues = Sequence[dict[str, Any]]  # an OCPP ``meterValue`` list


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """A connector (1.6) or an EVSE's connector (2.0.1, one integer key per pair) is in ``status``."""

    connector: int
    status: str


@dataclass(frozen=True, slots=True)
class MeterReading:
    """Meter values of one outlet: connector (1.6) or EVSE (2.0.1); 0 is the station's main meter."""

    outlet: int
    meter_values: MeterValues


@dataclass(frozen=True, slots=True)
class TransactionUpdate:
    """A transaction started, runs on or ended.

    ``outlet`` is the connector/EVSE when the message names it. ``meter_values`` is None
    for messages that never carry the power (1.6 Start/StopTransaction: the outlet is
    set to 0 W when its transaction stops), a list (maybe empty) for those that do
    (2.0.1 TransactionEvent: every one reports its outlet, 0 W once ended).
    """

    transaction_id: str | int
    running: bool
    outlet: int | None
    meter_values: MeterValues | None


Observation = ConnectorStatus | MeterReading | TransactionUpdate
