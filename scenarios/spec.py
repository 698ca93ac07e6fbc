"""Scenario files: TOML data (never code) parsed into frozen dataclasses with clear errors.

A scenario names the gateway configuration it needs (overrides of ``ocpp809.toml``),
the fleet of simulated stations, and a list of steps run in order. A step either
*does* something (``do = "setpoint"`` ...) or *expects* something (``expect = ...``).

Time: durations that stand for scenario time passing (``wait.for_s``, an expectation's
``after_s`` and ``for_s``, the gateway's ``limits.hold_timeout_s`` and profile
refresh/validity) are divided by ``--time-scale``; reaction deadlines
(``within_s``) and a station's time away (``away_s``) are always real seconds. A step
with ``scale = false`` keeps all its durations real.

Configuration references: a step's ``value_w``, ``for_s``, ``after_s``, ``equals``,
``at_most``, ``at_least`` and ``max_tag_age_s`` may name a number of the configuration in
use instead of giving one (``for_s = "limits.hold_timeout_s * 0.8"``: a dotted key, then
optionally ``+``, ``-`` or ``*`` and a number), and a telemetry expectation may name its point by
role (``point = "total_power"``) instead of by ``ioa``. They are resolved when the file
is loaded, against the defaults, the site file (``--config``) and the scenario's own
``[gateway.*]`` overrides, before any time scaling; so one file fits any site.

Every error is one ``ScenarioError(file, key, reason)``, e.g.
``scenarios/t1.toml: steps[2].within_s: Input should be a valid number``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass as plain_dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from gateway.config import Config, parse_config, read_toml
from gateway.errors import ConfigError
from iec104.settings import PointMap
from scenarios.run_config import gateway_config

_STRICT = ConfigDict(extra="forbid", strict=True)


class ScenarioError(ConfigError):
    """A scenario file is wrong (the CLI prints it as one line and exits 2, like a config error)."""


@dataclass(frozen=True, config=_STRICT)
class StationGroup:
    """``count`` identical stations: ids ``{id}`` (count 1) or ``{id}1``..``{id}{count}``.

    ``version = "legacy"``: Series 4 units on the gateway's legacy listener (the runner
    enables it), the id as their serial, the dialect in ``[gateway.legacy] timezone``."""

    id: str
    count: int = Field(default=1, ge=1, le=10000)
    version: Literal["1.6", "2.0.1", "legacy"] = "1.6"
    demand_w: float = Field(default=11000.0, ge=0)
    phases: Literal[1, 2, 3] = 3
    max_power_w: float = Field(default=22000.0, gt=0)
    ramp_w_per_s: float = Field(default=3000.0, gt=0)
    meter_interval_s: float = Field(default=60.0, ge=0)
    max_stack_level: int = Field(default=8, ge=0)
    rate_units: tuple[Literal["A", "W"], ...] = ("A", "W")
    password: str = ""
    connect_at_start: bool = True  # false: it joins at a ``station_connect`` step

    def ids(self) -> list[str]:
        return [self.id] if self.count == 1 else [f"{self.id}{i}" for i in range(1, self.count + 1)]


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True, config=_STRICT)
class SetpointStep:
    """The DSO master sends a setpoint and the step checks the ACT_CON."""

    do: Literal["setpoint"]
    value_w: float
    name: str = ""
    time_tagged: bool = False  # C_SE_TC_1 instead of C_SE_NC_1
    tag_age_s: float = 0.0  # how old the time tag is (stale-command tests)
    ioa: int | None = None  # default: the configured setpoint point of the kind
    expect_confirm: Literal["positive", "negative"] = "positive"
    within_s: float = Field(default=5.0, gt=0)


@dataclass(frozen=True, config=_STRICT)
class CutLinkStep:
    """Take the DSO link away: ``close`` (FIN), ``abort`` (RST, a crashed master) or ``silent``.

    ``silent`` plays a cut cable: the TCP connection stays open but the master stops
    answering, so the outstation only notices after its TESTFR (t3) goes unanswered (t1).
    """

    do: Literal["cut_link"]
    name: str = ""
    how: Literal["close", "abort", "silent"] = "close"


@dataclass(frozen=True, config=_STRICT)
class DsoShortSessionStep:
    """A whole DSO session on a master of its own: connect, STARTDT, one setpoint (its ACT_CON
    checked), then drop without STOPDT: ``abort`` (RST) or ``close`` (FIN).

    The row fails unless the session lasted less than the gateway's ``iec104.link_poll_s``:
    a longer one would prove nothing about sessions the link poll cannot see.
    """

    do: Literal["dso_short_session"]
    value_w: float
    name: str = ""
    how: Literal["abort", "close"] = "abort"
    expect_confirm: Literal["positive", "negative"] = "positive"
    within_s: float = Field(default=5.0, gt=0)


@dataclass(frozen=True, config=_STRICT)
class RestoreLinkStep:
    do: Literal["restore_link"]
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class WaitStep:
    do: Literal["wait"]
    for_s: float = Field(ge=0)
    name: str = ""
    scale: bool = True


@dataclass(frozen=True, config=_STRICT)
class StationDisconnectStep:
    """A station drops its connection and comes back after ``away_s`` (plus its backoff).

    ``how``: ``close`` (a websocket close frame) or ``abort`` (a TCP reset, no close frame:
    the station lost power or its modem). Either way it keeps charging under what it holds.
    """

    do: Literal["station_disconnect"]
    station: str
    away_s: float = Field(ge=0)
    name: str = ""
    how: Literal["close", "abort"] = "close"


@dataclass(frozen=True, config=_STRICT)
class StationConnectStep:
    """A station of a group with ``connect_at_start = false`` connects for the first time: it
    joins. The step does not wait for it to boot, so the next step runs while it joins."""

    do: Literal["station_connect"]
    station: str
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class EvDemandStep:
    """What the EV wants; above 0 at a station without a transaction, one starts (an EV arrives)."""

    do: Literal["ev_demand"]
    station: str
    demand_w: float = Field(ge=0)
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class EvLeavesStep:
    """The EV finishes and is unplugged: the transaction stops, the connector is Available."""

    do: Literal["ev_leaves"]
    station: str
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class StationMeteringStep:
    """A station stops (``enabled = false``) or resumes sending MeterValues, staying connected."""

    do: Literal["station_metering"]
    station: str
    enabled: bool
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class InterrogateStep:
    do: Literal["interrogate"]
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class CsmsDownStep:
    """The operator's CSMS goes away (its listener and every connection to it close)."""

    do: Literal["csms_down"]
    name: str = ""


