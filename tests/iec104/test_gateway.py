"""The whole gateway from its config (composition root): a master reaches the core through it."""

from __future__ import annotations

from pathlib import Path

from gateway.app import build_gateway
from gateway.config import parse_config
from iec104.master import Iec104Master
from iec104.outstation import Iec104Outstation


async def test_gateway_built_from_config_serves_a_master_on_loopback(tmp_path: Path) -> None:
    config = parse_config(
        {
            "iec104": {
                "listen_host": "127.0.0.1",
                "port": 0,
                "allowed_masters": ["127.0.0.1"],
                "link_poll_s": 0.05,
            },
            "ocpp": {"listen_host": "127.0.0.1", "port": 0},
            "metrics": {"enabled": False},
            "store": {"path": str(tmp_path / "store.sqlite3")},
        }
    )
    gateway = build_gateway(config)
    (outstation,) = [a for a in gateway.adapters if isinstance(a, Iec104Outstation)]
    await gateway.start()
    try:
        async with Iec104Master("127.0.0.1", outstation.port) as master:
            assert (await master.send_setpoint(100, 20000.0)).positive
            await master.wait_for_measurement(201, lambda m: m.value == 20000.0)
            assert not (await master.send_setpoint(100, 0.0)).positive
        assert gateway.runtime.view().limit_w == 20000.0
        assert [r.accepted for r in gateway.runtime.store.audit()] == [True, False]
    finally:
        await gateway.stop()
