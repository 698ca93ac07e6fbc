"""The pure translation module: commands to events, decisions to monitored values, deadband policy."""

from __future__ import annotations

import math

import pytest

from gateway.core.arbiter import SiteView
from gateway.core.decisions import (
    ConfirmSetpoint,
    EnforcementChanged,
    LimitChanged,
    PublishTotalPower,
    TimeToComply,
)
from gateway.core.events import SetpointReceived
from gateway.core.model import LimitSource, Mode, Quality, RejectReason, SetpointKind
from iec104.codec import NO_FLAGS, Cot, Cp56Time, QualityFlag, TypeId
from iec104.points import (
    CommandIn,
    CommandRefused,
    MonitoredValue,
    Role,
    TransmitPolicy,
    from_watts,
    point_specs,
    quality_flags,
    telemetry_for,
    telemetry_from_view,
    to_watts,
    translate_command,
)
from iec104.settings import PointConfig, PointMap

SPECS = point_specs(PointMap())
KW_SPECS = point_specs(PointMap(limit_setpoint=PointConfig(100, "kW"), total_power=PointConfig(200, "kW")))
NOW = 1_800_000_000.0


def command(ioa: int = 100, value: float = 20000.0, **kw: object) -> CommandIn:
    fields: dict[str, object] = {
        "type_id": TypeId.C_SE_NC_1,
        "common_address": 1,
        "cot": Cot.ACTIVATION,
        "peer": "p",
    }
    fields.update(kw)
    return CommandIn(ioa=ioa, value=value, **fields)  # type: ignore[arg-type]


def test_default_point_map_is_the_design_table() -> None:
    assert [(s.role, s.ioa, s.type_id) for s in SPECS] == [
        (Role.LIMIT_SETPOINT, 100, TypeId.C_SE_NC_1),
        (Role.LIMIT_SETPOINT_TIME_TAGGED, 101, TypeId.C_SE_TC_1),
        (Role.TOTAL_POWER, 200, TypeId.M_ME_TF_1),
        (Role.LIMIT_IN_FORCE, 201, TypeId.M_ME_TF_1),
        (Role.FALLBACK_ACTIVE, 300, TypeId.M_SP_TB_1),
        (Role.LIMIT_ENFORCED, 301, TypeId.M_SP_TB_1),
        (Role.TIME_TO_COMPLY, 202, TypeId.M_ME_TF_1),
    ]


def test_units() -> None:
    assert to_watts(7.2, "kW") == 7200.0
    assert to_watts(5.9, "kW") == 5900.0
    assert from_watts(7200.0, "kW") == 7.2
    assert to_watts(7200.0, "W") == 7200.0
    assert math.isnan(to_watts(math.nan, "kW"))
    assert to_watts(-math.inf, "kW") == -math.inf


def test_plain_setpoint_becomes_the_core_event() -> None:
    assert translate_command(command(), 1, SPECS) == SetpointReceived(20000.0, SetpointKind.PLAIN, None, "p")
    assert translate_command(command(value=20.0), 1, KW_SPECS) == SetpointReceived(20000.0, peer="p")


def test_values_are_not_judged_here_the_core_refuses_them() -> None:
    for value in (math.nan, math.inf, -1.0, 1e12):
        event = translate_command(command(value=value), 1, SPECS)
        assert isinstance(event, SetpointReceived)


def test_time_tag_is_passed_on_and_an_invalid_tag_has_no_age() -> None:
    tagged = command(101, type_id=TypeId.C_SE_TC_1, time_tag=Cp56Time(NOW - 2))
    assert translate_command(tagged, 1, SPECS) == SetpointReceived(
        20000.0, SetpointKind.TIME_TAGGED, NOW - 2, "p"
    )
    invalid = command(101, type_id=TypeId.C_SE_TC_1, time_tag=Cp56Time(NOW, invalid=True))
    event = translate_command(invalid, 1, SPECS)
    assert (
        isinstance(event, SetpointReceived) and event.time_tag_s is not None and math.isnan(event.time_tag_s)
    )


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (command(common_address=2), RejectReason.WRONG_COMMON_ADDRESS),
        (command(102), RejectReason.UNKNOWN_POINT),
        (command(201), RejectReason.UNKNOWN_POINT),
        (command(101), RejectReason.UNKNOWN_POINT),  # C_SE_NC_1 to the time-tagged point
        (command(cot=Cot.DEACTIVATION), RejectReason.UNEXPECTED_CAUSE),
        (command(cot=Cot.SPONTANEOUS), RejectReason.UNEXPECTED_CAUSE),
    ],
)
def test_refusals_before_the_core(cmd: CommandIn, reason: RejectReason) -> None:
    refused = translate_command(cmd, 1, SPECS)
    assert isinstance(refused, CommandRefused)
    assert refused.reason is reason
    assert refused.kind == "C_SE_NC_1"
    assert refused.value_w == 20000.0