@dataclass(frozen=True, config=_STRICT)
class CsmsUpStep:
    """The operator's CSMS comes back on the same address."""

    do: Literal["csms_up"]
    name: str = ""


# -- expectations ------------------------------------------------------------------------

Quantity = Literal[
    "site_power_w",  # what the simulated stations really draw, summed
    "station_power_w",  # what one station draws
    "station_limits_total_w",  # the limits the stations obey (composite of their profiles), summed
    "station_caps_total_w",  # the station-side caps (their accepted max profiles in force), summed
    "station_cap_w",  # one station's cap: its live max profile while valid, else its fallback one
    "limit_in_force_w",  # the gateway's limit in force
    "mode",  # the gateway's mode: initial, normal, hold, fallback
    "telemetry",  # the latest value the DSO master holds for ``ioa``
    "all_within_allocation",  # every station draws at most what the gateway allocated it
    "enforced",  # every connected station accepted its latest allocation
    "stations_unchanged",  # no station's obeyed limit changed since the anchor
    "csms_stations_sent",  # how many stations' ``action`` CALLs reached the CSMS simulator
    # how many transactions the stations ended are whole at the CSMS; the row fails on any
    # problem besides (one out of order, twice, missing, extra: ``scenarios.csms_transactions``)
    "csms_transactions",
    # frames at the CSMS simulator that fail the ocpp library's schemas, and CALLERRORs
    "csms_schema_failures",
    "csms_refused",  # handshakes the CSMS simulator refused (no subprotocol it speaks)
    # stations whose latest NotifyChargingLimit at the CSMS is the cap they are bound by
    # (within upstream.limit_change_significance: the gateway tells only changes beyond it)
    "csms_caps_told",
    # CALLs at the CSMS under a message id their identity used before (SimCsms.reused_ids)
    "csms_reused_ids",
]
_CSMS_QUANTITIES = (
    "csms_stations_sent",
    "csms_transactions",
    "csms_schema_failures",
    "csms_refused",
    "csms_caps_told",
    "csms_reused_ids",
)
_TRUE_OR_FALSE = ("all_within_allocation", "enforced")


