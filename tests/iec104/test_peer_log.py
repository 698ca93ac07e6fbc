"""What a peer sends reaches the log bounded and rate-limited (issue 13: logs must not amplify)."""

from __future__ import annotations

import logging

import pytest

from iec104.master import MasterError
from iec104.outstation import explained_octets
from iec104.peer_log import PeerLog, bounded
from iec104.points import CommandRefused, SetpointTest, translate_command
from tests.iec104.conftest import Site
from tests.iec104.test_points import SPECS, command


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bounded_escapes_line_breaks_and_cuts_long_text() -> None:
    assert bounded("a\r\nb\x00") == "a\\r\\nb\\x00"
    long = bounded("x" * 5000, 100)
    assert long.startswith("x" * 100) and long.endswith("...(5000 chars)") and len(long) < 120


def test_at_most_a_burst_per_peer_and_interval_then_the_count_of_held_back_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    peer_log = PeerLog(logging.getLogger("t.peer"), burst=3, interval_s=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, "t.peer"):
        written = [peer_log.warning("10.0.0.1", f"bad frame {i}") for i in range(1000)]
        assert written.count(True) == 3
        assert peer_log.warning("10.0.0.2", "another peer has its own budget")
        clock.now += 60.0
        assert peer_log.warning("10.0.0.1", "after the interval")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[-1] == "after the interval (997 more like this held back)"
    assert all(r.exc_info is None for r in caplog.records)


def test_the_number_of_peers_tracked_is_bounded() -> None:
    peer_log = PeerLog(logging.getLogger("t.peers"), max_peers=10)
    for i in range(1000):
        peer_log.warning(f"10.0.{i // 256}.{i % 256}", "x")
    assert len(peer_log._windows) == 10


def test_explained_octets_reads_what_c104_lists() -> None:
    explain = "I-Format | C_SE_NC_1 | ACTIVATION | POSITIVE | CA 1 | 1st IOA 100 | LIST[1] (64 00 00 cd cc bc 40 00 )"
    assert explained_octets(explain) == bytes.fromhex("640000cdccbc4000")
    assert explained_octets("I-Format | C_SE_NC_1 | ACTIVATION | POSITIVE | CA 1") == b""


def test_a_test_command_refused_before_the_core_stays_refused() -> None:
    assert isinstance(translate_command(command(102, test=True), 1, SPECS), CommandRefused)
    assert isinstance(translate_command(command(test=True), 1, SPECS), SetpointTest)
    negative = translate_command(command(test=True, negative=True), 1, SPECS)
    assert isinstance(negative, CommandRefused) and "P/N" in negative.detail


UNDECODABLE = bytes.fromhex(
    "68 13 00 00 00 00 32 01 06 00 01 00 64 00 00 00 40 9c 46 00 ff"
)  # one octet too many


async def test_malformed_commands_give_bounded_warnings_without_traceback(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """The front refuses the frame and closes the connection (it never reaches c104 or the core):
    one line per refusal, at most a burst of them per master, and the next master is served."""
    with caplog.at_level(logging.WARNING, "iec104.outstation"):
        for _ in range(20):
            async with site.master(answer_timeout_s=2.0) as master:
                with pytest.raises((MasterError, OSError, TimeoutError)):
                    await master.raw_command(UNDECODABLE, renumber=True)
        async with site.master() as master:
            assert (await master.send_setpoint(100, 20000.0)).positive  # still served
    records = [r for r in caplog.records if "refused (asdu_length" in r.getMessage()]
    assert 1 <= len(records) <= 5
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    refused = site.runtime.metrics.registry.get_sample_value(
        "ocpp809_iec104_frames_refused_total", {"reason": "asdu_length"}
    )
    assert refused == 20.0
    await site.until(lambda: len(site.runtime.store.audit()) == 1, what="the valid command audited")
    assert [r.accepted for r in site.runtime.store.audit()] == [True]
