"""The Local Controller relay: each station's frames to and from the operator's CSMS.

One ``StationRelay`` per station connection, with its own ``UpstreamLink`` to
``{csms_url}/{station_id}`` in the station's OCPP version.

Station → CSMS: the station's CALLs are taken in order by one worker per station (the
reader never waits for the CSMS). Each is validated, then forwarded as the exact text
the station sent, and the CSMS's reply goes back to the station as the exact text the
CSMS sent; meter readings still feed the core. When the link is down (or the CSMS does
not answer in time) the call is answered locally, as in standalone mode, and what the
CSMS must see (transactions, meter values, status) goes into the durable outbox. When
the link comes back the station's BootNotification is repeated on the new connection,
then the outbox is replayed in order before anything new; 1.6 transaction ids the gateway
gave the station are mapped onto the ones the CSMS assigns to the replayed StartTransaction.

CSMS → station: CALLs are validated, judged by ``csms_guard`` (DSO cap, reserved profile
ids), then queued in the station's session with the CSMS's own message id, so they share
the one-call-in-flight rule with the gateway's calls; the station's reply goes back to
the CSMS verbatim. Replies to the gateway's own calls (ids ``ocpp809-…``) are consumed by
the session and never reach the CSMS.

The relay talks to the station through its session's public methods (``StationEnd``:
the session, plus the shell's ``wake``, ``flush`` and ``close``); it never imports the
shell, which hands it the session's relay events (``station_call``, ``station_answered``).

``GatewayIdentity`` is the gateway's own connection to the CSMS (a charging station
without EVSEs): BootNotification, then NotifyChargingLimit / ClearedChargingLimit (or a
1.6 DataTransfer) with the latest DSO limit, resent after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

from prometheus_client import Counter, Gauge

from gateway.config import OcppConfig, UpstreamConfig
from gateway.decisions import ApplyStationLimit, Decision, LimitChanged
from gateway.model import LimitSource, OcppVersion
from gateway.profile_cap import dso_limit_in_force
from gateway.runtime import CoreRuntime
from ocpp_side import codec, schemas
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, FrameError, OcppViolation
from ocpp_side.csms_guard import capped_max_profile, judge
from ocpp_side.limit_notice import boot_notification, limit_notice
from ocpp_side.outbox import Outbox
from ocpp_side.session import CallOutcome, StationSession
from ocpp_side.upstream import STOP_TIMEOUT_S, LinkSettings, UpstreamLink, client_ssl_context
from ocpp_side.versions import rules_for

log = logging.getLogger(__name__)

Reply = tuple[CallResult | CallError, str]


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
        self.guarded = Counter(
            "ocpp809_upstream_csms_calls_guarded",
            "CSMS calls changed or refused to keep the DSO cap",
            ["action", "verdict"],
            registry=r,
        )


class RelayHub:
    """Owns the outbox, the gateway identity and one relay per connected station."""

    def __init__(self, ocpp: OcppConfig, config: UpstreamConfig, runtime: CoreRuntime) -> None:
        self.ocpp = ocpp
        self.config = config
        self.runtime = runtime
        self.capacity_w = math.inf  # the site's grid capacity: a limit at or above it is "lifted"
        self.reserved_ids = frozenset({ocpp.live_profile_id, ocpp.fallback_profile_id})
        self.metrics = RelayMetrics(runtime)
        self.outbox = Outbox(config.outbox_path)
        self.ssl_context = client_ssl_context(config) if config.csms_url.startswith("wss://") else None
        self.relays: dict[str, StationRelay] = {}
        self.identity: GatewayIdentity | None = None
        if config.gateway_id and (
            rules_for(OcppVersion(config.gateway_protocol)).NOTIFIES_LIMIT or config.notify_v16 != "none"
        ):
            self.identity = GatewayIdentity(self)
        runtime.add_listener(self._on_decisions)

    def link_settings(self, identity: str, subprotocol: str, password: str) -> LinkSettings:
        c = self.config
        return LinkSettings(
            f"{c.csms_url.rstrip('/')}/{quote(identity, safe='')}",
            subprotocol,
            password,
            identity,
            self.ssl_context,
            c.reconnect_min_s,
            c.reconnect_max_s,
            self.ocpp.handshake_timeout_s,
            self.ocpp.max_message_bytes,
        )

    async def start(self) -> None:
        if self.identity is not None:
            view = self.runtime.view()
            self.identity.limit_changed(view.source, view.limit_w)
            self.identity.start()
        log.info("relaying stations to the CSMS at %s", self.config.csms_url)

    async def stop(self) -> None:
        for relay in list(self.relays.values()):
            await relay.stop()
        if self.identity is not None:
            await self.identity.stop()
        self.outbox.close()

    def attach(self, end: StationEnd) -> StationRelay:
        """A relay for a new station connection; the shell hands it the session's relay events."""
        station_id = end.session.station_id
        old = self.relays.get(station_id)
        if old is not None:
            old.session.relayed = False  # what the replaced connection still reads is answered there
            asyncio.get_running_loop().create_task(old.stop())
        relay = StationRelay(self, end)
        self.relays[station_id] = relay
        end.session.relayed = True
        relay.start()
        return relay

    async def detach(self, relay: StationRelay) -> None:
        """The station connection is gone (a replaced one's relay was stopped by ``attach``)."""
        if self.relays.get(relay.station_id) is relay:
            del self.relays[relay.station_id]
            await relay.stop()

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if type(decision) is ApplyStationLimit:
                relay = self.relays.get(decision.station_id)
                if relay is not None:
                    relay.recap(decision.limit_w)
            elif type(decision) is LimitChanged and self.identity is not None:
                self.identity.limit_changed(decision.source, decision.limit_w)


