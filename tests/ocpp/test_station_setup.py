"""Discovery parsing and metering settings, per version module (the types in station_setup.py)."""

from __future__ import annotations

from gateway.core.model import OcppVersion
from ocpp_side import schemas, v16, v201
from ocpp_side.profiles import RateUnit
from ocpp_side.station_setup import Discovered, MeteringPlan
from ocpp_side.versions import rules_for

PLAN = MeteringPlan(60, 900, ("Energy.Active.Import.Register", "Power.Active.Import"))


def test_requests_are_schema_valid() -> None:
    for version in OcppVersion:
        rules = rules_for(version)
        action, payload = rules.discovery_request()
        schemas.validate(version, action, payload, request=True)
        for action, payload in rules.setting_requests(rules.metering_settings(PLAN, PLAN.measurands)):
            schemas.validate(version, action, payload, request=True)


def test_parse_v16_discovery() -> None:
    response = {
        "configurationKey": [
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current, Power"},
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "5"},
        ]
    }
    found = v16.parse_discovery(response)
    assert found == Discovered(frozenset({RateUnit.A, RateUnit.W}), 5)
    assert found.preferred_unit() is RateUnit.W
    current_only = v16.parse_discovery(
        {
            "configurationKey": [
                {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"}
            ]
        },
    )
    assert current_only.preferred_unit() is RateUnit.A and current_only.max_stack_level is None
    assert v16.parse_discovery({"unknownKey": ["x"]}).preferred_unit() is None


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
    assert v201.parse_discovery(response) == Discovered(frozenset({RateUnit.A, RateUnit.W}), None)


def test_accepted_settings_per_version() -> None:
    settings16 = v16.metering_settings(PLAN, PLAN.measurands)
    answers16 = [{"status": s} for s in ("Accepted", "Rejected", "RebootRequired", "NotSupported")]
    assert v16.accepted_settings(settings16, answers16) == [True, False, True, False]
    settings201 = v201.metering_settings(PLAN, PLAN.measurands)
    results = [
        {
            "attributeStatus": "Rejected" if s.measurands else "Accepted",
            "component": {"name": s.component},
            "variable": {"name": s.name},
        }
        for s in settings201
    ]
    assert v201.accepted_settings(settings201, [{"setVariableResult": results}]) == [
        not s.measurands for s in settings201
    ]
