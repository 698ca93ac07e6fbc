"""kill -9 in the middle of a setpoint stream loses no confirmed limit (issue 13).

``ocpp809 run`` runs as a child process. The project's own master (``Iec104Master``) sends
valid setpoints, each a new value, and records every positive ACT_CON; after a random
number of them the gateway is SIGKILLed a random 0-4 ms into the next command (so the kill
lands before, during or after its store write). The gateway is restarted on the same store,
a few times over. The design says an accepted setpoint is durable before it is confirmed,
so after every restart:

- the limit in force (IOA 201, read by general interrogation) is the last confirmed value,
  or the one that was in flight when the kill came (stored, its ACT_CON lost with the
  process), never an older one;
- the audit log holds every confirmed setpoint as accepted, in order (plus at most the
  in-flight ones), and its hash chain is intact.

A limit the store resumes always has its audit row (one transaction):
``test_a_limit_the_store_resumes_has_its_audit_row`` below.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from gateway.core.events import SetpointReceived
from gateway.store import AuditReader, Store
from iec104.master import Iec104Master, MasterError
from tests.iec104.conftest import site_config
from tests.support.gateway_process import GatewayProcess, loopback_config
from tests.support.loopback import start_core

CYCLES = 3
LIMIT_IN_FORCE_IOA = 201
MIN_W, STEP_W = 7000.0, 37.0  # every setpoint a new value within [6 kW, 100 kW]


async def _limit_in_force(master: Iec104Master) -> float:
    values = {m.ioa: m.value for m in await master.interrogate()}
    value = values.get(LIMIT_IN_FORCE_IOA)
    assert isinstance(value, float), values
    return value


async def test_kill_9_mid_stream_loses_no_confirmed_setpoint(tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL9_SEED") or random.randrange(2**32))  # KILL9_SEED replays a run
    rng = random.Random(seed)
    config = loopback_config(tmp_path)
    acked: list[float] = []  # every value a positive ACT_CON answered, in order
    in_flight: list[float] = []  # values whose answer the kill cut off
    resumed: list[float] = []  # the limit in force after each start
    in_force: float | None = None  # what must be in force after the next restart
    sent = 0

    def why() -> str:
        return f"(random seed {seed}; acked {acked}; cut off {in_flight}; resumed {resumed})"

    def next_value() -> float:
        nonlocal sent
        sent += 1
        return MIN_W + STEP_W * sent

    for cycle in range(CYCLES + 1):
        gateway = await asyncio.to_thread(GatewayProcess, config)
        try:
            async with Iec104Master("127.0.0.1", gateway.iec104_port, answer_timeout_s=5.0) as master:
                resumed.append(await _limit_in_force(master))
                if in_force is not None:
                    # The last confirmed limit, or the one in flight at the kill (stored before
                    # its ACT_CON, which died with the process); never an older one.
                    allowed = {in_force, *in_flight[-1:]}
                    assert resumed[-1] in allowed, f"cycle {cycle}: resumed {resumed[-1]} W {why()}"
                    in_force = resumed[-1]
                if cycle == CYCLES:
                    break
                for _ in range(rng.randint(3, 40)):
                    value = next_value()
                    con = await master.send_setpoint(100, value)
                    assert con.positive, f"valid setpoint {value} W refused: {con} {why()}"
                    acked.append(in_force := value)
                # The kill lands 0-4 ms into the next command: before, during or after its store write.
                value = next_value()
                command = asyncio.create_task(master.send_setpoint(100, value, timeout_s=3.0))
                await asyncio.sleep(rng.uniform(0.0, 0.004))
                await asyncio.to_thread(gateway.kill)
                try:
                    con = await command
                except (MasterError, TimeoutError, ConnectionError):
                    in_flight.append(value)
                else:
                    assert con.positive, f"valid setpoint {value} W refused: {con} {why()}"
                    acked.append(in_force := value)  # answered before the kill landed
        finally:
            if gateway.alive:
                await asyncio.to_thread(gateway.stop)
    assert gateway.proc.returncode == 0, gateway.log_text()[-2000:]

    with AuditReader(tmp_path / "store.sqlite3") as reader:
        chain = reader.verify_chain()
        accepted = [e.row.value_w for e in reader.entries() if e.is_command and e.row.accepted]
    assert chain.ok, f"{chain} {why()}"
    missing = [v for v in acked if v not in accepted]
    assert not missing, f"confirmed setpoints missing from the audit log: {missing} {why()}"
    assert [v for v in accepted if v in acked] == acked, f"audit order differs: {accepted} {why()}"
    extra = [v for v in accepted if v not in acked]
    assert all(v in in_flight for v in extra), f"accepted, never sent: {extra} {why()}"
    unaudited = [v for v in resumed[1:] if v not in accepted]  # the first start has no setpoint yet
    assert not unaudited, f"limits resumed without their audit row: {unaudited} {why()}"
    assert len(acked) >= CYCLES * 3, why()
    print(f"kill -9: {len(acked)} confirmed, {len(in_flight)} cut off, resumed {resumed}, seed {seed}")


class _Killed(BaseException):
    """The process ends here, as under SIGKILL: no handler runs."""


async def test_a_limit_the_store_resumes_has_its_audit_row(tmp_path: Path) -> None:
    """Found by the kill -9 test above (KILL9_SEED=3184276977): a kill between the limit's
    write and its audit row's left a store that resumed a limit the audit log never
    accepted (the proof of execution could not say where it came from). Both are one
    transaction now (``Store.accept_setpoint``). Deterministic here: the process "dies" at
    the audit write, inside that transaction, which SQLite then never commits."""
    config = site_config(tmp_path)
    runtime = start_core(config)
    store = runtime.store

    def killed(*args: object) -> int:
        raise _Killed

    store._append = killed  # type: ignore[method-assign]
    with pytest.raises(_Killed):
        await runtime.submit_setpoint(SetpointReceived(20000.0, peer="test"))
    runtime.scheduler.shutdown(wait=False)
    store.close()  # committed transactions stay, as after a kill

    resumed = Store(config.store.path)
    try:
        limit = resumed.load_limit()
        accepted = [row.value_w for row in resumed.audit() if row.accepted]
    finally:
        resumed.close()
    if limit is not None and limit.setpoint_w == 20000.0:  # the store resumes 20 kW ...
        assert 20000.0 in accepted, "... which the audit log never accepted"
