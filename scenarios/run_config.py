"""The gateway configuration of a simulated scenario run: the site file, the scenario's
overrides and what the runner always sets, merged (``gateway_config``). Read by the runner
and by the scenario checker (``spec``), so neither imports the other for it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from gateway.config import Config, parse_config

# Gateway durations that stand for scenario time; --time-scale divides them.
SCALED_KEYS: tuple[tuple[str, str], ...] = (
    ("limits", "hold_timeout_s"),
    ("ocpp", "profile_refresh_s"),
    ("ocpp", "profile_validity_s"),
)


# What the runner sets whatever the site file and the scenario say: a simulated run never
# listens beyond loopback, never writes the site's store, never talks to its CSMS.
_UPSTREAM_LINK = (
    "csms_url",
    "gateway_id",
    "gateway_password",
    "passwords",
    "ca_file",
    "cert_file",
    "key_file",
)
# What the runner sets unless the scenario itself does: the site's allowlist, TLS and
# station list are for the site's master and stations, not for the simulated ones.
_UNLESS_SCENARIO: tuple[tuple[str, str], ...] = (
    ("iec104", "allowed_masters"),
    ("iec104", "tls"),
    ("ocpp", "tls"),
    ("ocpp", "security_profile"),
    ("ocpp", "accepted_stations"),
)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, table by table (a key of a nested table replaces only that key)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def gateway_config(
    overrides: dict[str, Any],
    store_path: str,
    time_scale: float,
    csms_url: str | None = None,
    base: dict[str, Any] | None = None,
    legacy_units: bool = False,
) -> Config:
    """The configuration of a simulated run; later layers win:

    1. the built-in defaults;
    2. ``base``, the site file (``scenario run --config``);
    3. the scenario's ``[gateway.*]`` overrides;
    4. always the runner: the listeners on 127.0.0.1 with OS-chosen ports (the legacy one
       enabled when ``legacy_units`` are in the scenario), the store and
       outbox in the run's temporary folder (``store.missing_start`` is kept), no metrics
       listener, no upstream CSMS link but the scenario's simulator (the site's
       ``csms_url``, ``gateway_id`` and their credentials are dropped);
    5. the runner unless the scenario sets them itself: ``iec104.allowed_masters`` =
       127.0.0.1, no IEC 104 or OCPP TLS, ``ocpp.security_profile`` 0, any station id;
    6. ``--time-scale`` divides ``limits.hold_timeout_s``, ``ocpp.profile_refresh_s`` and
       ``ocpp.profile_validity_s``, from whichever layer they came.
    """
    data = _merge(base or {}, overrides)
    defaults = Config()
    for section, key in SCALED_KEYS:
        value = data.get(section, {}).get(key, getattr(getattr(defaults, section), key))
        if isinstance(value, int | float) and not isinstance(value, bool):
            data.setdefault(section, {})[key] = float(value) / time_scale
    for section, key in _UNLESS_SCENARIO:
        if key not in overrides.get(section, {}):
            data.setdefault(section, {}).pop(key, None)
    iec = data.setdefault("iec104", {})
    iec.update(listen_host="127.0.0.1", port=0)
    iec.setdefault("allowed_masters", ["127.0.0.1"])
    data.setdefault("ocpp", {}).update(listen_host="127.0.0.1", port=0)
    legacy = data.setdefault("legacy", {})
    legacy["listen_port"] = 0
    if legacy_units:
        legacy["enabled"] = True
    store = data.get("store", {})
    data["store"] = {"path": store_path}
    if "missing_start" in store:
        data["store"]["missing_start"] = store["missing_start"]
    data["metrics"] = {"enabled": False}
    upstream = data.setdefault("upstream", {})
    for key in _UPSTREAM_LINK:
        upstream.pop(key, None)
    upstream["outbox_path"] = str(Path(store_path).with_name("outbox.sqlite3"))
    if csms_url is not None:
        upstream["csms_url"] = csms_url
    return parse_config(data, "<scenario gateway>")