@dataclass(frozen=True, config=_STRICT)
class Expectation:
    expect: Quantity
    name: str = ""
    station: str | None = None
    ioa: int | None = None
    action: str | None = None  # csms_stations_sent: the OCPP action counted
    quality: Literal["good", "not_topical", "invalid"] = "good"  # telemetry: the flags expected
    # telemetry with quality good: the value's time tag is at most this old when it arrives
    max_tag_age_s: float = Field(default=10.0, gt=0)
    equals: float | bool | str | None = None
    at_most: float | None = None
    at_least: float | None = None
    tolerance: float | None = Field(default=None, ge=0)  # default 0.5 for ``equals``, 0 for bounds
    within_s: float = Field(default=5.0, ge=0)  # real seconds after the anchor (+ after_s)
    after_s: float = Field(default=0.0, ge=0)  # scenario seconds: it must not be true earlier
    for_s: float = Field(default=0.0, ge=0)  # scenario seconds from the anchor it must stay true
    since: str | None = None  # anchor: end of this named step (default: end of the previous step)
    scale: bool = True

    def subject(self) -> str:
        return {
            "station_power_w": f"power of {self.station}",
            "station_cap_w": f"cap of {self.station}",
            "telemetry": f"IOA {self.ioa}",
            "stations_unchanged": "stations unchanged",
            "csms_stations_sent": f"stations with {self.action} at CSMS",
            "csms_transactions": "transactions whole at CSMS",
            "csms_schema_failures": "schema failures at CSMS",
            "csms_refused": "handshakes refused by CSMS",
            "csms_caps_told": "stations' caps told to CSMS",
            "csms_reused_ids": "message ids reused at CSMS",
        }.get(self.expect, self.expect.removesuffix("_w").replace("_", " "))

    def describe(self) -> str:
        subject = self.subject()
        if self.expect in ("stations_unchanged",):
            test = "no station limit change"
        elif (
            self.quality != "good" and self.equals is None and self.at_most is None and self.at_least is None
        ):
            test = f"{subject} {self.quality.replace('_', ' ')}"
        elif self.equals is not None:
            test = f"{subject} = {_fmt(self.equals)}"
        elif self.at_most is not None and self.at_least is not None:
            test = f"{subject} in [{_fmt(self.at_least)}, {_fmt(self.at_most)}]"
        elif self.at_most is not None:
            test = f"{subject} <= {_fmt(self.at_most)}"
        elif self.at_least is not None:
            test = f"{subject} >= {_fmt(self.at_least)}"
        else:
            test = f"{subject}"
        if self.expect == "csms_transactions":
            test += ", in order, none twice, none missing"
        if self.for_s:
            return f"{test} for {_fmt(self.for_s)} s"
        if self.after_s:
            return f"{test} after {_fmt(self.after_s)} s, within +{_fmt(self.within_s)} s"
        return f"{test} within {_fmt(self.within_s)} s"


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


Action = (
    SetpointStep
    | CutLinkStep
    | DsoShortSessionStep
    | RestoreLinkStep
    | WaitStep
    | StationDisconnectStep
    | StationConnectStep
    | EvDemandStep
    | EvLeavesStep
    | StationMeteringStep
    | InterrogateStep
    | CsmsDownStep
    | CsmsUpStep
)
Step = Action | Expectation

