"""Why a simulator or a ``--target`` run could not reach its peer, in one line of words.

The simulators and the scenario runner meet the same few failures: nothing listens
(connection refused), the TLS handshake fails, the peer accepts the TCP connection and
closes it (an IEC 104 outstation whose ``allowed_masters`` leaves us out, a central
system that refuses the station id), or nothing answers in time. ``describe`` turns the
exception into one of those, never a traceback.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

# The simulators' exit codes (``ocpp809 sim dso|stations``; README, "The simulators on their own").
EXIT_OK = 0
EXIT_COULD_NOT_CONNECT = 3  # refused, TLS failure, closed by the peer, timeout, unknown host
EXIT_SETPOINT_REFUSED = 4  # sim dso: the outstation answered a setpoint with a negative ACT_CON
EXIT_LINK_LOST = 5  # sim dso: connected, then the link closed or a command went unanswered


def describe(exc: BaseException, timeout_s: float | None = None) -> str:
    """One line: the kind of failure first (``connection refused``, ``TLS failure``, ``closed
    by the peer``, ``timeout``, ``unknown host``), then what the exception said."""
    import websockets.exceptions as ws_errors  # the stations' client library

    from iec104.master import MasterError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS failure: the peer's certificate: {exc.verify_message or text}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {exc.reason or text}"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or text})"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        within = f" within {timeout_s:g} s" if timeout_s else ""
        detail = f" ({text})" if text != "TimeoutError" else ""
        return f"timeout: no answer{within}{detail}"
    if isinstance(exc, ws_errors.InvalidStatus):
        status = exc.response.status_code
        return f"closed by the peer: it answered HTTP {status} (station id or password not accepted?)"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "closed by the peer: connection reset"
    if isinstance(exc, ws_errors.ConnectionClosed | ws_errors.InvalidMessage | EOFError):
        return f"closed by the peer ({text})"
    if isinstance(exc, MasterError):
        if "SSL" in text:
            return f"TLS failure: {text}"
        if "bad start octet" in text or "malformed frame" in text:
            return f"not an IEC 104 outstation: {text}"
        if "never confirmed STARTDT" in text:
            return "timeout: the connection was accepted, STARTDT never confirmed"
        if "closed" in text or "Reset" in text or "Broken" in text:
            return f"closed by the peer ({text}; is this address in the gateway's iec104.allowed_masters?)"
        return text
    if isinstance(exc, OSError):
        return exc.strerror or text
    return f"{type(exc).__name__}: {text}"
