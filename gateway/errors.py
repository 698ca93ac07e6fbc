"""The project's one small exception tree: who is at fault decides how it is handled."""

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


class PeerInputError(Ocpp809Error):
    """A peer (SCADA master, station, CSMS) sent something invalid: reject it, never crash."""


class StoreError(Ocpp809Error):
    """The durable store cannot be opened, read or written: never a silent reset."""


class InternalError(Ocpp809Error):
    """A bug in ocpp809 itself."""