_ACTIONS: dict[str, type[Any]] = {
    "setpoint": SetpointStep,
    "cut_link": CutLinkStep,
    "dso_short_session": DsoShortSessionStep,
    "restore_link": RestoreLinkStep,
    "wait": WaitStep,
    "station_disconnect": StationDisconnectStep,
    "station_connect": StationConnectStep,
    "ev_demand": EvDemandStep,
    "ev_leaves": EvLeavesStep,
    "station_metering": StationMeteringStep,
    "interrogate": InterrogateStep,
    "csms_down": CsmsDownStep,
    "csms_up": CsmsUpStep,
}


@dataclass(frozen=True, config=_STRICT)
class DsoSettings:
    connect_at_start: bool = True


@dataclass(frozen=True, config=_STRICT)
class CapInvariant:
    """``check``: watch the cap invariant from setup to the end of the scenario, one report row.

    At every instant a station's cap changes (and every poll between), the station-side caps
    (``station_caps_total_w``) must add up to at most the gateway's limit in force, except
    right after that limit goes down: then they must fit the new limit within
    ``cut_within_s`` (real seconds, never scaled) and stay within the limit before the cut.
    """

    check: bool = False
    cut_within_s: float = Field(default=5.0, gt=0)


@dataclass(frozen=True, config=_STRICT)
class CsmsSettings:
    """``enabled``: a recording CSMS simulator upstream; the gateway relays to it.

    ``subprotocols``: what it speaks (``["ocpp2.0.1"]``: a CSMS that manages only 2.0.1
    stations and refuses any other offer; the gateway then needs
    ``[gateway.upstream] csms_protocol = "ocpp2.0.1"`` for its 1.6 and legacy stations).
    """

    enabled: bool = False
    subprotocols: tuple[Literal["ocpp2.0.1", "ocpp1.6"], ...] = Field(
        default=("ocpp2.0.1", "ocpp1.6"), min_length=1
    )


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str
    description: str
    gateway: dict[str, Any]  # configuration overrides, already checked by the gateway's parser
    dso: DsoSettings
    csms: CsmsSettings
    stations: tuple[StationGroup, ...]
    steps: tuple[Step, ...]
    boot_timeout_s: float
    cap_invariant: CapInvariant = CapInvariant()

    def station_ids(self) -> list[str]:
        return [sid for group in self.stations for sid in group.ids()]


@dataclass(frozen=True, config=_STRICT)
class _Document:
    name: str
    description: str = ""
    gateway: dict[str, Any] = Field(default_factory=dict)
    dso: DsoSettings = DsoSettings()
    csms: CsmsSettings = CsmsSettings()
    cap_invariant: CapInvariant = CapInvariant()
    stations: tuple[dict[str, Any], ...] = ()
    steps: tuple[dict[str, Any], ...] = ()
    boot_timeout_s: float = Field(default=20.0, gt=0)


def _validate(cls: type[Any], data: object, file: str, prefix: str) -> Any:
    try:
        # JSON mode: strict types, yet integers fill floats and arrays fill tuples.
        return TypeAdapter(cls).validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "(top level)")
        reason = (
            "unknown key"
            if error["type"] in ("unexpected_keyword_argument", "extra_forbidden")
            else error["msg"]
        )
        raise ScenarioError(file, key, reason) from None


