"""``ocpp809 run`` as a subprocess on 127.0.0.1: ``running_gateway`` for tests of the command
line, ``GatewayProcess`` for a gateway that may die (or be killed) under a test.

``GatewayProcess`` drains the child's stderr for its whole life (a fuzzed or fast-driven
gateway logs more than a pipe holds, and a child blocked on a full pipe would look hung),
reads the listeners' ports from the start-up log (port 0 in the configuration: no race for
a free port), and can be SIGKILLed and restarted on the same store.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OCPP809 = [sys.executable, "-m", "gateway.cli"]
START_TIMEOUT_S = 60.0
_IEC104_PORT = re.compile(r"IEC 104 outstation on [0-9.]+:(\d+)")
_OCPP_PORT = re.compile(r"OCPP server on ws://[0-9.]+:(\d+)/")


def loopback_config(tmp_path: Path, extra: str = "") -> Path:
    """A site file: every listener on 127.0.0.1 port 0, no metrics, the store in ``tmp_path``."""
    config = tmp_path / "site.toml"
    config.write_text(
        f"""
[iec104]
listen_host = "127.0.0.1"
port = 0
[ocpp]
listen_host = "127.0.0.1"
port = 0
[metrics]
enabled = false
[store]
path = "{tmp_path / "store.sqlite3"}"
[upstream]
outbox_path = "{tmp_path / "outbox.sqlite3"}"
{extra}"""
    )
    return config


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCPP809, *args], check=False, capture_output=True, text=True, timeout=timeout_s)


@contextmanager
def running_gateway(config: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``ocpp809 [options] run --config config`` until it logs that it runs; SIGINT and reap on exit.

    Yields the process and its stderr lines: up to the start line at first, every line once the
    context has ended.
    """
    proc = subprocess.Popen(
        [*OCPP809, *options, "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: read lines until the start is logged
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "ocpp809 running" in line:
                break
        assert any("ocpp809 running" in line for line in seen), "".join(seen)
        # Keep reading stderr into ``seen``, so a chatty gateway never blocks on a full pipe;
        # once the context ends (the gateway stopped and reaped) ``seen`` holds every line.
        stream = proc.stderr
        drain = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
        drain.start()
        yield proc, seen
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if drain is not None:
            drain.join(timeout=10)


class GatewayProcess:
    """One ``ocpp809 run`` child: started, its log kept, stopped or killed by its pid."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.lines: list[str] = []
        self.iec104_port = 0
        self.ocpp_port = 0
        self._running = threading.Event()
        self.proc = subprocess.Popen(
            [*OCPP809, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._running.wait(START_TIMEOUT_S) or not self.iec104_port:
            self.kill()
            raise AssertionError("the gateway did not start:\n" + "".join(self.lines[-40:]))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self.iec104_port and (match := _IEC104_PORT.search(line)):
                self.iec104_port = int(match.group(1))
            if not self.ocpp_port and (match := _OCPP_PORT.search(line)):
                self.ocpp_port = int(match.group(1))
            if "ocpp809 running" in line:
                self._running.set()
        self._running.set()  # ended before it ran: let the constructor see it

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would: no shutdown code runs."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGINT and wait (SIGKILL if it does not stop in time); the exit code."""
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=5)
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return "".join(self.lines)

    def wait_dead(self, timeout_s: float) -> bool:
        """Whether the process ends within ``timeout_s`` (for a test that expects it to survive)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                return True
            time.sleep(0.02)
        return False
