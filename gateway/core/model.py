"""Values that cross module borders: modes, sources, reasons, station identity."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """Which rule sets the site limit right now."""

    INITIAL = "initial"  # no DSO setpoint accepted yet: initial_limit_w applies
    NORMAL = "normal"  # the last accepted DSO setpoint applies, link up
    HOLD = "hold"  # link lost: the last accepted setpoint is held until hold_timeout_s
    FALLBACK = "fallback"  # hold expired: fallback_limit_w until a new valid setpoint


class LimitSource(StrEnum):
    """Where the limit in force came from (logs, metrics and telemetry say it)."""

    INITIAL = "initial"
    DSO_SETPOINT = "dso_setpoint"
    HOLD = "hold"
    FALLBACK = "fallback"


MODE_SOURCE: dict[Mode, LimitSource] = {
    Mode.INITIAL: LimitSource.INITIAL,
    Mode.NORMAL: LimitSource.DSO_SETPOINT,
    Mode.HOLD: LimitSource.HOLD,
    Mode.FALLBACK: LimitSource.FALLBACK,
}


class SetpointKind(StrEnum):
    """The IEC 104 command type a setpoint arrived as."""

    PLAIN = "C_SE_NC_1"
    TIME_TAGGED = "C_SE_TC_1"


class RejectReason(StrEnum):
    """Why a setpoint was refused; the core decides the first five, the shell the rest."""

    NOT_FINITE = "not_finite"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    STALE = "stale"
    FUTURE = "future"
    STORE_FAILED = "store_failed"
    INTERNAL_ERROR = "internal_error"
    TIMEOUT = "timeout"
    UNKNOWN_POINT = "unknown_point"
    WRONG_COMMON_ADDRESS = "wrong_common_address"
    UNEXPECTED_CAUSE = "unexpected_cause"
    TEST_COMMAND = "test_command"  # T bit set (IEC 60870-5-101 7.2.3): answered, never applied


class OcppVersion(StrEnum):
    V16 = "ocpp1.6"
    V201 = "ocpp2.0.1"


class ProfileOutcome(StrEnum):
    """What became of one SetChargingProfile sent to a station."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CALL_ERROR = "call_error"
    TIMEOUT = "timeout"


class Quality(StrEnum):
    """Measurement quality, mapped by the IEC 104 adapter onto its NT/IV flags."""

    GOOD = "good"
    NOT_TOPICAL = "not_topical"  # some station's reading is older than the stale limit
    INVALID = "invalid"  # no reading at all from a connected station
