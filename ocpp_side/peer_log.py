"""What a peer sends, made safe and small before it reaches the log (pure, no I/O of its own).

Three rules, in one place, for every line that carries peer-controlled text:

1. **Escaped.** ``printable()`` turns control characters, line and paragraph separators,
   bidi overrides and backslashes into backslash escapes, so a peer can never start a
   line of its own in the log (CR LF in a station id, an action name, a frame).
2. **Bounded.** Each peer value is cut to ``LOG_CHARS`` characters, with ``...`` and its
   original length: 2 MB of action name is logged as about 200 characters, once.
3. **Rate-limited.** ``PeerLog`` lets through at most ``burst`` lines per peer and kind in
   each ``window_s``; the first line it holds back says so, and one line later says how
   many were suppressed (when the window has passed and the peer logs again, or when the
   peer goes away: ``flush``).

Non-string values are shown with ``reprlib`` (bounded in depth and length), never with
``repr``, which recurses once per nesting level of a peer's JSON.
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections.abc import Callable
from dataclasses import dataclass

LOG_CHARS = 200  # peer text per value in a log line (and in a CALLERROR description)
BURST = 10  # lines per peer and kind in a window
WINDOW_S = 60.0
MAX_PEERS = 50_000  # peers remembered; past this, the ones with nothing pending are forgotten

_brief = reprlib.Repr()
_brief.maxlevel = 3
_brief.maxstring = LOG_CHARS
_brief.maxother = LOG_CHARS
_brief.maxlist = _brief.maxdict = _brief.maxtuple = 6


def printable(value: object, limit: int = LOG_CHARS) -> str:
    """``value`` as one safe log token: escaped, at most about ``limit`` characters."""
    text = value if isinstance(value, str) else _text(value)
    head = text[:limit]
    if not head.isprintable() or "\\" in head:
        head = head.encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        return f"{head}... ({len(text)} chars)"
    return head


def brief(value: object, limit: int = LOG_CHARS) -> str:
    """A bounded, escaped ``repr`` of any value, however deep or long."""
    if isinstance(value, str):
        return f"'{printable(value, limit)}'"
    try:
        return printable(_brief.repr(value), limit)
    except ValueError:  # an integer beyond sys.get_int_max_str_digits()
        return f"<{type(value).__name__}>"


def _text(value: object) -> str:
    try:
        if isinstance(value, (list, dict, tuple, set, frozenset)):
            return _brief.repr(value)  # str() of a peer's JSON recurses once per level
        return str(value)
    except ValueError:
        return f"<{type(value).__name__}>"


@dataclass(slots=True)
class _Window:
    logger: logging.Logger
    start: float
    lines: int = 0
    suppressed: int = 0
    level: int = logging.DEBUG


class PeerLog:
    """Per-peer, per-kind rate limit in front of the loggers; see the module docstring.

    A peer is a station id, or a remote host before its handshake; ``kind`` names the
    sort of line ("malformed frame", "handshake refused" ...). A peer that reconnects
    keeps its window. ``clock`` is monotonic seconds; the tests pass their own.
    """

    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.max_peers = max_peers
        self._peers: dict[str, dict[str, _Window]] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        peer: str,
        kind: str,
        msg: str = "",
        *args: object,
        exc_info: bool = False,
    ) -> bool:
        """Log ``"{peer}: {kind}: " + msg % args`` unless ``peer`` has had ``burst`` ``kind``
        lines in the window; every string argument is escaped and bounded. True if logged."""
        if not logger.isEnabledFor(level):
            return False
        now = self.clock()
        kinds = self._peers.get(peer)
        if kinds is None:
            if len(self._peers) >= self.max_peers:
                self._forget_quiet(now)
            kinds = self._peers[peer] = {}
        window = kinds.get(kind)
        if window is None:
            window = kinds[kind] = _Window(logger, now)
        elif now - window.start >= self.window_s:
            self._summarise(peer, kind, window)
            window.start, window.lines = now, 0
        if window.lines < self.burst:
            window.lines += 1
            text = "%s: " + kind + (": " + msg if msg else "")
            logger.log(level, text, printable(peer), *map(_safe_arg, args), exc_info=exc_info)
            return True
        if window.suppressed == 0:
            logger.log(
                level,
                "%s: more than %d %s lines within %gs: the next ones are counted, not logged",
                printable(peer),
                self.burst,
                printable(kind),
                self.window_s,
            )
        window.suppressed += 1
        window.level = max(window.level, level)
        return False

    def flush(self, peer: str) -> None:
        """Say now how many lines of ``peer`` were suppressed (it went away); its windows stay."""
        for kind, window in self._peers.get(peer, {}).items():
            self._summarise(peer, kind, window)

    def _summarise(self, peer: str, kind: str, window: _Window) -> None:
        if window.suppressed:
            window.logger.log(
                window.level,
                "%s: %d more %s lines suppressed (at most %d per %gs)",
                printable(peer),
                window.suppressed,
                printable(kind),
                self.burst,
                self.window_s,
            )
            window.suppressed, window.level = 0, logging.DEBUG

    def _forget_quiet(self, now: float) -> None:
        for peer, kinds in list(self._peers.items()):
            if all(now - w.start >= self.window_s for w in kinds.values()):
                self.flush(peer)
                del self._peers[peer]


def _safe_arg(arg: object) -> object:
    if type(arg) is int or type(arg) is float:
        return arg  # keeps %d / %g working
    return printable(arg)
