"""Which station identities the gateway takes, whichever listener they come through (pure).

The identity, after URL-decoding: OCPP's identity is at most 48 characters (2.0.1 part 4
section 3.1.1 "identifierString"-like; ':' is Basic Auth's separator, 1.6 security
whitepaper). What the gateway takes is wider than identifierString, so real serial numbers
fit, and narrow enough that an id can never break a log line, a path or a URL: printable
ASCII without space and without these separators. The main listener reads it from the
handshake's path (``parse_station_id``), the legacy listener from the unit's hello line
(``check_station_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MAX_STATION_ID = 48
STATION_ID_RULE = (
    "a station id is 1..48 printable ASCII characters without space, ':', '/', '\\' or '%',"
    " and not '.' or '..'"
)
_ID_FORBIDDEN = frozenset(":/\\%")


@dataclass(frozen=True, slots=True)
class BadStationId:
    """Why no acceptable station id was given: a metric label and a sentence."""

    reason: str
    text: str


def check_station_id(station_id: str) -> str | BadStationId:
    """``station_id`` itself if it keeps the rule above, else why not."""
    if not station_id:
        return BadStationId("bad_path", f"the path must end in a station id; {STATION_ID_RULE}")
    if len(station_id) > MAX_STATION_ID:
        return BadStationId("bad_path", f"the station id has {len(station_id)} characters; {STATION_ID_RULE}")
    for position, char in enumerate(station_id):
        if not "!" <= char <= "~" or char in _ID_FORBIDDEN:
            shown = f"'{char}'" if "!" <= char <= "~" else f"U+{ord(char):04X}"
            return BadStationId(
                "bad_station_id", f"the station id has {shown} at position {position}; {STATION_ID_RULE}"
            )
    if station_id in (".", ".."):
        return BadStationId("bad_station_id", f"the station id is {station_id!r}; {STATION_ID_RULE}")
    return station_id


def parse_station_id(path: str) -> str | BadStationId:
    """The station identity: the last path segment, URL-decoded, checked against the rule above."""
    return check_station_id(unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1]))


def station_id_from_path(path: str) -> str | None:
    """The station identity, or None when the path names none (see ``parse_station_id``)."""
    station_id = parse_station_id(path)
    return station_id if isinstance(station_id, str) else None
