"""The IEC 104 translation module: point map <-> core events and decisions. Pure, no sockets.

Everything the outstation decides about a point lives here, so it is tested without c104:
which IOA plays which role, kW/W conversion, how a received command becomes a
``SetpointReceived`` (or why it is refused before the core sees it), how a core decision
becomes monitored values with IEC 104 quality flags, and when a value is worth a
spontaneous transmission (deadband) versus only the cyclic one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from gateway.core.arbiter import SiteView
from gateway.core.decisions import Decision, EnforcementChanged, LimitChanged, PublishTotalPower, TimeToComply
from gateway.core.events import SetpointReceived
from gateway.core.model import Mode, Quality, RejectReason, SetpointKind
from iec104.codec import Cot, Cp56Time, QualityFlag, TypeId
from iec104.settings import PointConfig, PointMap


class Role(StrEnum):
    """What a point means; the names are the keys of ``[iec104.points]``."""

    LIMIT_SETPOINT = "limit_setpoint"
    LIMIT_SETPOINT_TIME_TAGGED = "limit_setpoint_time_tagged"
    TOTAL_POWER = "total_power"
    LIMIT_IN_FORCE = "limit_in_force"
    FALLBACK_ACTIVE = "fallback_active"
    LIMIT_ENFORCED = "limit_enforced"
    TIME_TO_COMPLY = "time_to_comply"


ROLE_TYPES: dict[Role, TypeId] = {
    Role.LIMIT_SETPOINT: TypeId.C_SE_NC_1,
    Role.LIMIT_SETPOINT_TIME_TAGGED: TypeId.C_SE_TC_1,
    Role.TOTAL_POWER: TypeId.M_ME_TF_1,
    Role.LIMIT_IN_FORCE: TypeId.M_ME_TF_1,
    Role.FALLBACK_ACTIVE: TypeId.M_SP_TB_1,
    Role.LIMIT_ENFORCED: TypeId.M_SP_TB_1,
    Role.TIME_TO_COMPLY: TypeId.M_ME_TF_1,
}
COMMAND_ROLES = (Role.LIMIT_SETPOINT, Role.LIMIT_SETPOINT_TIME_TAGGED)
MONITORED_ROLES = (
    Role.TOTAL_POWER,
    Role.LIMIT_IN_FORCE,
    Role.FALLBACK_ACTIVE,
    Role.LIMIT_ENFORCED,
    Role.TIME_TO_COMPLY,
)

_UNIT_FACTOR = {"W": 1.0, "kW": 1000.0}


@dataclass(frozen=True, slots=True)
class PointSpec:
    role: Role
    ioa: int
    type_id: TypeId
    unit: str = "W"
    select_before_operate: bool = False

    @property
    def is_command(self) -> bool:
        return self.role in COMMAND_ROLES


def point_specs(points: PointMap) -> tuple[PointSpec, ...]:
    """The configured point map as specs, in role order."""
    specs = []
    for role in Role:
        cfg: PointConfig = getattr(points, role.value)
        specs.append(PointSpec(role, cfg.ioa, ROLE_TYPES[role], cfg.unit, cfg.select_before_operate))
    return tuple(specs)


def to_watts(value: float, unit: str) -> float:
    """A value in the point's unit, in watts. NaN and infinities pass through for the core to refuse."""
    return round(value * _UNIT_FACTOR[unit], 6)  # 5.9 kW is 5900 W, not 5900.000000000001


def from_watts(value_w: float, unit: str) -> float:
    return value_w / _UNIT_FACTOR[unit]


def quality_flags(quality: Quality) -> QualityFlag:
    """Core quality onto QDS/SIQ bits: not topical -> NT, invalid (no reading at all) -> IV."""
    match quality:
        case Quality.GOOD:
            return QualityFlag(0)
        case Quality.NOT_TOPICAL:
            return QualityFlag.NT
        case Quality.INVALID:
            return QualityFlag.IV
    raise ValueError(quality)  # pragma: no cover - exhaustive over Quality


