"""1.6 meter values -> 2.0.1 meter values (pure, total: never raises on schema-valid input).

Rules, per sampled value:
1. ``context``, ``measurand``, ``phase`` and ``location`` are kept as they are (the 1.6
   values are 2.0.1 values, with the same defaults), ``unit`` becomes
   ``unitOfMeasure.unit`` (1.6's misspelt ``Celcius`` -> ``Celsius``, ``Hertz`` -> ``Hz``,
   the 2.0.1 standardized names; the others are the same).
2. The value, a string in 1.6, becomes a JSON number: an integer when it is written as one
   (and fits a double exactly), else a float. Leading/trailing blanks are tolerated.
3. What 2.0.1 cannot say is not guessed: a value that is no finite decimal number
   (``"n/a"``, ``"nan"``, ``"1e400"``) and the measurands 2.0.1 dropped (``Temperature``,
   ``RPM``; omitting the measurand would make them energy readings, the 2.0.1 default)
   are left out of ``sampledValue`` and returned as *untranslated*, in 1.6 form, for
   the caller to carry in the request's ``customData`` (nothing is lost, nothing is wrong).
4. A ``format: SignedData`` value is the signed form of a raw reading: it becomes the
   ``signedMeterValue`` of the raw sampled value with the same measurand, phase, location
   and context in the same meterValue (``encodingMethod`` "OCMF" for an OCMF string, else
   "Other"; 1.6 carries no signing method nor public key: empty). Without such a twin, or
   longer than 2.0.1's 2500 characters, it is untranslated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ocpp_side.translation.api import Payload
from ocpp_side.translation.up_common import VENDOR_ID

ENERGY = "Energy.Active.Import.Register"
UNITS = {"Celcius": "Celsius", "Hertz": "Hz"}  # 1.6 -> 2.0.1 spelling; the others are equal
NOT_IN_201 = frozenset({"Temperature", "RPM"})  # 1.6 measurands without a 2.0.1 counterpart
SIGNED_MAX = 2500  # SignedMeterValueType.signedMeterData

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_EXACT_INT = 2**53  # beyond this a JSON reader may round an integer: send a float


def number(text: Any) -> int | float | None:
    """A 1.6 sampled value as a JSON number, None when it is not a finite decimal number."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        return None
    if not isinstance(text, str):
        text = repr(text)
    s = text.strip()
    if not _DECIMAL.fullmatch(s):
        return None
    if _INTEGER.fullmatch(s):
        whole = int(s)
        if abs(whole) <= _EXACT_INT:
            return whole
    value = float(s)  # a decimal string never raises here; too large -> inf
    return value if math.isfinite(value) else None


def _twin_key(sample: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        sample.get("measurand", ENERGY),
        sample.get("phase"),
        sample.get("location"),
        sample.get("context"),
    )


def _sampled(sample: Mapping[str, Any], value: float) -> Payload:
    out: Payload = {"value": value}
    for key in ("context", "measurand", "phase", "location"):
        if key in sample:
            out[key] = sample[key]
    unit = sample.get("unit")
    if isinstance(unit, str):
        out["unitOfMeasure"] = {"unit": UNITS.get(unit, unit)}
    return out


def _signed(data: str) -> Payload:
    return {
        "signedMeterData": data,
        "signingMethod": "",
        "encodingMethod": "OCMF" if data.startswith("OCMF|") else "Other",
        "publicKey": "",
    }


def convert_entry(entry: Mapping[str, Any]) -> tuple[list[Payload], list[Payload]]:
    """One 1.6 meterValue -> (2.0.1 sampled values, untranslated 1.6 sampled values)."""
    kept: list[Payload] = []
    raw_by_key: dict[tuple[Any, ...], Payload] = {}
    left: list[Payload] = []
    signed: list[Mapping[str, Any]] = []
    for sample in entry.get("sampledValue", ()):
        if sample.get("format") == "SignedData":
            signed.append(sample)
            continue
        value = number(sample.get("value"))
        if value is None or sample.get("measurand") in NOT_IN_201:
            left.append(dict(sample))
            continue
        out = _sampled(sample, value)
        kept.append(out)
        raw_by_key.setdefault(_twin_key(sample), out)
    for sample in signed:
        data = sample.get("value")
        twin = raw_by_key.get(_twin_key(sample))
        if twin is None or "signedMeterValue" in twin or not isinstance(data, str) or len(data) > SIGNED_MAX:
            left.append(dict(sample))
        else:
            twin["signedMeterValue"] = _signed(data)
    return kept, left


def convert(entries: Iterable[Mapping[str, Any]]) -> tuple[list[Payload], list[Payload]]:
    """1.6 meterValue list -> (2.0.1 MeterValueType list, untranslated 1.6 meterValue list).

    Entries keep their order and timestamps; an entry with nothing translatable is only
    in the second list, one with nothing left over only in the first.
    """
    meter_values: list[Payload] = []
    untranslated: list[Payload] = []
    for entry in entries:
        kept, left = convert_entry(entry)
        if kept:
            meter_values.append({"timestamp": entry["timestamp"], "sampledValue": kept})
        if left:
            untranslated.append({"timestamp": entry["timestamp"], "sampledValue": left})
    return meter_values, untranslated


def register(value: int, context: str, timestamp: str) -> Payload:
    """A 1.6 meterStart/meterStop (Wh, the energy register) as one 2.0.1 MeterValueType."""
    sample = {"value": value, "context": context, "measurand": ENERGY, "unitOfMeasure": {"unit": "Wh"}}
    return {"timestamp": timestamp, "sampledValue": [sample]}


def custom_data(untranslated: list[Payload]) -> Payload:
    """``customData`` carrying what 2.0.1 cannot say, in 1.6 form."""
    return {"vendorId": VENDOR_ID, "untranslatedMeterValue": untranslated}
