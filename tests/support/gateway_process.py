"""``ocpp809 run`` as a subprocess on 127.0.0.1, for tests of the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OCPP809 = [sys.executable, "-m", "gateway.cli"]


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