def parse_scenario(
    data: dict[str, Any], file: str = "<scenario>", site: SiteConfig | None = None
) -> Scenario:
    """``site``: the site file (``--config``) the scenario's overrides go on top of."""
    doc: _Document = _validate(_Document, data, file, "")
    config = _check_gateway(doc.gateway, file, site)  # references resolve against this
    groups = tuple(_validate(StationGroup, raw, file, f"stations[{i}]") for i, raw in enumerate(doc.stations))
    ids: set[str] = set()
    late = {sid for group in groups if not group.connect_at_start for sid in group.ids()}
    joined: set[str] = set()
    for i, group in enumerate(groups):
        for sid in group.ids():
            if sid in ids:
                raise ScenarioError(file, f"stations[{i}].id", f"station id {sid!r} is used twice")
            if not 0 < len(sid) <= 48 or ":" in sid or "/" in sid:
                raise ScenarioError(
                    file, f"stations[{i}].id", f"{sid!r}: a station id has 1..48 characters, no ':' or '/'"
                )
            ids.add(sid)
    steps: list[Step] = []
    names: set[str] = set()
    for i, given in enumerate(doc.steps):
        key = f"steps[{i}]"
        raw = _resolve(given, config, file, key)
        if ("do" in raw) == ("expect" in raw):
            raise ScenarioError(file, key, "a step has exactly one of 'do' or 'expect'")
        if "do" in raw:
            cls = _ACTIONS.get(raw["do"]) if isinstance(raw["do"], str) else None
            if cls is None:
                raise ScenarioError(
                    file, f"{key}.do", f"unknown action {raw['do']!r}; one of {', '.join(_ACTIONS)}"
                )
            step: Step = _validate(cls, raw, file, key)
        else:
            expectation: Expectation = _validate(Expectation, raw, file, key)
            _check_expectation(expectation, file, key, names)
            if expectation.expect in _CSMS_QUANTITIES and not doc.csms.enabled:
                raise ScenarioError(file, key, f"{expectation.expect} needs [csms] enabled = true")
            step = expectation
        if getattr(step, "do", "") in ("csms_down", "csms_up") and not doc.csms.enabled:
            raise ScenarioError(file, f"{key}.do", f"{raw['do']} needs [csms] enabled = true")
        station = getattr(step, "station", None)
        if station is not None and station not in ids:
            raise ScenarioError(file, f"{key}.station", f"no station {station!r} in the fleet")
        if isinstance(step, StationConnectStep):
            if station not in late:
                why = "it joined at an earlier step" if station in joined else "connect_at_start = true"
                raise ScenarioError(file, f"{key}.station", f"{station!r} is not waiting to join ({why})")
            joined.add(step.station)
            late.discard(step.station)  # it joins once
        if step.name:
            if step.name in names:
                raise ScenarioError(file, f"{key}.name", f"step name {step.name!r} is used twice")
            names.add(step.name)
        steps.append(step)
    if not steps:
        raise ScenarioError(file, "steps", "a scenario needs at least one step")
    return Scenario(
        doc.name,
        file,
        doc.description,
        doc.gateway,
        doc.dso,
        doc.csms,
        groups,
        tuple(steps),
        doc.boot_timeout_s,
        doc.cap_invariant,
    )


def _check_expectation(step: Expectation, file: str, key: str, names: set[str]) -> None:
    comparators = [c for c in (step.equals, step.at_most, step.at_least) if c is not None]
    if step.equals is None and step.at_most is not None and step.at_least is not None:
        if step.at_least > step.at_most:
            raise ScenarioError(file, key, f"the band [{step.at_least:g}, {step.at_most:g}] is empty")
        comparators = [step.at_least]  # a band (at_least <= value <= at_most) counts as one
    if step.expect == "stations_unchanged":
        if comparators:
            raise ScenarioError(file, key, "stations_unchanged takes no equals/at_most/at_least")
        if not step.for_s:
            raise ScenarioError(file, f"{key}.for_s", "stations_unchanged needs for_s")
    elif step.expect in _TRUE_OR_FALSE:
        if step.at_most is not None or step.at_least is not None:
            raise ScenarioError(file, key, f"{step.expect} is true or false: use equals")
        if step.equals is not None and not isinstance(step.equals, bool):
            raise ScenarioError(file, f"{key}.equals", "must be true or false")
    elif step.expect == "telemetry" and step.quality != "good":
        if len(comparators) > 1:
            raise ScenarioError(file, key, "give at most one of equals, at_most, at_least (or a band)")
    elif len(comparators) != 1:
        raise ScenarioError(
            file, key, "give exactly one of equals, at_most, at_least (or at_least with at_most: a band)"
        )
    if step.quality != "good" and step.expect != "telemetry":
        raise ScenarioError(file, f"{key}.quality", "only telemetry has a quality")
    if step.expect == "mode" and step.equals not in ("initial", "normal", "hold", "fallback"):
        raise ScenarioError(file, f"{key}.equals", "mode is one of initial, normal, hold, fallback")
    if step.expect in ("station_power_w", "station_cap_w") and step.station is None:
        raise ScenarioError(file, f"{key}.station", f"{step.expect} needs a station")
    if step.expect == "csms_stations_sent" and not step.action:
        raise ScenarioError(
            file, f"{key}.action", "csms_stations_sent needs an action, e.g. BootNotification"
        )
    if step.expect == "telemetry" and step.ioa is None:
        raise ScenarioError(file, f"{key}.ioa", "telemetry needs an ioa")
    if step.expect not in ("mode", "telemetry", *_TRUE_OR_FALSE) and isinstance(step.equals, str | bool):
        raise ScenarioError(file, f"{key}.equals", "must be a number")
    if step.since is not None and step.since not in names:
        raise ScenarioError(file, f"{key}.since", f"no earlier step named {step.since!r}")
    if step.for_s and step.after_s:
        raise ScenarioError(file, key, "give for_s or after_s, not both")


