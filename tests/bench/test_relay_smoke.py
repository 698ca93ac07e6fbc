"""Smoke test of the relay benchmark (``--modes relay``): five charging stations through every
case (straight to the fast CSMS, the gateway standalone, the verbatim relay, the translated
relay, the baseline again), real processes and sockets on 127.0.0.1. It proves the bench
measures real answers: every call answered, the CSMS saw each one relayed, the table has its
rows. Speed is never asserted (``python -m bench.fanout --modes relay`` measures it).
"""

from __future__ import annotations

from bench.fanout import parse_args
from bench.relay import ACTIONS, RUN_ORDER, RelayOptions, render_relay, run_relay

STATIONS = 5
METER_PER_TX = 3


def test_every_case_answers_every_call_and_the_csms_sees_each_one() -> None:
    opts = RelayOptions(
        stations=(STATIONS,),
        rate_per_s=25.0,
        paced_s=2.0,
        burst_calls=10,
        meter_per_tx=METER_PER_TX,
        timeout_s=20.0,
    )
    r = run_relay(STATIONS, opts)
    assert r.ok, r.errors
    assert [c.case for c in r.cases] == list(RUN_ORDER)
    for c in r.cases:
        for log in (c.paced, c.burst):
            assert log["failed"] == log["unanswered"] == log["call_errors"] == 0
            assert log["answered"] == log["sent"]
            assert sum(len(log["latencies_s"][a]) for a in ACTIONS) == sum(log["sent"].values())
        assert sum(c.burst["answered"].values()) == STATIONS * opts.burst_calls
        assert c.paced["answered"]["StartTransaction"] > 0 and c.burst["answered"]["MeterValues"] > 0
        assert c.rate_per_s is not None and c.rate_per_s > 0
        if c.case == "standalone":
            assert not c.csms_calls  # no CSMS: the gateway answered them itself
        else:
            assert c.csms_calls  # checked against the stations' answers inside the case (else not ok)
        if c.case in ("relay", "translated"):
            assert c.relay_counters["answered_locally"] == 0
            assert c.relay_counters["links_up"] == STATIONS
            assert c.cpu_us_per_call("gateway") is not None
    translated = next(c for c in r.cases if c.case == "translated")
    assert set(translated.csms_calls) == {"ocpp2.0.1 TransactionEvent"}
    relay = next(c for c in r.cases if c.case == "relay")
    assert set(relay.csms_calls) == {f"ocpp1.6 {a}" for a in ACTIONS}
    table = render_relay([r], opts)
    assert table.count(f"| {STATIONS} | ") == 2 * len(RUN_ORDER)
    assert "added p50 / p99" in table and "calls answered/s" in table


def test_the_mode_is_one_option_of_the_bench() -> None:
    opts, _args = parse_args(["--modes", "relay", "--stations", "7", "--relay-rate", "50", "--quick"])
    assert opts.modes == ("relay",)
    assert opts.relay.stations == (7,) and opts.relay.rate_per_s == 50.0
    assert opts.relay.paced_s == 10.0 and opts.relay.burst_calls == 12
