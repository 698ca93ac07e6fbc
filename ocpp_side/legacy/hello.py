"""A Series 4 unit's hello line, read before its HTTP upgrade (pure, Sans-I/O).

Such a unit opens TCP and first sends one proprietary line, e.g.
``S4HELLO model=S4-ULTRA vendor=Voltex serial=VX4-000123 fw=2016.3\\r\\n``. ``HelloReader``
is fed the bytes as they arrive (``receive_data``) and says, once, either ``Hello`` (with
the bytes after the line: the start of the upgrade request) or ``Refused``; the shell owns
the socket and the clock and asks ``receive_eof`` / ``timed_out`` when those happen.

The rules, each once:

- the line ends at ``\\n`` (a ``\\r`` before it is dropped) within ``MAX_HELLO_BYTES``;
- it is printable ASCII; an HTTP request line instead means the unit sent no hello, a
  TLS handshake that the unit speaks TLS where the gateway does not;
- ``hello_pattern`` (``re.search``) finds the named group ``serial`` in it;
- the identity is ``identity_template.format(serial=...)``, held to the same station-id
  rule as the main listener's path (``ocpp_side.station_id``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from ocpp_side.peer_log import printable
from ocpp_side.station_id import BadStationId, check_station_id

MAX_HELLO_BYTES = 512  # the line with its end; a real hello is under 100
_HTTP_REQUEST = re.compile(rb"^[A-Z]{3,7} \S+ HTTP/\d")
_TLS_HANDSHAKE = b"\x16\x03"  # a TLS record: handshake, version 3.x


class RefusalReason(StrEnum):
    """Why a unit was refused before its upgrade: the label of ``ocpp809_legacy_refused_total``."""

    NO_HELLO = "no_hello"  # silence, a close, or an HTTP request straight away
    BAD_HELLO = "bad_hello"  # a line the pattern finds no serial in, or not printable ASCII
    HELLO_TOO_LONG = "hello_too_long"
    BAD_STATION_ID = "bad_station_id"  # the identity made from the serial breaks the station-id rule
    NO_UPGRADE = "no_upgrade"  # a hello, then no upgrade request in time


@dataclass(frozen=True, slots=True)
class HelloRules:
    """From ``[legacy]``: how to find the serial and make the identity."""

    pattern: re.Pattern[str]
    identity_template: str
    max_bytes: int = MAX_HELLO_BYTES

    @classmethod
    def from_config(cls, hello_pattern: str, identity_template: str) -> HelloRules:
        return cls(re.compile(hello_pattern), identity_template)


@dataclass(frozen=True, slots=True)
class Hello:
    line: str  # as received, without its line end
    serial: str
    station_id: str  # identity_template applied to the serial


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RefusalReason
    text: str  # one sentence for the log (peer text escaped and bounded)


def read_hello(line: bytes, rules: HelloRules) -> Hello | Refused:
    """The hello ``line`` (without its ``\\n``) read by ``rules``."""
    line = line.removesuffix(b"\r")
    if _HTTP_REQUEST.match(line):
        return Refused(RefusalReason.NO_HELLO, "an HTTP request came first, without a hello line")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as exc:
        return Refused(
            RefusalReason.BAD_HELLO,
            f"the hello is not ASCII (byte 0x{line[exc.start]:02X} at position {exc.start})",
        )
    if not text.isprintable():
        return Refused(RefusalReason.BAD_HELLO, f"the hello has control characters: {printable(text)}")
    found = rules.pattern.search(text)
    serial = found.group("serial") if found is not None else None
    if not serial:
        return Refused(
            RefusalReason.BAD_HELLO, f"no serial in the hello (legacy.hello_pattern): {printable(text)}"
        )
    station_id = check_station_id(rules.identity_template.format(serial=serial))
    if isinstance(station_id, BadStationId):
        return Refused(
            RefusalReason.BAD_STATION_ID, f"serial {printable(serial)} gives no station id: {station_id.text}"
        )
    return Hello(text, serial, station_id)


class HelloReader:
    """Bytes in, one ``Hello`` or ``Refused`` out; see the module docstring."""

    __slots__ = ("_buffer", "outcome", "rest", "rules")

    def __init__(self, rules: HelloRules) -> None:
        self.rules = rules
        self._buffer = bytearray()
        self.outcome: Hello | Refused | None = None
        self.rest = b""  # what came after the hello line: the start of the upgrade request

    def receive_data(self, data: bytes) -> Hello | Refused | None:
        """The outcome once the line is complete (or too long); None while it is not."""
        if self.outcome is not None:
            return self.outcome
        self._buffer += data
        if self._buffer.startswith(_TLS_HANDSHAKE):
            self.outcome = Refused(
                RefusalReason.BAD_HELLO,
                "a TLS handshake instead of a hello line (TLS is on at the unit only)",
            )
            self._buffer.clear()
            return self.outcome
        end = self._buffer.find(b"\n", 0, self.rules.max_bytes)
        if end < 0:
            if len(self._buffer) < self.rules.max_bytes:
                return None
            self.outcome = Refused(
                RefusalReason.HELLO_TOO_LONG,
                f"no line end in the first {self.rules.max_bytes} bytes: {_shown(self._buffer)}",
            )
        else:
            self.outcome = read_hello(bytes(self._buffer[:end]), self.rules)
            if isinstance(self.outcome, Hello):
                self.rest = bytes(self._buffer[end + 1 :])
        self._buffer.clear()
        return self.outcome

    def receive_eof(self) -> Refused:
        """The unit closed before its hello was complete."""
        got = f" after {len(self._buffer)} bytes without a line end" if self._buffer else ""
        return Refused(RefusalReason.NO_HELLO, f"the unit closed the connection{got} before a hello")

    def timed_out(self, timeout_s: float) -> Refused:
        """The opening deadline passed: no hello, or a hello and no upgrade request."""
        if isinstance(self.outcome, Hello):
            return Refused(
                RefusalReason.NO_UPGRADE,
                f"serial {self.outcome.serial}: no upgrade request within {timeout_s:g}s of connecting",
            )
        got = f" ({len(self._buffer)} bytes without a line end)" if self._buffer else ""
        return Refused(RefusalReason.NO_HELLO, f"no hello within {timeout_s:g}s{got}")


def _shown(data: bytes | bytearray) -> str:
    """The start of what a unit sent, for the log: escaped, bounded."""
    return printable(bytes(data[:60]).decode("latin-1"), 60)
