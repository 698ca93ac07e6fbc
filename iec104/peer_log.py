"""Bounded, rate-limited log lines about what a peer sent (issue 13: logs must not amplify).

A hostile master can send thousands of bad frames a second; each may deserve a line in the
log, but not thousands. ``PeerLog`` lets through at most ``burst`` lines per peer and
``interval_s``; the rest are counted, and the next line that gets through says how many
were held back. Anything the peer controls is passed through ``bounded`` first: printable
characters only (the rest escaped, so no forged line breaks) and at most ``max_chars``.
Safe to call from any thread (c104 calls back on its own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CHARS = 200


def bounded(value: object, max_chars: int = MAX_CHARS) -> str:
    """``value`` as one printable line of at most about ``max_chars`` characters."""
    text = str(value)
    cut = len(text) > max_chars
    head = text[:max_chars]
    safe = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in head)
    if len(safe) > max_chars:
        safe = safe[:max_chars]
        cut = True
    return f"{safe}...({len(text)} chars)" if cut else safe


@dataclass
class _Window:
    started_s: float
    emitted: int = 0
    held_back: int = 0


class PeerLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval_s: float = 60.0,
        max_peers: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.max_peers = max_peers
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def warning(self, peer: str, message: str, *, exc_info: BaseException | None = None) -> bool:
        return self.log(logging.WARNING, peer, message, exc_info=exc_info)

    def log(self, level: int, peer: str, message: str, *, exc_info: BaseException | None = None) -> bool:
        """Log ``message`` (already formatted; bound what the peer controls) unless ``peer`` is over its budget.

        Returns whether the line was written. ``exc_info`` adds a traceback, for failures of our
        own code, never for bad input.
        """
        key = bounded(peer, 64)
        with self._lock:
            now = self.clock()
            window = self._windows.get(key)
            if window is None or now - window.started_s >= self.interval_s:
                held = window.held_back if window is not None else 0
                window = _Window(now)
                window.held_back = held
                self._windows[key] = window
            self._windows.move_to_end(key)
            while len(self._windows) > self.max_peers:
                self._windows.popitem(last=False)
            if window.emitted >= self.burst:
                window.held_back += 1
                return False
            window.emitted += 1
            held_back, window.held_back = window.held_back, 0
        suffix = f" ({held_back} more like this held back)" if held_back else ""
        self.logger.log(level, "%s%s", bounded(message, 2 * MAX_CHARS), suffix, exc_info=exc_info)
        return True

    def flush(self, level: int = logging.WARNING) -> None:
        """Say how many lines each peer had held back that no later line has reported yet."""
        with self._lock:
            pending = [(key, w.held_back) for key, w in self._windows.items() if w.held_back]
            for window in self._windows.values():
                window.held_back = 0
        for key, count in pending:
            self.logger.log(level, "%d more line(s) like the last from %s held back", count, key)


__all__ = ["MAX_CHARS", "PeerLog", "bounded"]
