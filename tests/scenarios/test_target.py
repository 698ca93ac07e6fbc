"""``ocpp809 scenario run --target``: the site variants against a separately started gateway.

Everything here is a subprocess on 127.0.0.1: the gateway (``ocpp809 run --config``), its
stations (``ocpp809 sim stations``) and the scenario run itself, as on a site. Every
wait is bounded and every process is stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from gateway import __version__
from scenarios.spec import SCENARIO_DIR, SITE_SCENARIO_DIR
from tests.support.gateway_process import OCPP809, run_cli, running_gateway

T1_SITE = SITE_SCENARIO_DIR / "t1_site_setpoint_change.toml"
T3_SITE = SITE_SCENARIO_DIR / "t3_site_reject_invalid.toml"


def free_port() -> int:
    """A port nothing listens on right now (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def site_file(tmp_path: Path, iec_port: int, ocpp_port: int) -> Path:
    """A site's own file: fixed loopback ports, the DSO master allowed from 127.0.0.1."""
    config = tmp_path / "site.toml"
    config.write_text(
        f"""
[iec104]
listen_host = "127.0.0.1"
port = {iec_port}
allowed_masters = ["127.0.0.1"]
link_poll_s = 0.1
[ocpp]
listen_host = "127.0.0.1"
port = {ocpp_port}
meter_sample_interval_s = 10
[metrics]
enabled = false
[store]
path = "{tmp_path / "store.sqlite3"}"
[upstream]
outbox_path = "{tmp_path / "outbox.sqlite3"}"
"""
    )
    return config


def wait_for_output(proc: subprocess.Popen[bytes], text: str, timeout_s: float) -> str:
    """Read ``proc``'s stdout until ``text`` appears (bounded); everything read so far."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {text!r} within {timeout_s} s: {seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            seen += os.read(fd, 4096)
    return seen.decode(errors="replace")


@contextmanager
def sim_stations(ocpp_port: int, count: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ocpp809 sim stations`` until every one is connected; SIGINT and reap on exit."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                *OCPP809,
                "--log-level",
                "warning",
                "sim",
                "stations",
                "--url",
                f"ws://127.0.0.1:{ocpp_port}",
                "--count",
                str(count),
                "--demand-w",
                "11000",
                "--status-every",
                "0.3",
                "--duration",
                "150",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_for_output(proc, f"connected {count}/{count}", 30)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


@pytest.mark.timeout(240)
def test_target_passes_the_site_variants_of_t1_and_t3_against_a_running_gateway(tmp_path: Path) -> None:
    iec_port, ocpp_port = free_port(), free_port()
    config = site_file(tmp_path, iec_port, ocpp_port)
    site_dir = tmp_path / "site-scenarios"  # a directory of scenario files, as an engineer keeps them
    site_dir.mkdir()
    for path in (T1_SITE, T3_SITE):
        shutil.copy(path, site_dir / path.name)
    reports = tmp_path / "reports"
    with running_gateway(config) as (gateway, _), sim_stations(ocpp_port, 4, tmp_path / "stations.log"):
        result = run_cli(
            "--log-level",
            "warning",
            "scenario",
            "run",
            "--target",
            f"127.0.0.1:{iec_port}",
            "--config",
            str(config),
            str(site_dir),
            "--report-dir",
            str(reports),
            timeout_s=150,
        )
        assert gateway.poll() is None  # the gateway outlived the run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 scenarios passed" in result.stdout
    assert f"against the running gateway at 127.0.0.1:{iec_port}" in result.stdout

    report = json.loads((reports / "scenarios.json").read_text())
    assert report["passed"] is True and report["time_scale"] == 1
    assert report["version"] == __version__ and report["mode"] == "target"
    assert report["target"] == f"127.0.0.1:{iec_port}"
    assert report["configuration"] == {
        "path": str(config.resolve()),
        "sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
    }
    assert [s["name"] for s in report["scenarios"]] == ["T1 site setpoint change", "T3 site reject invalid"]
    t1 = {row["step"]: row for row in report["scenarios"][0]["rows"]}
    assert t1["site draws more than 20 kW"]["passed"]  # the stations really drew above 20 kW ...
    assert float(t1["DSO reads the reduced total"]["measured"].split(" ")[0]) <= 20000  # ... then not
    t3 = {row["step"]: row for row in report["scenarios"][1]["rows"]}
    assert t3["DSO sends just below the minimum"]["measured"].startswith("negative")
    suite = ET.parse(reports / "scenarios.junit.xml").getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["target"] == f"127.0.0.1:{iec_port}" and props["version"] == __version__
    assert props["configuration"] == str(config.resolve())


def test_a_station_step_is_refused_with_one_line_before_anything_is_sent(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run_cli(
            "scenario",
            "run",
            "--target",
            f"127.0.0.1:{port}",
            str(SCENARIO_DIR / "t1_setpoint_change.toml"),
            "--report-dir",
            str(tmp_path),
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: refused before anything was sent
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"error: {SCENARIO_DIR / 't1_setpoint_change.toml'}: steps[1]: "
        'expect = "site_power_w" needs the simulated stations; refused with --target'
    )
    assert not (tmp_path / "scenarios.json").exists()


def test_an_unreachable_target_is_a_failed_setup_row_saying_why(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(
        "scenario", "run", "--target", f"127.0.0.1:{port}", str(T3_SITE), "--report-dir", str(tmp_path)
    )
    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "scenarios.json").read_text())
    rows = report["scenarios"][0]["rows"]
    assert len(rows) == 1 and rows[0]["step"] == "setup" and not rows[0]["passed"]
    assert rows[0]["measured"] == "connection refused (nothing listens there)"
    assert report["target"] == f"127.0.0.1:{port}" and report["configuration"] is None


def test_target_options_are_checked_first(tmp_path: Path) -> None:
    for options, message in (
        (["--target", "127.0.0.1:99999"], "port '99999' is not a number in 1..65535"),
        (["--target", "127.0.0.1:1", "--time-scale", "60"], "cannot be scaled"),
        (["--tls-ca", "ca.pem"], "go with --target"),
    ):
        result = run_cli("scenario", "run", *options, "--report-dir", str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