class StationRelay:
    def __init__(self, hub: RelayHub, end: StationEnd) -> None:
        self.hub = hub
        self.end = end
        self.session = end.session
        self.station_id = self.session.station_id
        self.rules = self.session.rules
        self.version = self.rules.VERSION
        password = hub.config.passwords.get(self.station_id, "")
        self.link = UpstreamLink(
            hub.link_settings(self.station_id, self.version.value, password),
            self._on_csms_frame,
            self._on_up,
            self._on_down,
        )
        self._inbox: asyncio.Queue[tuple[Call, str] | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Reply | None]] = {}
        self._boot_raw: str | None = None  # the station's last BootNotification, repeated after a reconnect
        self._boot_sent = False  # ... already seen by the CSMS on the current link
        self._first_wait = True  # the first calls wait (bounded) for the first connection attempt
        self._tx_map = hub.outbox.tx_map(self.station_id)  # local 1.6 transaction id -> the CSMS's
        self._csms_max: dict[int, dict[str, Any]] = {}  # CSMS station maximums, as the CSMS sent them
        self._installed_max: dict[int, dict[str, Any]] = {}  # ... and as installed (capped)
        self._grace: asyncio.TimerHandle | None = None
        self._worker: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"relay {self.station_id}")
        self.link.start()
        self._arm_grace()

    async def stop(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait({self._worker}, timeout=STOP_TIMEOUT_S)
        await self.link.stop()

    def station_call(self, call: Call, raw: str) -> None:
        """A CALL from the station (the session's ``StationCalled``): handled in order by the worker."""
        self._inbox.put_nowait((call, raw))

    def station_answered(self, call: Call, outcome: CallOutcome) -> None:
        """What became of a CSMS call (the session's ``RelayedAnswered``): its answer goes back."""
        if outcome.raw:
            self.link.send(outcome.raw)  # the station's answer, verbatim
        else:
            self._error_upstream(
                call.unique_id, ErrorKind.GENERIC, outcome.detail or "no answer from the station"
            )

    def _on_up(self) -> None:
        self.hub.metrics.links_up.inc()
        self._boot_sent = False
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._inbox.put_nowait(None)  # catch up: boot, then the outbox, before anything new

    def _on_down(self) -> None:
        self.hub.metrics.links_up.dec()
        for future in self._pending.values():
            if not future.done():
                future.set_result(None)
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

    # -- station -> CSMS ---------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                if item is None:
                    await self._catch_up()
                else:
                    await self._handle(*item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: relaying failed", self.station_id)

    async def _answer_locally(self, call: Call) -> dict[str, Any] | None:
        response = self.session.answer_locally(call, self.hub.runtime.clock())
        await self.end.flush()
        return response

    async def _handle(self, call: Call, raw: str) -> None:
        link = self.link
        if self.session.closed:
            return
        if call.action in schemas.known_actions(self.version):
            try:
                schemas.validate(self.version, call.action, call.payload, request=True)
            except OcppViolation:
                await self._answer_locally(call)  # the same CALLERROR as standalone; nothing forwarded
                return
        if call.action == "BootNotification":
            self._boot_raw, self._boot_sent = raw, False
        if self._first_wait and not link.up:
            await link.wait_up(self.hub.config.connect_wait_s)
        self._first_wait = False
        if link.up and (self.hub.outbox.has_pending(self.station_id) or self._boot_owed(call.action)):
            await self._catch_up()
        if link.up:
            reply = await self._exchange(call.unique_id, self._mapped(call.action, raw))
            if reply is not None:
                frame, reply_raw = reply
                self.session.forward_reply(reply_raw)
                await self.end.flush()
                self.hub.metrics.relayed.labels("station_to_csms").inc()
                if call.action == "BootNotification":
                    self._boot_sent = True
                if type(frame) is CallResult:
                    await self._after_relayed(call, frame.payload)
                return
        self.hub.metrics.local.inc()
        response = await self._answer_locally(call)
        if response is not None and call.action in self.rules.DURABLE:
            local_tx = response.get("transactionId") if call.action == "StartTransaction" else None
            self.hub.outbox.append(self.station_id, call.action, raw, local_tx)
            self.hub.metrics.outbox_appended.inc()

    def _boot_owed(self, action: str) -> bool:
        return action != "BootNotification" and self._boot_raw is not None and not self._boot_sent

    async def _after_relayed(self, call: Call, payload: dict[str, Any]) -> None:
        try:
            schemas.validate(self.version, call.action, payload, request=False)
        except OcppViolation as exc:  # forwarded anyway: the CSMS's answer is its own business
            log.warning("%s: the CSMS's %s answer is invalid: %s", self.station_id, call.action, exc)
            return
        self.session.after_relayed(call, payload, self.hub.runtime.clock())
        await self.end.flush()

    async def _catch_up(self) -> None:
        """After (re)connecting: the station's boot again, then the outbox in order."""
        if not self.link.up:
            return
        if self._boot_raw is not None and not self._boot_sent:
            boot = codec.parse_frame(self._boot_raw)
            assert type(boot) is Call
            if await self._exchange(boot.unique_id, self._boot_raw) is None:
                return
            self._boot_sent = True
        outbox = self.hub.outbox
        while self.link.up:
            rows = outbox.pending(self.station_id)
            if not rows:
                return
            for row in rows:
                frame = codec.parse_frame(row.raw)
                assert type(frame) is Call
                reply = await self._exchange(frame.unique_id, self._mapped(row.action, row.raw))
                if reply is None:
                    return  # down again: the row stays for the next time
                answer = reply[0]
                if row.local_tx is not None and type(answer) is CallResult:
                    csms_tx = answer.payload.get("transactionId")
                    if type(csms_tx) is int:
                        outbox.map_tx(self.station_id, row.local_tx, csms_tx)
                        self._tx_map[row.local_tx] = csms_tx
                elif type(answer) is CallError:
                    log.warning(
                        "%s: CSMS refused replayed %s: %s", self.station_id, row.action, answer.error_code
                    )
                outbox.delete(row.seq)
                self.hub.metrics.outbox_replayed.inc()

    def _mapped(self, action: str, raw: str) -> str:
        """``raw`` unchanged, unless it names a 1.6 transaction the CSMS knows by another id."""
        if not self._tx_map or action not in self.rules.TX_REFERENCES:
            return raw
        frame = codec.parse_frame(raw)
        assert type(frame) is Call
        csms_tx = self._tx_map.get(frame.payload.get("transactionId"))  # type: ignore[arg-type]
        if csms_tx is None:
            return raw
        payload = {**frame.payload, "transactionId": csms_tx}
        return codec.encode_call(frame.unique_id, action, payload).decode()

    async def _exchange(self, unique_id: str, text: str) -> Reply | None:
        """Send one CALL upstream and wait for its reply; None if the link is down or too slow."""
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._pending[unique_id] = future
        try:
            if not self.link.send(text):
                return None
            async with asyncio.timeout(
                self.hub.config.call_timeout_s
            ):  # not wait_for: on 3.11 it can lose a racing cancel
                return await future
        except TimeoutError:
            log.warning("%s: no CSMS answer in %gs", self.station_id, self.hub.config.call_timeout_s)
            return None
        finally:
            if self._pending.get(unique_id) is future:
                del self._pending[unique_id]

    # -- CSMS -> station ---------------------------------------------------------

    async def _on_csms_frame(self, text: str) -> None:
        frame = codec.parse_frame(text)
        if type(frame) is Call:
            self._csms_call(frame, text)
        elif type(frame) is CallResult or type(frame) is CallError:
            future = self._pending.get(frame.unique_id)
            if future is not None and not future.done():
                future.set_result((frame, text))
            else:
                log.info(
                    "%s: CSMS reply to no pending call (id %s) dropped", self.station_id, frame.unique_id
                )
        else:
            assert isinstance(frame, FrameError)
            self._error_upstream(frame.unique_id, frame.kind, frame.description)

    def _error_upstream(self, unique_id: str, kind: ErrorKind, description: str) -> None:
        self.link.send(codec.encode_error(unique_id, self.rules.ERROR_CODES[kind], description))

    def _csms_call(self, call: Call, text: str) -> None:
        session, version = self.session, self.version
        if call.action in schemas.known_actions(version):
            try:
                schemas.validate(version, call.action, call.payload, request=True)
            except OcppViolation as exc:
                self._error_upstream(call.unique_id, exc.kind, exc.description)
                return
        if session.closed:
            self._error_upstream(call.unique_id, ErrorKind.GENERIC, "the station is not connected")
            return
        cap_w = session.allocation_w
        verdict = judge(self.rules, call.action, call.payload, self.hub.reserved_ids, cap_w, session.caps)
        if verdict.answer is not None:
            log.info("%s: CSMS %s on a reserved profile refused", self.station_id, call.action)
            self.hub.metrics.guarded.labels(call.action, "refused").inc()
            self.link.send(codec.encode_result(call.unique_id, verdict.answer))
            return
        payload = call.payload
        raw_frame: bytes | None = text.encode()
        if verdict.payload is not None:
            log.info("%s: CSMS station maximum capped at the DSO allocation %.0f W", self.station_id, cap_w)
            self.hub.metrics.guarded.labels(call.action, "capped").inc()
            payload, raw_frame = verdict.payload, None  # re-encoded (and validated) with the CSMS's id
        if call.action in self.rules.CSMS_TX_REFERENCES:
            local = {csms: local for local, csms in self._tx_map.items()}.get(payload["transactionId"])
            if local is not None:
                payload, raw_frame = {**payload, "transactionId": local}, None
        if verdict.max_profile_id is not None:
            self._csms_max[verdict.max_profile_id] = call.payload
            self._installed_max[verdict.max_profile_id] = payload
        elif call.action == "ClearChargingProfile":
            self._forget_max(call.payload)
        self.hub.metrics.relayed.labels("csms_to_station").inc()
        # After a clear, the session installs both DSO profiles again (the slot goes first).
        session.send_relayed(call, payload, raw_frame, reapply=verdict.reapply)
        self.end.wake()

    def _forget_max(self, clear: dict[str, Any]) -> None:
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


class GatewayIdentity:
    """The gateway's own connection to the CSMS, telling it the DSO limit (latest only)."""

    def __init__(self, hub: RelayHub) -> None:
        c = hub.config
        self.hub = hub
        self.rules = rules_for(OcppVersion(c.gateway_protocol))
        self.version = self.rules.VERSION
        self.link = UpstreamLink(
            hub.link_settings(c.gateway_id, c.gateway_protocol, c.gateway_password),
            self._on_frame,
            self._on_up,
            self._on_down,
        )
        self._latest: tuple[str, dict[str, Any]] | None = None
        self._sent: tuple[str, dict[str, Any]] | None = None
        self._in_force = False
        self._booted = False
        self._wake = asyncio.Event()
        self._pending: dict[str, asyncio.Future[CallResult | CallError | None]] = {}
        self._ids = itertools.count(1)
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="gateway identity")
        self.link.start()

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.link.stop()

    def limit_changed(self, source: LimitSource, limit_w: float) -> None:
        in_force = dso_limit_in_force(source, limit_w, self.hub.capacity_w)
        if not in_force and not self._in_force:
            return  # nothing was reported, nothing to clear
        self._in_force = in_force
        self._latest = limit_notice(self.rules, in_force, limit_w, self.hub.runtime.clock())
        self._wake.set()

    def _on_up(self) -> None:
        self._booted = False
        self._sent = None  # a new connection hears the state again
        self._wake.set()

    def _on_down(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_result(None)

    async def _on_frame(self, text: str) -> None:
        frame = codec.parse_frame(text)
        if type(frame) is CallResult or type(frame) is CallError:
            future = self._pending.get(frame.unique_id)
            if future is not None and not future.done():
                future.set_result(frame)
        elif type(frame) is Call:  # a controller without EVSEs serves no CSMS requests
            code = self.rules.ERROR_CODES[ErrorKind.NOT_SUPPORTED]
            self.link.send(codec.encode_error(frame.unique_id, code, f"{frame.action} is not supported here"))

    async def _call(self, action: str, payload: dict[str, Any]) -> CallResult | CallError | None:
        schemas.validate(self.version, action, payload, request=True)
        unique_id = f"ocpp809-lc-{next(self._ids)}"
        future: asyncio.Future[CallResult | CallError | None] = asyncio.get_running_loop().create_future()
        self._pending[unique_id] = future
        try:
            if not self.link.send(codec.encode_call(unique_id, action, payload)):
                return None
            async with asyncio.timeout(
                self.hub.config.call_timeout_s
            ):  # not wait_for: on 3.11 it can lose a racing cancel
                return await future
        except TimeoutError:
            return None
        finally:
            self._pending.pop(unique_id, None)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if not self.link.up:
                    continue  # _on_up wakes us
                if not self._booted:
                    reply = await self._call("BootNotification", boot_notification(self.rules))
                    if type(reply) is not CallResult:
                        await asyncio.sleep(self.hub.config.reconnect_min_s)
                        self._wake.set()  # try again (if the link is down, _on_up will)
                        continue
                    self._booted = True
                latest = self._latest
                if latest is None or latest is self._sent:
                    continue
                reply = await self._call(*latest)
                if reply is not None:
                    self._sent = latest
                if self._latest is not self._sent:
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway identity: notifying the CSMS failed")
                await asyncio.sleep(self.hub.config.reconnect_min_s)
