"""ocpp809 gateway: the pure limit-arbitration core and the composition root."""

from __future__ import annotations

__version__ = "0.1.0"
