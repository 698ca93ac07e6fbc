"""An operator releases an offline station's reserve: through the spool folder, audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config import Config, StoreConfig
from gateway.core.events import ProfileResult, StationConnected, StationDisconnected
from gateway.core.model import OcppVersion, ProfileOutcome
from gateway.operator_requests import RequestSpool, request_release, spool_dir
from tests.support.gateway_process import loopback_config, run_cli, running_gateway
from tests.support.loopback import start_core


async def test_release_frees_an_offline_station_and_is_audited(tmp_path: Path) -> None:
    config = Config(store=StoreConfig(path=str(tmp_path / "store.sqlite3")))
    runtime = start_core(config)
    spool = RequestSpool(config.store.path, runtime)
    await spool.start()
    try:
        decisions = runtime.submit(StationConnected("cp1", OcppVersion.V16, 22000, 4140))
        for d in decisions:
            if hasattr(d, "seq"):
                runtime.submit(ProfileResult("cp1", d.seq, ProfileOutcome.ACCEPTED))  # type: ignore[attr-defined]
        runtime.submit(StationDisconnected("cp1"))
        assert runtime.metrics.registry.get_sample_value("ocpp809_stations_offline_reserved") == 1

        ask = asyncio.to_thread(request_release, config.store.path, "cp1", "decommissioned", "alice", 5.0)
        ok, detail = await ask
        assert ok, detail
        assert "cp1" not in runtime.arbiter.fleet.stations
        [row] = [r for r in runtime.store.audit() if r.kind == "station_release"]
        assert (row.peer, row.accepted, row.detail) == ("alice", True, "cp1: decommissioned")

        # A connected station, or an unknown one, is refused with the reason; nothing changes.
        runtime.submit(StationConnected("cp2", OcppVersion.V16, 22000, 4140))
        ok, detail = await asyncio.to_thread(request_release, config.store.path, "cp2", "oops", "bob", 5.0)
        assert not ok and "online" in detail
        ok, detail = await asyncio.to_thread(request_release, config.store.path, "ghost", "typo", "bob", 5.0)
        assert not ok and detail == "unknown station"
        # Garbage in the folder gets a result too, and the spool keeps serving.
        (spool_dir(config.store.path) / "junk.json").write_text("{not json")
        assert await spool.serve_once() == 1
        assert (spool_dir(config.store.path) / "junk.result").read_text().startswith('{"ok": false')
    finally:
        await spool.stop()
        await runtime.close()


def test_release_command_against_a_running_gateway(tmp_path: Path) -> None:
    config = loopback_config(tmp_path)
    # No gateway has ever served this store: one line, exit 1.
    early = run_cli("release", "cp9", "--reason", "gone", "--config", str(config))
    assert early.returncode == 1 and early.stderr.strip().startswith("error: no gateway has served")
    with running_gateway(config) as (_, seen):
        # The start-up log names the configuration file in use.
        assert any(f"configuration {config.resolve()}," in line for line in seen), seen
        result = run_cli("release", "cp9", "--reason", "gone", "--config", str(config), "--timeout", "20")
        assert result.returncode == 1
        assert result.stderr.strip() == "error: unknown station"