# -- commands (master -> outstation) -------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandIn:
    """A command as it arrived, before any judgement."""

    type_id: int
    ioa: int
    common_address: int
    cot: int
    value: float
    time_tag: Cp56Time | None = None
    peer: str = ""
    test: bool = False  # T bit of the cause octet
    negative: bool = False  # P/N bit of the cause octet


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """The adapter refuses the command before the core sees it (audited with this reason)."""

    reason: RejectReason
    detail: str
    kind: str
    value_w: float | None


@dataclass(frozen=True, slots=True)
class SetpointTest:
    """A valid-looking command with the T bit set: it is checked and answered, never applied.

    IEC 60870-5-101 7.2.3: a test ASDU tests "transmission and equipment without controlling
    the process". The answer mirrors T (c104 clones the command's cause octet).
    """

    event: SetpointReceived


def command_kind(type_id: int) -> str:
    try:
        return TypeId(type_id).name
    except ValueError:
        return f"type {type_id}"


def translate_command(
    command: CommandIn, common_address: int, specs: tuple[PointSpec, ...]
) -> SetpointReceived | CommandRefused | SetpointTest:
    """Turn a received command into the core's event, or say why it cannot go to the core.

    A command with the T bit set that passes every check here comes back as ``SetpointTest``:
    the outstation answers it and never applies it.
    """
    event = _translate(command, common_address, specs)
    if command.test and isinstance(event, SetpointReceived):
        return SetpointTest(event)
    return event


def _translate(
    command: CommandIn, common_address: int, specs: tuple[PointSpec, ...]
) -> SetpointReceived | CommandRefused:
    kind = command_kind(command.type_id)
    spec = next((s for s in specs if s.ioa == command.ioa and s.is_command), None)
    value_w = to_watts(command.value, spec.unit) if spec is not None else command.value
    if command.common_address != common_address:
        return CommandRefused(
            RejectReason.WRONG_COMMON_ADDRESS,
            f"{kind} to common address {command.common_address}, this station is {common_address}",
            kind,
            value_w,
        )
    if spec is None:
        return CommandRefused(
            RejectReason.UNKNOWN_POINT, f"{kind} to unknown IOA {command.ioa}", kind, value_w
        )
    if command.type_id != spec.type_id:
        return CommandRefused(
            RejectReason.UNKNOWN_POINT,
            f"{kind} to IOA {command.ioa}, which takes {spec.type_id.name}",
            kind,
            value_w,
        )
    if command.cot != Cot.ACTIVATION:
        return CommandRefused(
            RejectReason.UNEXPECTED_CAUSE,
            f"{kind} at IOA {command.ioa} with cause of transmission {command.cot}, only activation (6) is accepted",
            kind,
            value_w,
        )
    if command.negative:
        # P/N is the answer's bit (7.2.3): a command in the control direction never carries it.
        return CommandRefused(
            RejectReason.UNEXPECTED_CAUSE,
            f"{kind} at IOA {command.ioa} with the P/N (negative) bit set: only a confirmation carries it",
            kind,
            value_w,
        )
    if spec.type_id == TypeId.C_SE_TC_1:
        if command.time_tag is None:  # pragma: no cover - the codec always decodes the tag of type 63
            return CommandRefused(RejectReason.STALE, "C_SE_TC_1 without a time tag", kind, value_w)
        # An invalid tag (IV bit) has no age: NaN makes the core refuse it as stale.
        tag_s = math.nan if command.time_tag.invalid else command.time_tag.timestamp_s
        return SetpointReceived(value_w, SetpointKind.TIME_TAGGED, tag_s, command.peer)
    return SetpointReceived(value_w, SetpointKind.PLAIN, None, command.peer)


# -- telemetry (outstation -> master) -------------------------------------------


@dataclass(frozen=True, slots=True)
class MonitoredValue:
    """One monitored point's current state, ready for the wire. ``value_w`` drives the deadband."""

    role: Role
    ioa: int
    type_id: TypeId
    value: float | bool
    quality: QualityFlag
    recorded_at_s: float
    value_w: float | None = None


def _measured(spec: PointSpec, value_w: float, quality: QualityFlag, now_s: float) -> MonitoredValue:
    return MonitoredValue(
        spec.role, spec.ioa, spec.type_id, from_watts(value_w, spec.unit), quality, now_s, value_w
    )