def test_quality_mapping() -> None:
    assert quality_flags(Quality.GOOD) == QualityFlag(0)
    assert quality_flags(Quality.NOT_TOPICAL) == QualityFlag.NT
    assert quality_flags(Quality.INVALID) == QualityFlag.IV


def test_decisions_become_monitored_values() -> None:
    values = telemetry_for(
        [
            ConfirmSetpoint(20000.0),
            LimitChanged(20000.0, LimitSource.DSO_SETPOINT, Mode.NORMAL, "setpoint"),
            PublishTotalPower(7200.0, Quality.NOT_TOPICAL),
            EnforcementChanged(True),
        ],
        SPECS,
        NOW,
    )
    by_ioa = {v.ioa: (v.value, v.quality) for v in values}
    assert by_ioa == {
        201: (20000.0, QualityFlag(0)),
        300: (False, QualityFlag(0)),
        200: (7200.0, QualityFlag.NT),
        301: (True, QualityFlag(0)),
    }
    assert all(v.recorded_at_s == NOW for v in values)


def test_fallback_mode_sets_the_fallback_point_and_later_decisions_win() -> None:
    values = telemetry_for(
        [
            LimitChanged(20000.0, LimitSource.HOLD, Mode.HOLD, "lost"),
            LimitChanged(10000.0, LimitSource.FALLBACK, Mode.FALLBACK, "expired"),
        ],
        SPECS,
        NOW,
    )
    assert {v.ioa: v.value for v in values} == {201: 10000.0, 300: True}


def test_kw_points_carry_kilowatts_and_the_deadband_stays_in_watts() -> None:
    (total,) = telemetry_for([PublishTotalPower(7200.0, Quality.GOOD)], KW_SPECS, NOW)
    assert (total.value, total.value_w) == (7.2, 7200.0)


def test_view_gives_every_monitored_point() -> None:
    view = SiteView(10000.0, LimitSource.FALLBACK, Mode.FALLBACK, False, 0.0, Quality.GOOD, True, ())
    values = telemetry_from_view(view, SPECS, NOW)
    assert {v.ioa: v.value for v in values} == {200: 0.0, 201: 10000.0, 300: True, 301: True, 202: 0.0}
    # No command has closed yet: the time to comply is not topical, not a zero that looks measured.
    assert {v.ioa: v.quality for v in values}[202] == QualityFlag.NT


def test_time_to_comply_is_sent_as_each_command_closes() -> None:
    (complied,) = telemetry_for([TimeToComply(3.25)], SPECS, NOW)
    assert (complied.ioa, complied.type_id, complied.value, complied.quality) == (
        202,
        TypeId.M_ME_TF_1,
        3.25,
        NO_FLAGS,
    )
    (never,) = telemetry_for([TimeToComply(None)], SPECS, NOW)
    assert (never.value, never.quality) == (0.0, QualityFlag.IV)  # the command never complied
    view = SiteView(
        10000.0, LimitSource.FALLBACK, Mode.FALLBACK, False, 0.0, Quality.GOOD, True, (),
        time_to_comply_s=3.25, time_to_comply_known=True,
    )  # fmt: skip
    assert {v.ioa: v.value for v in telemetry_from_view(view, SPECS, NOW)}[202] == 3.25  # on interrogation


def measured(value_w: float, quality: QualityFlag = NO_FLAGS) -> MonitoredValue:
    return MonitoredValue(Role.TOTAL_POWER, 200, TypeId.M_ME_TF_1, value_w, quality, NOW, value_w)


def test_deadband_compares_with_the_last_value_sent() -> None:
    policy = TransmitPolicy(deadband_w=500.0)
    assert policy.should_send(measured(7200.0))
    policy.sent(measured(7200.0))
    assert not policy.should_send(measured(7200.0))
    assert not policy.should_send(measured(7650.0))
    assert policy.should_send(measured(7700.0))
    assert policy.should_send(measured(7200.0, QualityFlag.NT))  # quality always counts
    policy.forget()
    assert policy.should_send(measured(7200.0))


def test_zero_deadband_sends_every_change_and_status_points_every_flip() -> None:
    policy = TransmitPolicy(deadband_w=0.0)
    policy.sent(measured(7200.0))
    assert policy.should_send(measured(7200.5))
    status = MonitoredValue(Role.FALLBACK_ACTIVE, 300, TypeId.M_SP_TB_1, False, QualityFlag(0), NOW)
    policy.sent(status)
    assert not policy.should_send(status)
    assert policy.should_send(
        MonitoredValue(Role.FALLBACK_ACTIVE, 300, TypeId.M_SP_TB_1, True, QualityFlag(0), NOW)
    )
