"""Strict JSON-schema validation of every OCPP payload, both directions.

Uses the official OCPP schemas shipped inside the ``ocpp`` package, compiled once per
(version, action, direction) with fastjsonschema (microseconds per message, no thread
hop, no Decimal round trip). Defaults in the schemas are never written into payloads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp
import orjson

from gateway.core.model import OcppVersion
from ocpp_side.codec import ErrorKind, OcppViolation
from ocpp_side.versions import rules_for

_ROOT = Path(ocpp.__file__).parent

# fastjsonschema names the rule that failed; OCPP-J names the CALLERROR code.
_RULE_KIND = {
    "type": ErrorKind.TYPE,
    "required": ErrorKind.OCCURRENCE,
    "additionalProperties": ErrorKind.FORMAT,
    "minItems": ErrorKind.OCCURRENCE,
    "maxItems": ErrorKind.OCCURRENCE,
}

Validator = Callable[[Any], Any]


def _dir(version: OcppVersion) -> Path:
    return _ROOT / rules_for(version).SCHEMA_DIR / "schemas"


def _file(version: OcppVersion, action: str, request: bool) -> Path:
    return _dir(version) / rules_for(version).schema_file(action, request)


@cache
def known_actions(version: OcppVersion) -> frozenset[str]:
    """Every action the version defines (from its response schemas)."""
    return frozenset(p.name.removesuffix("Response.json") for p in _dir(version).glob("*Response.json"))


def _speed_up(node: Any, formats: dict[str, Callable[[str], bool]], definitions: dict[str, Any]) -> Any:
    """The same schema, cheaper to check.

    - Local ``$ref``s are inlined (OCPP schemas are not recursive): fastjsonschema calls a
      function per reference and formats a path string for each call.
    - fastjsonschema tests a string enum one value at a time (OCPP's measurand and unit
      lists are long): each enum becomes a set lookup under a custom format.
    - ``additionalProperties`` on a string (a no-op the OCPP schema generator emits
      everywhere) is dropped.
    """
    if isinstance(node, list):
        return [_speed_up(item, formats, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/") and len(node) == 1:
        return _speed_up(definitions[ref.removeprefix("#/definitions/")], formats, definitions)
    out = {key: _speed_up(value, formats, definitions) for key, value in node.items() if key != "definitions"}
    enum = out.get("enum")
    if (
        isinstance(enum, list)
        and enum
        and all(isinstance(v, str) for v in enum)
        and out.get("type") == "string"
    ):
        name = f"ocpp-enum-{len(formats)}"
        formats[name] = frozenset(enum).__contains__
        del out["enum"]
        out["format"] = name
    if out.get("type") not in (None, "object") and out.get("additionalProperties") is False:
        del out["additionalProperties"]
    return out


@cache
def _validator(version: OcppVersion, action: str, request: bool) -> Validator:
    schema = orjson.loads(_file(version, action, request).read_text(encoding="utf-8-sig"))
    formats: dict[str, Callable[[str], bool]] = {}
    fast = _speed_up(schema, formats, schema.get("definitions", {}))
    validator: Validator = fastjsonschema.compile(fast, formats=formats, use_default=False)
    return validator


def validate(version: OcppVersion, action: str, payload: dict[str, Any], request: bool) -> None:
    """Raise ``OcppViolation`` when ``payload`` is not a valid ``action`` request/response."""
    if action not in known_actions(version):
        raise OcppViolation(ErrorKind.NOT_IMPLEMENTED, f"{action} is not an OCPP {version.value} action")
    try:
        _validator(version, action, request)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        kind = _RULE_KIND.get(exc.rule or "", ErrorKind.PROPERTY)
        raise OcppViolation(kind, f"{action}: {exc.message}") from None


def warm_up(version: OcppVersion, actions: tuple[str, ...]) -> None:
    """Compile the hot validators before the first station arrives."""
    for action in actions:
        _validator(version, action, True)
        _validator(version, action, False)