def _time_to_comply(spec: PointSpec, seconds: float | None, known: bool, now_s: float) -> MonitoredValue:
    """Seconds, sent on every change (no deadband). No command closed yet: 0 and not topical
    (NT); the last command never complied: 0 and invalid (IV)."""
    if seconds is not None:
        return MonitoredValue(spec.role, spec.ioa, spec.type_id, seconds, QualityFlag(0), now_s)
    quality = QualityFlag.IV if known else QualityFlag.NT
    return MonitoredValue(spec.role, spec.ioa, spec.type_id, 0.0, quality, now_s)


def _status(spec: PointSpec, on: bool, now_s: float) -> MonitoredValue:
    return MonitoredValue(spec.role, spec.ioa, spec.type_id, on, QualityFlag(0), now_s)


def _by_role(specs: tuple[PointSpec, ...]) -> dict[Role, PointSpec]:
    return {s.role: s for s in specs}


def telemetry_for(
    decisions: list[Decision] | tuple[Decision, ...], specs: tuple[PointSpec, ...], now_s: float
) -> list[MonitoredValue]:
    """The monitored values a batch of core decisions changes (the latest per point wins)."""
    roles = _by_role(specs)
    out: dict[Role, MonitoredValue] = {}
    for decision in decisions:
        match decision:
            case LimitChanged():
                out[Role.LIMIT_IN_FORCE] = _measured(
                    roles[Role.LIMIT_IN_FORCE], decision.limit_w, QualityFlag(0), now_s
                )
                out[Role.FALLBACK_ACTIVE] = _status(
                    roles[Role.FALLBACK_ACTIVE], decision.mode is Mode.FALLBACK, now_s
                )
            case PublishTotalPower():
                out[Role.TOTAL_POWER] = _measured(
                    roles[Role.TOTAL_POWER], decision.power_w, quality_flags(decision.quality), now_s
                )
            case EnforcementChanged():
                out[Role.LIMIT_ENFORCED] = _status(roles[Role.LIMIT_ENFORCED], decision.enforced, now_s)
            case TimeToComply():
                spec = roles[Role.TIME_TO_COMPLY]
                out[Role.TIME_TO_COMPLY] = _time_to_comply(spec, decision.seconds, True, now_s)
            case _:
                pass
    return list(out.values())


def telemetry_from_view(view: SiteView, specs: tuple[PointSpec, ...], now_s: float) -> list[MonitoredValue]:
    """Every monitored point from the core's current view (start-up and resynchronisation)."""
    roles = _by_role(specs)
    return [
        _measured(roles[Role.TOTAL_POWER], view.total_power_w, quality_flags(view.quality), now_s),
        _measured(roles[Role.LIMIT_IN_FORCE], view.limit_w, QualityFlag(0), now_s),
        _status(roles[Role.FALLBACK_ACTIVE], view.mode is Mode.FALLBACK, now_s),
        _status(roles[Role.LIMIT_ENFORCED], view.enforced, now_s),
        _time_to_comply(roles[Role.TIME_TO_COMPLY], view.time_to_comply_s, view.time_to_comply_known, now_s),
    ]


class TransmitPolicy:
    """Spontaneous transmission on change: status and quality on any change, measured values beyond a deadband.

    The deadband compares with the last value *sent*, so a slow drift is still reported once it
    adds up. Values inside the deadband reach the master through the cyclic transmission and
    general interrogation, which always carry the current value.
    """

    def __init__(self, deadband_w: float) -> None:
        self.deadband_w = deadband_w
        self._sent: dict[int, MonitoredValue] = {}

    def should_send(self, value: MonitoredValue) -> bool:
        last = self._sent.get(value.ioa)
        if last is None or last.quality != value.quality:
            return True
        if value.value_w is None or last.value_w is None:
            return value.value != last.value
        if value.value_w == last.value_w:
            return False
        return abs(value.value_w - last.value_w) >= self.deadband_w

    def sent(self, value: MonitoredValue) -> None:
        self._sent[value.ioa] = value

    def forget(self) -> None:
        """After a new master starts data transfer nothing counts as sent any more."""
        self._sent.clear()
