"""Keep the cyclic garbage collector off the long-lived per-station objects.

With thousands of stations connected the process holds hundreds of thousands of
GC-tracked objects (websocket connections, protocol state, readers). Every full
collection walks all of them, and one that falls inside a fan-out costs it tenths of
a second (measured in bench/README.md). Once the connections have settled they are
moved out of the collector's sight with ``gc.freeze()``; short-lived garbage is still
collected as usual. After the next wave of (dis)connections the frozen set is
released, collected once (so objects of departed stations are not kept), and frozen
again. This is process-wide, so it is switched by ``ocpp.gc_freeze``.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


class LongLivedObjects:
    """Freeze the heap when the number of connections has changed and then held still."""

    def __init__(self, settle_s: float = 2.0, min_change: int = 50) -> None:
        self.settle_s = settle_s
        self.min_change = min_change
        self._frozen_at = 0  # connections when last frozen
        self._seen = 0
        self._seen_since = 0.0
        self.frozen = False

    def observe(self, connections: int, now_s: float) -> bool:
        """Called periodically; True when it has just (re)frozen the heap."""
        if connections != self._seen:
            self._seen, self._seen_since = connections, now_s
            return False
        change = abs(connections - self._frozen_at)
        if now_s - self._seen_since < self.settle_s or change < max(self.min_change, self._frozen_at // 10):
            return False
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._frozen_at, self.frozen = connections, True
        log.info(
            "heap frozen at %d connections (%d objects, %.0f ms)",
            connections,
            gc.get_freeze_count(),
            (time.perf_counter() - started) * 1000,
        )
        return True

    def release(self) -> None:
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