def _check_gateway(overrides: dict[str, Any], file: str, site: SiteConfig | None = None) -> Config:
    """The configuration a simulated run would use (unscaled): defaults, site file, overrides."""
    try:
        return gateway_config(
            overrides, store_path="check.sqlite3", time_scale=1.0, base=None if site is None else site.data
        )
    except ConfigError as exc:
        on_top = f" (with --config {site.path})" if site is not None else ""
        raise ScenarioError(file, f"gateway.{exc.key}", exc.reason + on_top) from None


# -- configuration references -------------------------------------------------------------

_REF_FIELDS = ("value_w", "for_s", "after_s", "equals", "at_most", "at_least", "max_tag_age_s")
_REF = re.compile(r"^\s*([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)\s*(?:([-+*])\s*(\d+(?:\.\d*)?)\s*)?$")
_POINTS = tuple(PointMap.__dataclass_fields__)


def _resolve(raw: dict[str, Any], config: Config, file: str, key: str) -> dict[str, Any]:
    """The step with its configuration references replaced by numbers (see the module doc)."""
    out = dict(raw)
    for name in _REF_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and "." in value:  # a mode ("hold") is a string without a dot
            out[name] = config_number(config, value, file, f"{key}.{name}")
    if out.get("expect") == "telemetry" and "point" in out:
        role = out.pop("point")
        if "ioa" in out:
            raise ScenarioError(file, f"{key}.point", "give point or ioa, not both")
        if role not in _POINTS:
            raise ScenarioError(file, f"{key}.point", f"unknown point {role!r}; one of {', '.join(_POINTS)}")
        out["ioa"] = getattr(config.iec104.points, role).ioa
    return out


def config_number(config: Config, text: str, file: str, key: str) -> float:
    """``"limits.hold_timeout_s - 10"``: that configuration number, plus, minus or times a constant."""
    match = _REF.match(text)
    if match is None:
        raise ScenarioError(
            file,
            key,
            f"{text!r} is neither a number nor a configuration key like 'limits.hold_timeout_s * 0.8'",
        )
    path, sign, amount = match.groups()
    node: Any = config
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        if node is None:
            break
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise ScenarioError(file, key, f"{path!r} names no number of the configuration")
    value, operand = float(node), float(amount or 0)
    if sign == "+":
        value += operand
    elif sign == "-":
        value -= operand
    elif sign == "*":
        value *= operand
    return value


# -- the site file, files and directories, --target -----------------------------------------


@plain_dataclass(frozen=True, slots=True)
class SiteConfig:
    """A site's own configuration file (``scenario run --config``): its TOML and its digest."""

    path: str
    data: dict[str, Any]
    sha256: str


