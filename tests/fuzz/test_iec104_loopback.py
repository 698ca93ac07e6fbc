"""IEC 104 fuzzing over a real socket: the outstation (c104 + core + store) on 127.0.0.1.

A raw peer (``raw104.RawPeer``) starts data transfer and sends a few hundred generated
commands (valid, near-valid, hostile) in batches; each batch ends with a clock
synchronisation that c104 answers in order, so every answer is known to belong to its
batch, and every command in a batch carries its own originator address, which the
outstation mirrors, so each answer is matched to its command. Between batches, now and
then, a connection of its own breaks the framing (truncated, oversized, bad start, wrong
sequence numbers, garbage). Then:

- no positive ACT_CON for a command the oracle calls invalid (``iec104_cases``), and every
  valid one confirmed positively;
- no positive ACT_CON at all on a connection whose framing was broken;
- nothing is kept out: the ASDUs that crash c104 2.2.1 (``test_c104_crash.py``) are generated
  like any other, and the gateway's front closes the connection of a master that sends one
  (or any ASDU not as long as its type and VSQ say), which the batches treat like any
  connection lib60870 drops: commands behind it are never read, one before it may have
  been decided with its answer lost;
- the limit in force (IOA 201, spontaneous and interrogated) only ever takes the initial
  value or a value confirmed without the T bit; the audit log's accepted commands are
  exactly those, in order;
- afterwards a well-behaved master (``Iec104Master``) gets in and is served: a valid
  setpoint confirmed and in force;
- no ERROR record with a traceback was logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.iec104_cases import (
    C_SE_NC_1,
    C_SE_TC_1,
    Breaker,
    Command,
    Verdict,
    breakers,
    commands,
    cp56,
)
from tests.fuzz.raw104 import Answer, RawPeer
from tests.iec104.conftest import Site, running_site, site_config

BATCH = 8  # commands between two barriers (k is 12)
CHUNKS = 30  # hypothesis examples, each a chunk of commands on the same running gateway
CHUNK_SIZE = (10, 14)  # about 350 commands in all
C_CS_NA_1 = 103
CONFIRMATIONS = {7, 9}  # ACT_CON, DEACT_CON
ANSWER_COTS = CONFIRMATIONS | {44, 45, 46, 47}
M_ME_TF_1 = 36
LIMIT_IN_FORCE_IOA = 201
LATENCY_S = 5.0  # the most a command may wait between our write and the core's decision


def f32(value: float) -> bytes:
    return struct.pack("<f", value)


@dataclass
class Sent:
    command: Command
    asdu: bytes
    verdict: Verdict
    answers: list[Answer] = field(default_factory=list)


@dataclass
class Fuzzer:
    """The state of one fuzz run against one running site."""

    site: Site
    initial_limit: bytes
    peer: RawPeer | None = None
    originator: int = 0
    applied: list[bytes] = field(default_factory=list)  # value octets confirmed without T, in order
    # ("applied", value) and ("cut_off", value): setpoints whose answer a dropped connection took
    history: list[tuple[str, bytes]] = field(default_factory=list)
    limits_seen: list[bytes] = field(default_factory=list)  # IOA 201 values the outstation sent
    problems: list[str] = field(default_factory=list)
    sent_count: int = 0
    connections: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def _next_originator(self) -> int:
        self.originator = (self.originator + 1) % 256
        return self.originator

    async def _connected(self) -> RawPeer:
        if self.peer is None or self.peer.closed.is_set():
            if self.peer is not None:
                self._harvest_telemetry(self.peer.answers)
                await self.peer.close()
            self.peer = RawPeer("127.0.0.1", self.site.port)
            await self.peer.__aenter__()
            self.connections += 1
            await self.peer.start_data_transfer()
            self._seen = 0
        return self.peer

    async def send_chunk(self, chunk: list[Command]) -> None:
        for start in range(0, len(chunk), BATCH):
            await self._send_batch(chunk[start : start + BATCH])

    async def _send_batch(self, batch: list[Command]) -> None:
        peer = await self._connected()
        first = len(peer.answers)
        sent: dict[tuple[int, int], Sent] = {}
        for command in batch:
            originator = self._next_originator()
            asdu = command.asdu(time.time(), originator)
            sent[(command.type_id, originator)] = Sent(command, asdu, command.verdict(LATENCY_S))
            peer.send_asdu(asdu)
            self.sent_count += 1
            verdict = sent[(command.type_id, originator)].verdict.value
            self.counts[verdict] = self.counts.get(verdict, 0) + 1
        barrier = self._next_originator()
        peer.send_asdu(bytes((C_CS_NA_1, 1, 6, barrier, 1, 0, 0, 0, 0)) + cp56(time.time()))
        await peer.drain()

        def barrier_answered(answers: list[Answer]) -> bool:
            return any(a.type_id == C_CS_NA_1 and a.asdu[3] == barrier for a in answers[first:])

        answered = await peer.wait_for(barrier_answered, 10.0)
        if not answered and not peer.closed.is_set():
            self.problems.append(f"no answer to the clock synchronisation after {len(batch)} commands")
        answers = peer.answers[first:]
        for answer in answers:
            if answer.type_id >= 45 and answer.cot in ANSWER_COTS:
                key = (answer.type_id, answer.asdu[3])
                if key in sent:
                    sent[key].answers.append(answer)
                elif answer.cot in CONFIRMATIONS and not answer.negative and answer.type_id != C_CS_NA_1:
                    self.problems.append(f"positive confirmation of nothing we sent: {answer.asdu.hex()}")
        for item in sent.values():
            self._judge(item)
        self._harvest_telemetry(answers)

    def _judge(self, item: Sent) -> None:
        positive = [a for a in item.answers if a.cot in CONFIRMATIONS and not a.negative]
        what = f"{item.asdu.hex()} ({item.command})"
        if positive and item.verdict is Verdict.INVALID:
            self.problems.append(f"positive ACT_CON for an invalid command: {what}")
        applies = item.command.type_id in (C_SE_NC_1, C_SE_TC_1) and not item.command.test
        if not positive and self.peer_closed_early(item):
            # Its answer, if any, died with the connection: it may be in force all the same.
            if applies and item.verdict is not Verdict.INVALID:
                self.history.append(("cut_off", item.command.objects[0].value))
        elif not positive and item.verdict is Verdict.VALID:
            answers = [a.asdu.hex() for a in item.answers]
            self.problems.append(f"valid setpoint not confirmed: {what}; answers {answers}")
        if positive and applies:
            if any(a.test for a in positive):
                self.problems.append(f"the answer to a command without T carries T: {what}")
            self.applied.append(item.command.objects[0].value)
            self.history.append(("applied", item.command.objects[0].value))
        if positive and item.command.test and not all(a.test for a in positive):
            self.problems.append(f"the answer to a test command does not mirror T: {what}")

    def peer_closed_early(self, item: Sent) -> bool:
        """The front or lib60870 dropped the connection in this batch (a frame they will not take): a command
        behind that frame was never read, one before it may have been decided and its answer
        lost with the connection."""
        return self.peer is not None and self.peer.closed.is_set() and not item.answers

    def may_be_in_force(self) -> set[bytes]:
        """The values the limit may read after the commands so far: the last one confirmed
        (or the initial limit), or one cut off after it."""
        last = max((i for i, (what, _) in enumerate(self.history) if what == "applied"), default=-1)
        after = {value for what, value in self.history[last + 1 :] if what == "cut_off"}
        return after | {self.history[last][1] if last >= 0 else self.initial_limit}

    def _harvest_telemetry(self, answers: list[Answer]) -> None:
        for answer in answers:
            if answer.type_id != M_ME_TF_1 or answer.cot not in (3, 5, 20):
                continue
            body = answer.body
            for offset in range(0, len(body) - 14, 15):
                if int.from_bytes(body[offset : offset + 3], "little") == LIMIT_IN_FORCE_IOA:
                    value = body[offset + 3 : offset + 7]
                    allowed = {self.initial_limit, *(value for _, value in self.history)}
                    if value not in allowed:
                        self.problems.append(
                            f"IOA 201 reads {struct.unpack('<f', value)[0]!r}: neither the initial limit"
                            f" nor a value confirmed without T (nor one whose answer was cut off)"
                        )
                    self.limits_seen.append(value)

    async def break_framing(self, breaker: Breaker) -> None:
        """One connection that breaks the framing: nothing on it may be confirmed positively."""
        await self.close_main()  # two slots: the main connection, and this one
        peer = RawPeer("127.0.0.1", self.site.port)
        try:
            await peer.__aenter__()
        except (OSError, TimeoutError) as exc:
            self.problems.append(f"{breaker.name}: cannot connect: {exc}")
            return
        self.connections += 1
        try:
            if not breaker.before_startdt:
                await peer.start_data_transfer()
            peer.write(breaker.octets)
            peer.silent = True  # nothing after the breaker: it would complete a half frame
            await peer.drain()
            await peer.wait_for(lambda answers: False, 0.3)  # whatever comes, within 0.3 s
            for answer in peer.answers:
                if answer.type_id >= 45 and answer.cot in CONFIRMATIONS and not answer.negative:
                    self.problems.append(
                        f"{breaker.name} {breaker.octets.hex()}: positive confirmation {answer.asdu.hex()}"
                    )
            self._harvest_telemetry(peer.answers)
        finally:
            await peer.close()

    async def close_main(self) -> None:
        if self.peer is not None:
            self._harvest_telemetry(self.peer.answers)
            await self.peer.close()
            self.peer = None


async def _well_behaved_master(fuzzer: Fuzzer) -> None:
    site = fuzzer.site
    expected = fuzzer.may_be_in_force()
    async with site.master() as master:
        interrogated = {m.ioa: m.value for m in await master.interrogate()}
        limit = interrogated.get(LIMIT_IN_FORCE_IOA)
        assert isinstance(limit, float) and f32(limit) in expected, (limit, fuzzer.history[-3:])
        con = await master.send_setpoint(100, 42000.0)
        assert con.positive, con
        await master.wait_for_measurement(LIMIT_IN_FORCE_IOA, lambda m: m.value == 42000.0)
    accepted = [
        f32(row.value_w) for row in site.runtime.store.audit() if row.accepted and row.value_w is not None
    ]
    assert _audit_matches(accepted, [*fuzzer.history, ("applied", f32(42000.0))]), (
        "the audit log's accepted commands are not the confirmed ones (plus some cut off), in order"
    )


def _audit_matches(accepted: list[bytes], history: list[tuple[str, bytes]]) -> bool:
    """Every confirmed value in order, each cut-off one at its place or not at all, nothing else."""
    rows = len(accepted)
    # fits[j]: history[i:] matches accepted[j:] (filled from the end of the history back)
    fits = [j == rows for j in range(rows + 1)]
    for what, value in reversed(history):
        fits = [
            (j < rows and accepted[j] == value and fits[j + 1]) or (what == "cut_off" and fits[j])
            for j in range(rows + 1)
        ]
    return fits[0]


def test_iec104_fuzz_over_a_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    loop = asyncio.new_event_loop()
    site_cm = running_site(site_config(tmp_path))
    site = loop.run_until_complete(site_cm.__aenter__())
    fuzzer = Fuzzer(site, f32(site.runtime.view().limit_w))
    started = time.monotonic()
    try:

        @settings(
            max_examples=CHUNKS,
            phases=[Phase.generate],  # no shrinking: every example runs against the live gateway
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            chunk=st.lists(
                commands(),
                min_size=CHUNK_SIZE[0],
                max_size=CHUNK_SIZE[1],
            ),
            breaker=st.one_of(st.none(), st.none(), breakers),
        )
        def fuzz(chunk: list[Command], breaker: Breaker | None) -> None:
            loop.run_until_complete(fuzzer.send_chunk(chunk))
            if breaker is not None:
                loop.run_until_complete(fuzzer.break_framing(breaker))
            assert not fuzzer.problems, "\n".join(fuzzer.problems)

        fuzz()
        loop.run_until_complete(fuzzer.close_main())
        assert not fuzzer.problems, "\n".join(fuzzer.problems)
        assert fuzzer.sent_count >= CHUNKS * CHUNK_SIZE[0] * 0.9, fuzzer.sent_count
        assert fuzzer.counts.get("valid", 0) >= 20 and fuzzer.counts.get("invalid", 0) >= 50, fuzzer.counts
        loop.run_until_complete(_well_behaved_master(fuzzer))
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(fuzzer.close_main())
        loop.run_until_complete(site_cm.__aexit__(None, None, None))
        loop.close()
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    print(  # shown with -s: what the run covered
        f"IEC 104 fuzz: {fuzzer.sent_count} commands {fuzzer.counts}, {fuzzer.connections} connections,"
        f" {len(fuzzer.applied)} applied, {time.monotonic() - started:.1f} s"
    )
