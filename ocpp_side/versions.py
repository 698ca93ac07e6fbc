"""The OCPP versions the gateway speaks: one module per version, all alike (pure).

``VersionRules`` names what every version module exposes (``v16.py``, ``v201.py``):
schema files, the error-code table, standalone answers, discovery and metering
requests, profile building and reading, what a station's calls say, what the relay
must keep or map, the gateway identity's messages. mypy checks each module against it.
A station connection picks its module once (``rules_for``); nothing else branches on
the version. A third version is a third module, added to ``PREFERENCE`` below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.core.model import OcppVersion
from ocpp_side import v16, v201
from ocpp_side.codec import ErrorKind
from ocpp_side.observations import Observation
from ocpp_side.profiles import StationMax
from ocpp_side.station_setup import Discovered, MeteringPlan, Setting

Payload = dict[str, Any]


class VersionRules(Protocol):
    """What a version module provides; see ``v16.py`` for what each one means."""

    @property
    def VERSION(self) -> OcppVersion: ...
    @property
    def SCHEMA_DIR(self) -> str: ...
    @property
    def ERROR_CODES(self) -> Mapping[ErrorKind, str]: ...
    @property
    def EMPTY_ANSWERS(self) -> frozenset[str]: ...
    @property
    def FIXED_ANSWERS(self) -> Mapping[str, Payload]: ...
    @property
    def COMPUTED_ANSWERS(self) -> frozenset[str]: ...
    @property
    def MAX_PURPOSE(self) -> str: ...
    @property
    def DURABLE(self) -> frozenset[str]: ...
    @property
    def TX_REFERENCES(self) -> frozenset[str]: ...
    @property
    def CSMS_TX_REFERENCES(self) -> frozenset[str]: ...
    @property
    def NOTIFIES_LIMIT(self) -> bool: ...
    @property
    def IDS_UNIQUE_ACROSS_CONNECTIONS(self) -> bool: ...

    def schema_file(self, action: str, request: bool) -> str: ...

    def answer(
        self,
        action: str,
        payload: Payload,
        authorize: Callable[[str], str],
        new_transaction_id: Callable[[], int],
    ) -> Payload: ...

    def discovery_request(self) -> tuple[str, Payload]: ...
    def parse_discovery(self, response: Payload) -> Discovered: ...
    def metering_settings(self, plan: MeteringPlan, measurands: tuple[str, ...]) -> list[Setting]: ...
    def setting_requests(self, settings: list[Setting]) -> list[tuple[str, Payload]]: ...
    def accepted_settings(self, settings: list[Setting], responses: list[Payload]) -> list[bool]: ...

    def set_charging_profile(self, parts: StationMax) -> Payload: ...

    def profile_of(self, set_profile: Payload) -> Payload: ...
    def profile_id(self, profile: Payload) -> int: ...
    def schedules_of(self, profile: Payload) -> list[Payload]: ...
    def cleared_profile(self, clear: Payload) -> tuple[Any, Any]: ...

    def observe(self, action: str, payload: Payload, response: Payload) -> Observation | None: ...

    def identity_boot(self, vendor: str, model: str) -> Payload: ...
    def limit_call(self, action: str, payload: Payload, vendor: str) -> tuple[str, Payload]: ...


# Offered to stations in this order (the first a station also offers wins).
PREFERENCE: tuple[VersionRules, ...] = (v201, v16)
ALL: Mapping[OcppVersion, VersionRules] = {rules.VERSION: rules for rules in PREFERENCE}
SUBPROTOCOLS: list[str] = [rules.VERSION.value for rules in PREFERENCE]


def rules_for(version: OcppVersion) -> VersionRules:
    return ALL[version]
