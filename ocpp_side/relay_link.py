"""What every station relay does with its upstream link, whatever it relays (verbatim or translated).

``UpstreamRelay`` is one station's websocket client to ``{csms_url}/{station_id}`` and
the machinery around it; ``relay.StationRelay`` (frames verbatim) and
``translated_relay.TranslatedRelay`` (1.6 station, 2.0.1 CSMS) add how calls cross.

- **One worker, in order.** Station calls, the catch-up after a (re)connection, the
  station's K14 notice and other gateway pushes are jobs on one queue, taken one at a
  time: toward the CSMS at most one call is in flight (OCPP-J), and nothing overtakes
  what the outbox still holds.
- **Catch-up.** After the link comes up: the station's last BootNotification again (kept in
  the outbox file, so also for a station that reconnects without booting), then
  the outbox in order (``replay``), then the station's cap notice.
- **Boot gate.** A CSMS that answers a BootNotification Pending or Rejected hears nothing
  else on that link until it accepts one (OCPP 1.6 4.2, 2.0.1 B02/B03): the station got
  the answer (it retries itself); what it sends meanwhile is answered locally and the
  durable part kept; a repeated boot of ours is retried after the CSMS's interval.
- **CSMS maximums.** Station maximums the CSMS installs are kept as the CSMS sent them
  and capped again whenever the station's DSO allocation moves (``recap``).
- **K14.** On a 2.0.1 link, the station's DSO cap is told (``cap_changed``) when it moves
  by more than ``limit_change_significance``, and cleared when the DSO lifts it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from gateway.core.model import OcppVersion
from gateway.runtime import CoreRuntime
from ocpp_side import codec, schemas
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, FrameError
from ocpp_side.csms_guard import capped_max_profile
from ocpp_side.limit_notice import StationCapNotices, so_limit_call
from ocpp_side.outbox import Outbox
from ocpp_side.session import CallOutcome, StationSession
from ocpp_side.settings import OcppConfig, UpstreamConfig
from ocpp_side.translation.api import TranslationState
from ocpp_side.translation.downward import NO_COUNTERPART
from ocpp_side.upstream import STOP_TIMEOUT_S, LinkSettings, UpstreamLink
from ocpp_side.versions import VersionRules, rules_for

log = logging.getLogger(__name__)

Reply = tuple[CallResult | CallError, str]
Exchange = Callable[[str, str], Awaitable[Reply | None]]
BOOT = "BootNotification"
NOT_ACCEPTED = frozenset({"Pending", "Rejected"})


# What csms_guard.judge can do to a CSMS call: cap a station maximum, or refuse a call on a
# profile id the gateway reserves for the DSO's profiles.
GUARDED = (
    ("SetChargingProfile", "capped"),
    ("SetChargingProfile", "refused"),
    ("ClearChargingProfile", "refused"),
)


class RelayMetrics:
    def __init__(self, runtime: CoreRuntime) -> None:
        r = runtime.metrics.registry
        self.links_up = Gauge(
            "ocpp809_upstream_links_up", "Station links to the CSMS that are up", registry=r
        )
        self.relayed = Counter(
            "ocpp809_upstream_calls_relayed", "CALLs relayed, by direction", ["direction"], registry=r
        )
        self.local = Counter(
            "ocpp809_upstream_calls_answered_locally", "Station calls answered without the CSMS", registry=r
        )
        self.outbox_appended = Counter(
            "ocpp809_upstream_outbox_appended", "Station messages kept for the CSMS", registry=r
        )
        self.outbox_replayed = Counter(
            "ocpp809_upstream_outbox_replayed", "Kept messages delivered to the CSMS", registry=r
        )
        self.outbox_dropped = Counter(
            "ocpp809_upstream_outbox_dropped",
            "Kept messages dropped by the outbox's size or age bound, never delivered",
            registry=r,
        )
        self.outbox_depth = Gauge(
            "ocpp809_upstream_outbox_depth", "Messages waiting in the outbox for the CSMS", registry=r
        )
        self.guarded = Counter(
            "ocpp809_upstream_csms_calls_guarded",
            "CSMS calls changed or refused to keep the DSO cap",
            ["action", "verdict"],
            registry=r,
        )
        self.not_supported = Counter(
            "ocpp809_relay_not_supported",
            "2.0.1 CSMS calls refused NotSupported for a translated 1.6 station, by action",
            ["action"],
            registry=r,
        )
        self.relayed.labels("station_to_csms")
        self.relayed.labels("csms_to_station")
        # Known labels start at zero: a rate over a series that does not exist yet is no rate.
        for action, verdict in GUARDED:
            self.guarded.labels(action, verdict)

    def translating(self) -> None:
        """Stations are translated: the 2.0.1 requests 1.6 has no counterpart of count from zero."""
        for action in sorted(NO_COUNTERPART):
            self.not_supported.labels(action)


class Hub(Protocol):
    """What a station relay (and an outbox drain) uses of ``relay.RelayHub``."""

    config: UpstreamConfig
    ocpp: OcppConfig
    runtime: CoreRuntime
    metrics: RelayMetrics
    outbox: Outbox
    reserved_ids: frozenset[int]

    def link_settings(self, identity: str, subprotocol: str, password: str) -> LinkSettings: ...

    def translation_state(self, station_id: str) -> TranslationState: ...


class StationEnd(Protocol):
    """The station side as the relay sees it: its session, and the shell's I/O."""

    @property
    def session(self) -> StationSession: ...

    def wake(self) -> None:
        """The session has a call to send: the shell will ask it for frames soon."""

    async def flush(self) -> None:
        """Hand the session's events on and write its frames, now."""

    async def close(self, code: int, reason: str) -> None:
        """Close the station's socket."""


