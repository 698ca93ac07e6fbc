"""station_setup.py: discovery parsing and metering settings per version."""

from __future__ import annotations

from gateway.model import OcppVersion
from ocpp_side import schemas
from ocpp_side.profiles import RateUnit
from ocpp_side.station_setup import (
    Discovered,
    MeteringPlan,
    accepted_settings,
    discovery_request,
    metering_settings,
    parse_discovery,
    setting_requests,
)

PLAN = MeteringPlan(60, 900, ("Energy.Active.Import.Register", "Power.Active.Import"))


def test_requests_are_schema_valid() -> None:
    for version in OcppVersion:
        action, payload = discovery_request(version)
        schemas.validate(version, action, payload, request=True)
        for action, payload in setting_requests(version, metering_settings(version, PLAN, PLAN.measurands)):
            schemas.validate(version, action, payload, request=True)


def test_parse_v16_discovery() -> None:
    response = {
        "configurationKey": [
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current, Power"},
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "5"},
        ]
    }
    found = parse_discovery(OcppVersion.V16, response)
    assert found == Discovered(frozenset({RateUnit.A, RateUnit.W}), 5)
    assert found.preferred_unit() is RateUnit.W
    current_only = parse_discovery(
        OcppVersion.V16,
        {
            "configurationKey": [
                {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"}
            ]
        },
    )
    assert current_only.preferred_unit() is RateUnit.A and current_only.max_stack_level is None
    assert parse_discovery(OcppVersion.V16, {"unknownKey": ["x"]}).preferred_unit() is None


def test_parse_v201_discovery() -> None:
    response = {
        "getVariableResult": [
            {
                "attributeStatus": "Accepted",
                "attributeValue": "A,W",
                "component": {"name": "SmartChargingCtrlr"},
                "variable": {"name": "RateUnit"},
            },
            {
                "attributeStatus": "UnknownVariable",
                "component": {"name": "SmartChargingCtrlr"},
                "variable": {"name": "ProfileStackLevel"},
            },
        ]
    }
    assert parse_discovery(OcppVersion.V201, response) == Discovered(
        frozenset({RateUnit.A, RateUnit.W}), None
    )


def test_accepted_settings_per_version() -> None:
    v16 = metering_settings(OcppVersion.V16, PLAN, PLAN.measurands)
    answers16 = [{"status": s} for s in ("Accepted", "Rejected", "RebootRequired", "NotSupported")]
    assert accepted_settings(OcppVersion.V16, v16, answers16) == [True, False, True, False]
    v201 = metering_settings(OcppVersion.V201, PLAN, PLAN.measurands)
    results = [
        {
            "attributeStatus": "Rejected" if s.measurands else "Accepted",
            "component": {"name": s.component},
            "variable": {"name": s.name},
        }
        for s in v201
    ]
    assert accepted_settings(OcppVersion.V201, v201, [{"setVariableResult": results}]) == [
        not s.measurands for s in v201
    ]
