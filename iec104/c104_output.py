"""What c104 and lib60870 print, routed through logging (issue 13: ~4,900 raw lines in a campaign).

c104 2.2.1 writes straight to the process's file descriptors from C++: warnings such as
``[c104.Point] Failed to select point in DIRECT command mode`` (one per hostile frame) go
to ``std::cerr`` (fd 2), its debug mode (``c104.set_debug_mode``) to ``std::cout`` (fd 1).
Python cannot intercept those streams, only the descriptors. ``route_library_output()``:

- points fd 1 and fd 2 at two pipes, each read by a thread that turns every line into a
  log record on the ``c104`` logger: fd 2 at WARNING, fd 1 at DEBUG; lines are cut to
  ``MAX_LINE`` characters and rate-limited per distinct message (digits ignored), so a
  flood of one warning is a few lines and a count;
- moves Python's own ``sys.stdout``/``sys.stderr`` (and any logging handler or
  faulthandler writing to fd 1 or 2) onto duplicates of the original descriptors, so the
  gateway's logging still reaches the console or journal directly and can never feed back
  into the pipes;
- undoes all of it on exit (the threads end when the pipes close).

Use it only around the gateway process's main (the ``run`` command): it changes
process-wide state, which tests and other tools in the same process do not expect. A line
still in a pipe when the process dies hard is lost (a C-level crash message included).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self, TextIO

from iec104.peer_log import PeerLog

MAX_LINE = 500
_PIPE_SIZE = 1 << 20  # room for bursts, so c104's threads rarely wait on the reader
_F_SETPIPE_SZ = 1031
_DIGITS = re.compile(r"\d+")

log = logging.getLogger("c104")


@dataclass
class _Route:
    fd: int
    level: int
    saved: int = -1
    reader: int = -1
    thread: threading.Thread | None = None
    python_stream: TextIO | None = None
    replaced: TextIO | None = None
    handlers: list[logging.StreamHandler[TextIO]] = field(default_factory=list)


class LibraryOutput:
    def __init__(self, logger: logging.Logger = log, *, burst: int = 5, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.lines = PeerLog(logger, burst=burst, interval_s=interval_s, max_peers=1024)
        self._routes: list[_Route] = []
        self._faulthandler_file: TextIO | None = None

    def start(self) -> None:
        if self._routes:
            raise RuntimeError("library output is already routed")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            self._route(_Route(1, logging.DEBUG), "stdout")
            self._route(_Route(2, logging.WARNING), "stderr")
        except BaseException:
            self.stop()
            raise
        if faulthandler.is_enabled():
            self._faulthandler_file = sys.stderr
            faulthandler.enable(file=sys.stderr)

    def stop(self) -> None:
        for route in reversed(self._routes):
            self._unroute(route)
        self._routes.clear()
        self.lines.flush()
        if self._faulthandler_file is not None:
            self._faulthandler_file = None
            faulthandler.enable(file=sys.stderr)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------

    def _route(self, route: _Route, name: str) -> None:
        self._routes.append(route)
        route.saved = os.dup(route.fd)
        reader, writer = os.pipe()
        route.reader = reader
        with contextlib.suppress(OSError):
            import fcntl

            fcntl.fcntl(writer, _F_SETPIPE_SZ, _PIPE_SIZE)
        os.dup2(writer, route.fd)
        os.close(writer)
        # Python's own writes go where fd 1/2 went before, so they never come back through a pipe.
        replacement = io.TextIOWrapper(
            io.FileIO(route.saved, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        route.replaced = replacement
        route.python_stream = sys.stdout if route.fd == 1 else sys.stderr
        if route.fd == 1:
            sys.stdout = replacement
        else:
            sys.stderr = replacement
        route.handlers = _handlers_on(route.fd)
        for handler in route.handlers:
            handler.setStream(replacement)
        route.thread = threading.Thread(target=self._pump, args=(route,), name=f"c104-{name}", daemon=True)
        route.thread.start()

    def _unroute(self, route: _Route) -> None:
        with contextlib.suppress(Exception):
            if route.replaced is not None:
                route.replaced.flush()
        if route.saved >= 0:
            os.dup2(route.saved, route.fd)  # closes the pipe's last write end: the reader sees EOF
        if route.python_stream is not None:
            if route.fd == 1:
                sys.stdout = route.python_stream
            else:
                sys.stderr = route.python_stream
            for handler in route.handlers:
                handler.setStream(route.python_stream)
        if route.thread is not None:
            route.thread.join(timeout=5.0)
        if route.replaced is not None:
            with contextlib.suppress(Exception):
                route.replaced.close()
        if route.saved >= 0:
            os.close(route.saved)
            route.saved = -1

    def _pump(self, route: _Route) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(route.reader, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._emit(route.level, line)
                if len(pending) > MAX_LINE:  # a line without end: log what there is
                    self._emit(route.level, pending)
                    pending = b""
            if pending:
                self._emit(route.level, pending)
        finally:
            os.close(route.reader)

    def _emit(self, level: int, raw: bytes) -> None:
        text = raw.decode("utf-8", "backslashreplace").rstrip("\r")
        if not text.strip():
            return
        key = _DIGITS.sub("#", text)[:80]  # one budget per message, whatever its numbers
        self.lines.log(level, key, text[:MAX_LINE])


def _handlers_on(fd: int) -> list[logging.StreamHandler[TextIO]]:
    """Every logging stream handler that writes to ``fd``."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    found: list[logging.StreamHandler[TextIO]] = []
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                try:
                    writes_to = handler.stream.fileno()
                except (AttributeError, OSError, ValueError):
                    continue
                if writes_to == fd and handler not in found:
                    found.append(handler)
    return found


@contextlib.contextmanager
def route_library_output(logger: logging.Logger = log) -> Iterator[LibraryOutput]:
    """Route c104's fd 1/fd 2 output into ``logger`` for the duration (the gateway's ``run`` only)."""
    output = LibraryOutput(logger)
    output.start()
    try:
        yield output
    finally:
        output.stop()


__all__ = ["MAX_LINE", "LibraryOutput", "route_library_output"]
