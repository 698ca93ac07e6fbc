"""The project's one small exception tree: who is at fault decides how it is handled.

- the operator's: ``ConfigError`` (and ``ConfigErrors``), ``StartupError`` -- one line, exit 2;
- a peer's: ``PeerInputError`` (OCPP's ``OcppViolation`` is one) -- refused at protocol level;
- ours: ``InternalError`` -- logged with its traceback, answered as an internal error;
- the machine's: ``StoreError`` -- never a silent reset, never a confirmation it cannot keep.
"""

from __future__ import annotations


class Ocpp809Error(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(Ocpp809Error):
    """The operator's configuration is wrong: reported as one line, exit code 2."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}")


class ConfigErrors(ConfigError):
    """Every problem found in one configuration: one line each, exit code 2."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.reason)
        self.errors = errors
        self.args = ("\n".join(str(e) for e in errors),)

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]


class StartupError(Ocpp809Error):
    """The operator's environment stops the start (a port in use, an unreadable file): one
    line naming what failed, exit code 2."""


class PeerInputError(Ocpp809Error):
    """A peer (SCADA master, station, CSMS) sent something invalid: reject it, never crash.
    OCPP's ``OcppViolation`` (answered with a CALLERROR of its kind) is one."""


class StoreError(Ocpp809Error):
    """The durable store cannot be opened, read or written: never a silent reset."""


class InternalError(Ocpp809Error):
    """A bug of ours (something we built broke our own rules): logged with its traceback, the
    peer gets a protocol-level InternalError, the gateway goes on."""