def gateway_message_id() -> str:
    """A message id for a call the gateway makes upstream (unique, 28 characters)."""
    return f"ocpp809-{uuid.uuid4().hex[:20]}"


def repeated(raw: str) -> tuple[str, str]:
    """A stored CALL the gateway repeats upstream (a station's boot on a new CSMS link): its
    new message id and text. OCPP 2.0.1 Part 4 4.1.4: an id is never used twice for the same
    identity, on any connection, retries included; the CSMS answered the old one."""
    call = codec.parse_frame(raw)
    assert type(call) is Call
    unique_id = gateway_message_id()
    return unique_id, codec.encode_call(unique_id, call.action, call.payload).decode()


class UpstreamCalls:
    """Calls sent on one link awaiting their replies, each bounded by ``timeout_s``."""

    def __init__(self, name: str, link: UpstreamLink, timeout_s: float) -> None:
        self.name, self.link, self.timeout_s = name, link, timeout_s
        self._pending: dict[str, asyncio.Future[Reply | None]] = {}

    async def exchange(self, unique_id: str, text: str) -> Reply | None:
        """Send one CALL upstream and wait for its reply; None if the link is down or too slow."""
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._pending[unique_id] = future
        try:
            if not self.link.send(text):
                return None
            async with asyncio.timeout(self.timeout_s):  # not wait_for: on 3.11 it can lose a racing cancel
                return await future
        except TimeoutError:
            log.warning("%s: no CSMS answer in %gs", self.name, self.timeout_s)
            return None
        finally:
            if self._pending.get(unique_id) is future:
                del self._pending[unique_id]

    def replied(self, frame: CallResult | CallError, text: str) -> None:
        future = self._pending.get(frame.unique_id)
        if future is not None and not future.done():
            future.set_result((frame, text))
        else:
            log.info("%s: CSMS reply to no pending call (id %s) dropped", self.name, frame.unique_id)

    def fail_all(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_result(None)


class TxMapper:
    """1.6 transaction ids the gateway gave during an outage -> the CSMS's, in replayed frames."""

    def __init__(self, outbox: Outbox, station_id: str, rules: VersionRules) -> None:
        self.outbox, self.station_id, self.rules = outbox, station_id, rules
        self.csms_of = outbox.tx_map(station_id)  # local 1.6 transaction id -> the CSMS's

    def mapped(self, action: str, raw: str) -> str:
        """``raw`` unchanged, unless it names a 1.6 transaction the CSMS knows by another id."""
        if not self.csms_of or action not in self.rules.TX_REFERENCES:
            return raw
        frame = codec.parse_frame(raw)
        assert type(frame) is Call
        csms_tx = self.csms_of.get(frame.payload.get("transactionId"))  # type: ignore[arg-type]
        if csms_tx is None:
            return raw
        payload = {**frame.payload, "transactionId": csms_tx}
        return codec.encode_call(frame.unique_id, action, payload).decode()

    def learn(self, local_tx: int, answer: CallResult) -> None:
        csms_tx = answer.payload.get("transactionId")
        if type(csms_tx) is int:
            self.outbox.map_tx(self.station_id, local_tx, csms_tx)
            self.csms_of[local_tx] = csms_tx


async def replay(
    outbox: Outbox,
    station_id: str,
    exchange: Exchange,
    mapper: TxMapper,
    replayed: Callable[[], None],
    renumber: bool,
) -> bool:
    """Send the station's outbox in order, each row deleted once answered; True once it is empty.

    ``renumber`` (the CSMS's version forbids an id twice, ``IDS_UNIQUE_ACROSS_CONNECTIONS``):
    each attempt goes under a new id, since the CSMS may have answered the last one (lost
    with the link); a repeat is known by its content (seqNo). Else a row goes as it was kept."""
    while True:
        rows = outbox.pending(station_id)
        if not rows:
            return True
        for row in rows:
            text = mapper.mapped(row.action, row.raw)
            if renumber:
                reply = await exchange(*repeated(text))
            else:
                frame = codec.parse_frame(row.raw)
                assert type(frame) is Call
                reply = await exchange(frame.unique_id, text)
            if reply is None:
                return False  # down again (or too slow): the row stays for the next time
            answer = reply[0]
            if type(answer) is CallError:
                log.warning("%s: CSMS refused replayed %s: %s", station_id, row.action, answer.error_code)
            elif row.local_tx is not None:
                assert type(answer) is CallResult
                mapper.learn(row.local_tx, answer)
            outbox.delete(station_id, row.seq)
            replayed()


@dataclass(frozen=True, slots=True)
class StationJob:
    call: Call
    raw: str


@dataclass(frozen=True, slots=True)
class PushJob:
    """Gateway calls for the CSMS on the station's link (2.0.1 follow-ups), in order."""

    calls: tuple[tuple[str, dict[str, Any]], ...]


CATCH_UP = "catch-up"
NOTICE = "notice"
Job = StationJob | PushJob | str


class UpstreamRelay:
    """One station's link to the CSMS; see the module docstring. Subclasses say how calls cross."""

    def __init__(self, hub: Hub, end: StationEnd, subprotocol: str) -> None:
        self.hub = hub
        self.end = end
        self.session = end.session
        self.station_id = self.session.station_id
        self.rules = self.session.rules  # the station's version
        self.version = self.rules.VERSION
        self.subprotocol = subprotocol
        self.up_rules = rules_for(OcppVersion(subprotocol))  # the CSMS link's version
        password = hub.config.passwords.get(self.station_id, "")
        self.link = UpstreamLink(
            hub.link_settings(self.station_id, subprotocol, password),
            self._on_csms_frame,
            self._on_up,
            self._on_down,
        )
        self.calls = UpstreamCalls(self.station_id, self.link, hub.config.call_timeout_s)
        self.tx = TxMapper(hub.outbox, self.station_id, self.up_rules)  # verbatim 1.6: outage ids
        self._inbox: asyncio.Queue[Job] = asyncio.Queue()
        # The station's last BootNotification as sent upstream, repeated on every new link (also
        # for a station that reconnects to the gateway without booting: the CSMS link is new).
        known = hub.outbox.link(self.station_id)
        self._boot = known.boot if known is not None and known.subprotocol == subprotocol else None
        self._boot_status: str | None = None  # the CSMS's answer to it on this link (None: not sent yet)
        self._boot_retry: asyncio.TimerHandle | None = None
        self._first_wait = True  # the first calls wait (bounded) for the first connection attempt
        self._csms_max: dict[int, dict[str, Any]] = {}  # CSMS station maximums, as the CSMS sent them
        self._installed_max: dict[int, dict[str, Any]] = {}  # ... and as installed (capped)
        self._notices = StationCapNotices(hub.config.limit_change_significance)
        self.notifies = self.up_rules.NOTIFIES_LIMIT  # K14 on this station's own link (2.0.1)
        self._notice: tuple[str, dict[str, Any]] | None = None  # the latest cap notice
        self._notice_sent = True
        self._grace: asyncio.TimerHandle | None = None
        self._worker: asyncio.Task[None] | None = None
        self._after: asyncio.Task[None] | None = None  # to finish before the first job (a drain stopping)

    # -- lifecycle ---------------------------------------------------------------

    def start(self, after: asyncio.Task[None] | None = None) -> None:
        self._after = after
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"relay {self.station_id}")
        self.link.start()
        self._arm_grace()

    async def stop(self) -> None:
        for timer in (self._grace, self._boot_retry):
            if timer is not None:
                timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait({self._worker}, timeout=STOP_TIMEOUT_S)
        await self.link.stop()

    def station_call(self, call: Call, raw: str) -> None:
        """A CALL from the station (the session's ``StationCalled``): handled in order by the worker."""
        self._inbox.put_nowait(StationJob(call, raw))

    def station_answered(self, call: Call, outcome: CallOutcome) -> None:
        """What became of a call sent with ``send_relayed`` (the session's ``RelayedAnswered``)."""
        raise NotImplementedError

    def _on_up(self) -> None:
        self.hub.metrics.links_up.inc()
        self._boot_status = None
        if self._notice is not None and self._notice[0] != "ClearedChargingLimit":
            self._notice_sent = False  # a new connection hears the cap in force again
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._inbox.put_nowait(CATCH_UP)  # boot, then the outbox, before anything new

    def _on_down(self) -> None:
        self.hub.metrics.links_up.dec()
        self.calls.fail_all()
        self._arm_grace()

    def _arm_grace(self) -> None:
        if self.hub.config.on_outage != "close_station" or self._grace is not None or self.session.closed:
            return
        self._grace = asyncio.get_running_loop().call_later(self.hub.config.close_grace_s, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        if not self.link.up and not self.session.closed:
            log.warning(
                "%s: CSMS away for %gs: closing the station", self.station_id, self.hub.config.close_grace_s
            )
            asyncio.get_running_loop().create_task(self.end.close(1001, "CSMS unavailable"))

    # -- the worker --------------------------------------------------------------

    async def _work(self) -> None:
        if self._after is not None:  # bounded: a drain's stop is bounded twice over
            await asyncio.wait({self._after}, timeout=2 * STOP_TIMEOUT_S)
            self._after = None
        while True:
            job = await self._inbox.get()
            try:
                if type(job) is StationJob:
                    await self._handle(job.call, job.raw)
                elif type(job) is PushJob:
                    await self._push(job.calls)
                elif job == CATCH_UP:
                    await self._catch_up()
                elif job == NOTICE:
                    await self._send_notice()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: relaying failed", self.station_id)

    async def _handle(self, call: Call, raw: str) -> None:
        raise NotImplementedError

    async def _answer_locally(self, call: Call) -> dict[str, Any] | None:
        response = self.session.answer_locally(call, self.hub.runtime.clock())
        await self.end.flush()
        return response

    async def _upstream_ready(self, action: str) -> bool:
        """Whether the station's ``action`` may go to the CSMS now (after the catch-up it is owed)."""
        link = self.link
        if self._first_wait and not link.up:
            await link.wait_up(self.hub.config.connect_wait_s)
        self._first_wait = False
        if not link.up:
            return False
        if action == BOOT:
            return True  # a station's boot goes even through a closed gate: it is how the gate opens
        if self.blocked:
            return False
        if self.hub.outbox.has_pending(self.station_id) or self._boot_owed():
            return await self._catch_up()
        return True

    def keep(self, action: str, raw: str, local_tx: int | None = None) -> None:
        """Keep one frame for the CSMS in the outbox (bounded: see ``outbox.py``)."""
        outbox = self.hub.outbox
        dropped = outbox.append(self.station_id, action, raw, local_tx, self.hub.runtime.clock())
        self.hub.metrics.outbox_appended.inc()
        if dropped:
            self.hub.metrics.outbox_dropped.inc(dropped)
        self.hub.metrics.outbox_depth.set(outbox.depth)

    # -- the boot gate and the catch-up ------------------------------------------

    @property
    def blocked(self) -> bool:
        """The CSMS answered the boot on this link Pending or Rejected: only a boot may go."""
        return self._boot_status in NOT_ACCEPTED

    def _boot_owed(self) -> bool:
        return self._boot is not None and self._boot_status is None

    def booting(self, frame: str) -> None:
        """The station's BootNotification, as it goes upstream: kept, to repeat after a reconnect."""
        self._boot, self._boot_status = frame, None
        self.hub.outbox.save_link(self.station_id, self.subprotocol, frame)

    def boot_answered(self, answer: CallResult | CallError, repeated: bool) -> None:
        """The CSMS's answer to a boot: open or close the gate (a repeated one of ours is retried)."""
        status = answer.payload.get("status") if type(answer) is CallResult else None
        self._boot_status = status if status in NOT_ACCEPTED else "Accepted"
        if status in NOT_ACCEPTED:
            assert type(answer) is CallResult
            log.warning("%s: the CSMS answered the BootNotification %s", self.station_id, status)
            if repeated:
                config = self.hub.config
                interval = answer.payload.get("interval")
                delay_s = interval if type(interval) is int and interval > 0 else config.reconnect_max_s
                self._boot_retry = asyncio.get_running_loop().call_later(
                    max(config.reconnect_min_s, delay_s), self._retry_boot
                )
        elif not repeated and (self.hub.outbox.has_pending(self.station_id) or not self._notice_sent):
            self._inbox.put_nowait(CATCH_UP)  # the gate is open: what waited goes first

    def _retry_boot(self) -> None:
        self._boot_retry = None
        if self.blocked:
            self._boot_status = None
            self._inbox.put_nowait(CATCH_UP)

    async def _catch_up(self) -> bool:
        """After (re)connecting: the boot again, the outbox in order, the cap notice. True when done."""
        if not self.link.up:
            return False
        if self._boot_owed():
            assert self._boot is not None
            unique_id, text = repeated(self._boot)
            reply = await self.calls.exchange(unique_id, text)
            if reply is None:
                return False
            self.boot_answered(reply[0], repeated=True)
        if self.blocked:
            return False
        renumber = self.up_rules.IDS_UNIQUE_ACROSS_CONNECTIONS
        done = await replay(
            self.hub.outbox, self.station_id, self.calls.exchange, self.tx, self._replayed, renumber
        )
        if done:
            await self._send_notice()
        return done and self.link.up

    def _replayed(self) -> None:
        self.hub.metrics.outbox_replayed.inc()
        self.hub.metrics.outbox_depth.set(self.hub.outbox.depth)

    async def _push(self, calls: tuple[tuple[str, dict[str, Any]], ...]) -> None:
        """Gateway calls for the CSMS in order (not kept: lost with the link)."""
        for action, payload in calls:
            if not self.link.up or self.blocked:
                log.warning("%s: %s not sent: the CSMS is not available", self.station_id, action)
                return
            reply = await self.call_upstream(action, payload)
            if reply is not None and type(reply[0]) is CallError:
                log.warning("%s: the CSMS refused %s: %s", self.station_id, action, reply[0].error_code)

    async def call_upstream(self, action: str, payload: dict[str, Any]) -> Reply | None:
        """One gateway call to the CSMS (validated: our own payload), with a gateway message id."""
        schemas.validate(self.up_rules.VERSION, action, payload, request=True)
        unique_id = gateway_message_id()
        return await self.calls.exchange(unique_id, codec.encode_call(unique_id, action, payload).decode())

    # -- K14: the station's DSO cap ----------------------------------------------

    def cap_changed(self, cap_w: float | None) -> None:
        """The station's DSO-imposed cap is now ``cap_w`` (None: the DSO lifted its limit)."""
        if not self.notifies or not self._notices.update(cap_w):
            return
        self._notice = so_limit_call(cap_w, self.hub.runtime.clock())
        self._notice_sent = False
        self._inbox.put_nowait(NOTICE)

    async def _send_notice(self) -> None:
        notice = self._notice
        if notice is None or self._notice_sent or not self.link.up or self.blocked:
            return  # the catch-up after the next (re)connection or accepted boot sends it
        reply = await self.call_upstream(*notice)
        if reply is not None and notice is self._notice:
            self._notice_sent = True
            log.info("%s: told the CSMS %s", self.station_id, notice[0])

    # -- CSMS -> station ---------------------------------------------------------

    async def _on_csms_frame(self, text: str) -> None:
        frame = codec.parse_frame(text)
        if type(frame) is Call:
            self._csms_call(frame, text)
        elif type(frame) is CallResult or type(frame) is CallError:
            self.calls.replied(frame, text)
        else:
            assert isinstance(frame, FrameError)
            self.error_upstream(frame.unique_id, frame.kind, frame.description)

    def _csms_call(self, call: Call, text: str) -> None:
        raise NotImplementedError

    def error_upstream(self, unique_id: str, kind: ErrorKind, description: str) -> None:
        self.link.send(codec.encode_error(unique_id, self.up_rules.ERROR_CODES[kind], description))

    def remember_max(self, profile_id: int, original: dict[str, Any], installed: dict[str, Any]) -> None:
        """A CSMS station maximum (station version): ``installed`` is ``original`` capped."""
        self._csms_max[profile_id] = original
        self._installed_max[profile_id] = installed

    def forget_max(self, clear: dict[str, Any]) -> None:
        """A ClearChargingProfile (station version) went to the station."""
        profile_id, purpose = self.rules.cleared_profile(clear)
        if profile_id is not None:
            self._csms_max.pop(profile_id, None)
            self._installed_max.pop(profile_id, None)
        elif purpose in (None, self.rules.MAX_PURPOSE):
            self._csms_max.clear()
            self._installed_max.clear()

    def recap(self, limit_w: float) -> None:
        """The station's allocation moved: cap the CSMS's station maximums again."""
        caps = self.session.caps
        for profile_id, original in self._csms_max.items():
            payload = capped_max_profile(self.rules, original, limit_w, caps) or original
            if payload != self._installed_max.get(profile_id):
                self._installed_max[profile_id] = payload
                self.session.call("SetChargingProfile", payload)  # a gateway call: its answer stays here
                self.end.wake()
