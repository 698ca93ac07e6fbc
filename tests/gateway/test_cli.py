"""The CLI: one-line config errors with exit 2, and a clean start/stop of `ocpp809 run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.core.model import Mode
from gateway.store import Store
from tests.support.gateway_process import loopback_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ocpp809.toml"
OCPP809 = [sys.executable, "-m", "gateway.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCPP809, *args], check=False, capture_output=True, text=True, timeout=60)


def test_check_config_accepts_the_example() -> None:
    result = run_cli("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_bad_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmin_limt_w = 6000\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {bad}: limits.min_limt_w: unknown key"]


def test_check_config_names_a_bad_missing_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nmissing_start = "maybe"\n')
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: store.missing_start: ")


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("ocpp809 ")


@pytest.mark.parametrize("log_format", ["human", "json"])
def test_run_starts_and_stops_cleanly_on_sigint(tmp_path: Path, log_format: str) -> None:
    config = loopback_config(tmp_path)
    proc = subprocess.Popen(
        [*OCPP809, "--log-format", log_format, "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:  # bounded: read lines until the start is logged
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "ocpp809 running" in line:
                break
        assert any("ocpp809 running" in line for line in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0, rest
        assert "ocpp809 stopping" in rest
        assert "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert (tmp_path / "store.sqlite3").exists()
    if log_format == "json":
        records = [json.loads(line) for line in "".join(seen).splitlines() + rest.splitlines() if line]
        assert any(r["message"] == "ocpp809 running" and r["levelname"] == "INFO" for r in records)


def test_a_second_run_on_the_same_store_exits_with_one_line_and_touches_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    config = loopback_config(tmp_path)  # its store is tmp_path / "store.sqlite3"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [*OCPP809, "run", "--config", str(config)], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert first.stderr is not None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:  # bounded: read lines until the start is logged
            line = first.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "ocpp809 running" in line:
                break
        assert any("ocpp809 running" in line for line in seen), "".join(seen)
        files = {
            p.name: p.read_bytes()
            for p in tmp_path.iterdir()
            if p.name.startswith("store.sqlite3") and p.is_file()
        }
        assert {"store.sqlite3", "store.sqlite3.lock"} <= files.keys()

        second = run_cli("run", "--config", str(config))
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"error: store {store} is in use by another ocpp809 (pid {first.pid})"
        ]
        assert {
            p.name: p.read_bytes()
            for p in tmp_path.iterdir()
            if p.name.startswith("store.sqlite3") and p.is_file()
        } == files
        assert first.poll() is None  # the first one runs on

        first.send_signal(signal.SIGINT)
        rest = first.communicate(timeout=30)[1]
        assert first.returncode == 0, rest
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    reopened = Store(store)  # the lock went with the first gateway
    try:
        stored = reopened.load_limit()
        assert stored is not None and stored.mode is Mode.FALLBACK  # the first one's row, as it left it
    finally:
        reopened.close()
