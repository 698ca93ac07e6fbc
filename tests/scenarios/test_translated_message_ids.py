"""Gateway bugs found by V12's CSMS: a BootNotification the gateway repeats toward a 2.0.1
CSMS reuses a message id the CSMS already answered on an earlier connection.

OCPP 2.0.1 Part 4 (Edition 3, 4.1.4): "A message ID for any CALL message MUST be
different from all message IDs previously used by the same sender for any other CALL
messages on any WebSocket connection using the same unique Charging Station identifier.
This also applies to retries of messages." The sender the CSMS sees is the station's
identity, so what the gateway repeats for a station needs an id of its own.

Fixed: every call the gateway repeats upstream (a boot on a new link, an outbox row) goes
under a new message id (``relay_link.repeated``). These tests are not scenario rows (V12
stays about its transactions); they covered:

- ``ocpp_side/relay_link.py``: a native 2.0.1 station relayed verbatim has its last
  BootNotification repeated on the new CSMS connection under the station's own message id
  (``fresh_boot_ids = False``), the id the CSMS answered on the connection before;
- ``ocpp_side/outbox_drain.py``: a translated station that is away when the CSMS returns
  has its stored BootNotification repeated by the drain under the id of its first boot,
  which the CSMS answered (the live relay gives translated boots a fresh id for each
  connection, the drain does not).
"""

from __future__ import annotations

from typing import Any

import pytest

from scenarios.runner import ScenarioRun
from scenarios.spec import parse_scenario

TIME_SCALE = 60.0


def _scenario(version: str, away: bool) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"expect": "csms_stations_sent", "action": "BootNotification", "equals": 1, "within_s": 10},
        {"do": "setpoint", "value_w": 11000},
        {"expect": "site_power_w", "equals": 11000, "tolerance": 1, "within_s": 20},
        {"name": "CSMS down", "do": "csms_down"},
        {"do": "wait", "for_s": 1, "scale": False},  # a meter value or two for the outbox
    ]
    if away:
        steps.append({"do": "station_disconnect", "station": "cp", "away_s": 8, "how": "abort"})
    steps += [
        {"do": "wait", "for_s": 1, "scale": False},
        {"name": "CSMS back", "do": "csms_up"},
        {
            "name": "announced again",
            "expect": "csms_stations_sent",
            "action": "BootNotification",
            "since": "CSMS back",
            "equals": 1,
            "within_s": 15,
        },
        {"do": "wait", "for_s": 8 if away else 1, "scale": False},  # the station is back
        {"name": "no message id twice", "expect": "csms_reused_ids", "equals": 0, "within_s": 1},
    ]
    return {
        "name": f"message ids ({version}{', away' if away else ''})",
        "csms": {"enabled": True, "subprotocols": ["ocpp2.0.1"]},
        "gateway": {
            "ocpp": {"meter_sample_interval_s": 1},
            "iec104": {"link_poll_s": 0.1},
            "upstream": {"csms_protocol": "ocpp2.0.1", "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        },
        "stations": [{"id": "cp", "version": version, "demand_w": 11000}],
        "steps": steps,
    }


async def _reused(version: str, away: bool) -> list[str]:
    run = ScenarioRun(parse_scenario(_scenario(version, away), "ids.toml"), time_scale=TIME_SCALE)
    result = await run.run()
    broken = [
        f"{r.step}: {r.measured}" for r in result.rows if not r.passed and r.step != "no message id twice"
    ]
    assert broken == [], broken  # the run itself went as planned
    assert run.csms is not None
    return [line for line in run.csms.reused_ids() if "BootNotification under" in line]


@pytest.mark.timeout(120)
async def test_a_native_201_station_s_boot_repeated_after_an_outage_has_a_new_message_id() -> None:
    assert await _reused("2.0.1", away=False) == []


@pytest.mark.timeout(120)
async def test_a_translated_station_s_boot_repeated_by_the_outbox_drain_has_a_new_message_id() -> None:
    assert await _reused("1.6", away=True) == []
