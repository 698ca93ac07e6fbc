"""c104's on_send_raw is set only for t1 after a connection is accepted (it leaks ~400 B a frame).

docs/c104/raw_callback_leak.py measures the leak. A session's STARTDT con follows its connect,
so the window sees it; afterwards telemetry flows without the callback, and a STOPDT is
caught by the link poll instead.
"""

from __future__ import annotations

from pathlib import Path

from gateway.core.model import Mode
from tests.iec104.conftest import running_site, site_config

T1_S = 2


async def test_the_callback_is_set_from_the_connect_until_t1_later(tmp_path: Path) -> None:
    config = site_config(tmp_path, t1_s=T1_S, t2_s=1)
    async with running_site(config) as site:
        outstation = site.outstation
        assert not outstation._send_raw_armed  # no connection, nothing to watch
        async with site.master() as master:
            assert outstation._send_raw_armed
            await site.until(lambda: outstation.link_up, what="link up")
            await site.until(
                lambda: not outstation._send_raw_armed, timeout_s=T1_S + 3, what="disarmed after t1"
            )
            # Commands, telemetry and the link poll work without it.
            assert (await master.send_setpoint(100, 20000.0)).positive
            await master.wait_for_measurement(201, lambda m: m.value == 20000.0)
            await master.stop_data_transfer()
            await site.until(lambda: site.runtime.view().mode is Mode.HOLD, what="STOPDT seen by the poll")
            await master.start_data_transfer()
            await site.until(lambda: site.runtime.view().mode is Mode.NORMAL, what="STARTDT seen by the poll")
        async with site.master():
            assert outstation._send_raw_armed  # every new connection sets it again