def load_site(path: str | Path) -> SiteConfig:
    """Read and check a site file as ``ocpp809 check-config`` parses it (every problem reported)."""
    data = read_toml(path)  # ConfigError: one line
    parse_config(data, str(path))  # ConfigErrors: one line per problem
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return SiteConfig(str(path), data, digest)


def load_scenario(path: str | Path, site: SiteConfig | None = None) -> Scenario:
    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise ScenarioError(exc.file, exc.key, exc.reason) from None
    return parse_scenario(data, str(path), site)


SCENARIO_DIR = Path(__file__).resolve().parent
SITE_SCENARIO_DIR = SCENARIO_DIR / "site"


def shipped_scenarios() -> list[Path]:
    """Every scenario file that ships in ``scenarios/``, in name order (T1 first).

    The site variants in ``scenarios/site/`` are not among them: run that directory."""
    return sorted(SCENARIO_DIR.glob("*.toml"))


def site_scenarios() -> list[Path]:
    """The site variants of T1-T4 (``scenarios/site/``): what ``--target`` can run."""
    return sorted(SITE_SCENARIO_DIR.glob("*.toml"))


def scenario_files(paths: list[str] | list[Path]) -> list[Path]:
    """Files as given; a directory stands for its ``*.toml`` files in name order (not recursive)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.glob("*.toml") if p.is_file())
            if not found:
                raise ScenarioError(str(path), "(directory)", "no scenario files (*.toml) in it")
            files.extend(found)
        else:
            files.append(path)
    return files


# What a running gateway lets a DSO-side master do: everything else needs the simulation.
_TARGET_ACTIONS: tuple[type[Any], ...] = (
    SetpointStep,
    CutLinkStep,
    RestoreLinkStep,
    DsoShortSessionStep,
    InterrogateStep,
    WaitStep,
)
_CORE_VIEW_POINT = {
    "limit_in_force_w": "limit_in_force",
    "mode": "fallback_active",
    "enforced": "limit_enforced",
}


def target_refusal(scenario: Scenario) -> ScenarioError | None:
    """Why ``scenario`` cannot run against a running gateway (``--target``), or None.

    Only DSO-side steps and telemetry expectations can: the first step that needs the
    simulated gateway, stations or CSMS is named, else ``[gateway.*]`` overrides, ``[csms]``
    or ``[cap_invariant]``. The scenario's ``[[stations]]`` are not refused: they are the
    stand-ins of a simulated run, and the site's real stations take their place.
    """
    file = scenario.file
    for i, step in enumerate(scenario.steps):
        named = f"steps[{i}]" + (f" ({step.name})" if step.name else "")
        if isinstance(step, Expectation):
            if step.expect == "telemetry":
                continue
            point = _CORE_VIEW_POINT.get(step.expect)
            if point is not None:
                why = (
                    f"needs the simulated gateway's core view (IEC 104 shows it: telemetry point = {point!r})"
                )
            elif step.expect in _CSMS_QUANTITIES:
                why = "needs the CSMS simulator"
            else:
                why = "needs the simulated stations"
            return ScenarioError(file, named, f'expect = "{step.expect}" {why}; refused with --target')
        if not isinstance(step, _TARGET_ACTIONS):
            do = getattr(step, "do", type(step).__name__)
            why = (
                "needs the CSMS simulator"
                if do in ("csms_down", "csms_up")
                else "needs the simulated stations"
            )
            return ScenarioError(file, named, f'do = "{do}" {why}; refused with --target')
    if scenario.gateway:
        sections = ", ".join(f"[gateway.{s}]" for s in scenario.gateway)
        return ScenarioError(
            file, "gateway", f"{sections}: overrides cannot change a running gateway; refused with --target"
        )
    if scenario.csms.enabled:
        return ScenarioError(
            file, "csms", "the CSMS simulator needs the simulated gateway; refused with --target"
        )
    if scenario.cap_invariant.check:
        return ScenarioError(
            file, "cap_invariant", "watches the simulated stations' caps; refused with --target"
        )
    return None
