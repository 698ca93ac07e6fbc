"""The Local Controller relay: each station's frames to and from the operator's CSMS.

One relay per station connection, with its own upstream link to
``{csms_url}/{station_id}`` (``relay_link.UpstreamRelay``: the worker, the catch-up,
the boot gate, CSMS maximums and K14 notices). With ``csms_protocol = "station"`` every
station is relayed verbatim in its own version (``StationRelay``, here); with
``"ocpp2.0.1"`` a 1.6 station is translated (``translated_relay.TranslatedRelay``) and a
2.0.1 station still relayed verbatim.

Station → CSMS (verbatim): the station's CALLs are taken in order by one worker per
station (the reader never waits for the CSMS). Each is validated, then forwarded as the
exact text the station sent, and the CSMS's reply goes back to the station as the exact
text the CSMS sent; meter readings still feed the core. When the link is down (or the
CSMS does not answer in time, or has not accepted the station's boot) the call is
answered locally, as in standalone mode, and what the CSMS must see (transactions, meter
values, status) goes into the durable, bounded outbox. When the link comes back the
station's BootNotification is repeated on the new connection, then the outbox is
replayed in order before anything new; 1.6 transaction ids the gateway gave the station
are mapped onto the ones the CSMS assigns to the replayed StartTransaction. A station
that is gone by then has its outbox replayed all the same (``outbox_drain.py``).

CSMS → station (verbatim): CALLs are validated, judged by ``csms_guard`` (DSO cap,
reserved profile ids), then queued in the station's session with the CSMS's own message
id, so they share the one-call-in-flight rule with the gateway's calls; the station's
reply goes back to the CSMS verbatim. The CSMS's 1.6 transaction ids are mapped back to
the station's (RemoteStopTransaction, and a TxProfile's ``transactionId`` in
SetChargingProfile; 1.6 GetCompositeSchedule names no transaction). Replies to the
gateway's own calls (ids ``ocpp809-…``) are consumed by the session and never reach the CSMS.

The relay talks to the station through its session's public methods (``StationEnd``:
the session, plus the shell's ``wake``, ``flush`` and ``close``); it never imports the
shell, which hands it the session's relay events (``station_call``, ``station_answered``).

``GatewayIdentity`` is the gateway's own connection to the CSMS (a charging station
without EVSEs): BootNotification, then NotifyChargingLimit / ClearedChargingLimit (or a
1.6 DataTransfer) with the latest DSO limit, resent after every reconnect. It is
optional: with a 2.0.1 CSMS every station's own link hears its own cap (K14).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from gateway.core.decisions import ApplyStationLimit, Decision, LimitChanged
from gateway.core.model import LimitSource, OcppVersion
from gateway.core.profile_cap import DSO_SOURCES, dso_limit_in_force
from gateway.runtime import CoreRuntime
from ocpp_side import codec, schemas
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, OcppViolation
from ocpp_side.csms_guard import judge
from ocpp_side.limit_notice import boot_notification, limit_notice
from ocpp_side.outbox import Outbox
from ocpp_side.outbox_drain import OutboxDrain
from ocpp_side.relay_link import BOOT, RelayMetrics, StationEnd, UpstreamRelay
from ocpp_side.session import CallOutcome
from ocpp_side.settings import OcppConfig, UpstreamConfig
from ocpp_side.translated_relay import TranslatedRelay, Translators
from ocpp_side.translation.api import TranslationState
from ocpp_side.upstream import LinkSettings, UpstreamLink, client_ssl_context
from ocpp_side.versions import rules_for

log = logging.getLogger(__name__)

__all__ = ["GatewayIdentity", "RelayHub", "StationEnd", "StationRelay"]


class RelayHub:
    """Owns the outbox, the gateway identity, one relay per connected station, and the
    drains of away stations' outboxes."""

    def __init__(self, ocpp: OcppConfig, config: UpstreamConfig, runtime: CoreRuntime) -> None:
        self.ocpp = ocpp
        self.config = config
        self.runtime = runtime
        self.capacity_w = math.inf  # the site's grid capacity: a limit at or above it is "lifted"
        self.reserved_ids = frozenset({ocpp.live_profile_id, ocpp.fallback_profile_id})
        self.metrics = RelayMetrics(runtime)
        self.outbox = Outbox(config.outbox_path)
        self.ssl_context = client_ssl_context(config) if config.csms_url.startswith("wss://") else None
        self.relays: dict[str, UpstreamRelay] = {}
        self.drains: dict[str, OutboxDrain] = {}
        # "station": every station in its own version; else the CSMS's version, others translated.
        self.csms_version = None if config.csms_protocol == "station" else OcppVersion(config.csms_protocol)
        self.translators: Translators | None = None  # loaded with the first translated station
        if self.csms_version is not None:
            self.metrics.translating()
        self.states: dict[str, TranslationState] = {}  # per translated station, saved in the outbox file
        self.site_in_force = False  # a DSO limit holds the site below its capacity
        self.identity: GatewayIdentity | None = None
        if config.gateway_id and (
            rules_for(OcppVersion(config.gateway_protocol)).NOTIFIES_LIMIT or config.notify_v16 != "none"
        ):
            self.identity = GatewayIdentity(self)
        runtime.add_listener(self._on_decisions)

    def translation_state(self, station_id: str) -> TranslationState:
        """The station's translation state, shared by its successive connections."""
        state = self.states.get(station_id)
        if state is None:
            saved = self.outbox.load_state(station_id)
            state = TranslationState() if saved is None else TranslationState.from_json(saved)
            self.states[station_id] = state
        return state

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
        view = self.runtime.view()
        self.site_in_force = dso_limit_in_force(view.source, view.limit_w, self.capacity_w)
        if self.identity is not None:
            self.identity.limit_changed(view.source, view.limit_w)
            self.identity.start()
        self.outbox.expire_all(self.runtime.clock())
        self.metrics.outbox_depth.set(self.outbox.depth)
        for station_id in self.outbox.stations_pending():  # kept before a restart
            self._drain(station_id)
        log.info(
            "relaying stations to the CSMS at %s (%s)",
            self.config.csms_url,
            "each station in its own version"
            if self.csms_version is None
            else f"every station as {self.csms_version.value}, others translated",
        )

    async def stop(self) -> None:
        for relay in list(self.relays.values()):
            await relay.stop()
        for drain in list(self.drains.values()):
            await drain.stop()
        if self.identity is not None:
            await self.identity.stop()
        self.outbox.close()

    def attach(self, end: StationEnd) -> UpstreamRelay:
        """A relay for a new station connection; the shell hands it the session's relay events."""
        station_id = end.session.station_id
        old = self.relays.get(station_id)
        if old is not None:
            old.session.relayed = False  # what the replaced connection still reads is answered there
            asyncio.get_running_loop().create_task(old.stop())
        relay: UpstreamRelay
        if self.csms_version is not None and end.session.version is not self.csms_version:
            if self.translators is None:
                self.translators = Translators.load()
            relay = TranslatedRelay(self, end, self.csms_version, self.translators)
        else:
            relay = StationRelay(self, end)
        self.relays[station_id] = relay
        end.session.relayed = True
        drain = self.drains.pop(station_id, None)  # stopped before the relay sends anything
        relay.start(after=asyncio.get_running_loop().create_task(drain.stop()) if drain is not None else None)
        return relay

    async def detach(self, relay: UpstreamRelay) -> None:
        """The station connection is gone (a replaced one's relay was stopped by ``attach``)."""
        if self.relays.get(relay.station_id) is relay:
            del self.relays[relay.station_id]
            await relay.stop()
            if self.outbox.has_pending(relay.station_id):
                self._drain(relay.station_id)

    def _drain(self, station_id: str) -> None:
        station_link = self.outbox.link(station_id)
        if station_link is None or station_id in self.drains or station_id in self.relays:
            return
        drain = self.drains[station_id] = OutboxDrain(self, station_id, station_link, self._drained)
        drain.start()

    def _drained(self, drain: OutboxDrain) -> None:
        """``drain`` has finished (or failed): forget it."""
        if self.drains.get(drain.station_id) is drain:
            del self.drains[drain.station_id]

    def _on_decisions(self, decisions: Sequence[Decision]) -> None:
        # A station's DSO cap is its allocation from a DSO limit in force; the core sends the new
        # allocations after the LimitChanged (a station the DSO limit leaves unconstrained gets none).
        for decision in decisions:
            if type(decision) is LimitChanged:
                if self._site_limit(decision.source, decision.limit_w) and not self.site_in_force:
                    for lifted in self.relays.values():
                        lifted.cap_changed(None)
            elif type(decision) is ApplyStationLimit:
                relay = self.relays.get(decision.station_id)
                if relay is not None:
                    relay.recap(decision.limit_w)
                    dso = self.site_in_force and decision.source in DSO_SOURCES
                    relay.cap_changed(decision.limit_w if dso else None)

    def _site_limit(self, source: LimitSource, limit_w: float) -> bool:
        """The site limit moved; True when it became (or stopped being) a DSO restriction."""
        if self.identity is not None:
            self.identity.limit_changed(source, limit_w)
        in_force = dso_limit_in_force(source, limit_w, self.capacity_w)
        moved, self.site_in_force = in_force != self.site_in_force, in_force
        return moved


class StationRelay(UpstreamRelay):
    """A station relayed verbatim, in its own OCPP version (see the module docstring)."""

    def __init__(self, hub: RelayHub, end: StationEnd) -> None:
        super().__init__(hub, end, end.session.version.value)

    def station_answered(self, call: Call, outcome: CallOutcome) -> None:
        """What became of a CSMS call (the session's ``RelayedAnswered``): its answer goes back."""
        if outcome.raw:
            self.link.send(outcome.raw)  # the station's answer, verbatim
        else:
            self.error_upstream(
                call.unique_id, ErrorKind.GENERIC, outcome.detail or "no answer from the station"
            )

    # -- station -> CSMS ---------------------------------------------------------

    async def _handle(self, call: Call, raw: str) -> None:
        if self.session.closed:
            return
        if call.action in schemas.known_actions(self.version):
            try:
                schemas.validate(self.version, call.action, call.payload, request=True)
            except OcppViolation:
                await self._answer_locally(call)  # the same CALLERROR as standalone; nothing forwarded
                return
        if call.action == BOOT:
            self.booting(raw)
        if await self._upstream_ready(call.action):
            reply = await self.calls.exchange(call.unique_id, self.tx.mapped(call.action, raw))
            if reply is not None:
                frame, reply_raw = reply
                self.session.forward_reply(reply_raw)
                await self.end.flush()
                self.hub.metrics.relayed.labels("station_to_csms").inc()
                if call.action == BOOT:
                    self.boot_answered(frame, repeated=False)
                if type(frame) is CallResult:
                    await self._after_relayed(call, frame.payload)
                return
        self.hub.metrics.local.inc()
        response = await self._answer_locally(call)
        if response is not None and call.action in self.rules.DURABLE:
            local_tx = response.get("transactionId") if call.action == "StartTransaction" else None
            self.keep(call.action, raw, local_tx)

    async def _after_relayed(self, call: Call, payload: dict[str, Any]) -> None:
        try:
            schemas.validate(self.version, call.action, payload, request=False)
        except OcppViolation as exc:  # forwarded anyway: the CSMS's answer is its own business
            log.warning("%s: the CSMS's %s answer is invalid: %s", self.station_id, call.action, exc)
            return
        self.session.after_relayed(call, payload, self.hub.runtime.clock())
        await self.end.flush()

    # -- CSMS -> station ---------------------------------------------------------

    def _csms_call(self, call: Call, text: str) -> None:
        session, version = self.session, self.version
        if call.action in schemas.known_actions(version):
            try:
                schemas.validate(version, call.action, call.payload, request=True)
            except OcppViolation as exc:
                self.error_upstream(call.unique_id, exc.kind, exc.description)
                return
        if session.closed:
            self.error_upstream(call.unique_id, ErrorKind.GENERIC, "the station is not connected")
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
        local = self._station_tx(call.action, payload)
        if local is not None:
            payload, raw_frame = local, None
        if verdict.max_profile_id is not None:
            self.remember_max(verdict.max_profile_id, call.payload, payload)
        elif call.action == "ClearChargingProfile":
            self.forget_max(call.payload)
        self.hub.metrics.relayed.labels("csms_to_station").inc()
        # After a clear, the session installs both DSO profiles again (the slot goes first).
        session.send_relayed(call, payload, raw_frame, reapply=verdict.reapply)
        self.end.wake()

    def _station_tx(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """``payload`` with the CSMS's 1.6 transaction id put back to the station's, or None."""
        csms_of = self.tx.csms_of  # only ever filled for a version whose central system numbers them
        if not csms_of:
            return None
        local_of = {csms: local for local, csms in csms_of.items()}
        if action in self.rules.CSMS_TX_REFERENCES:
            local = local_of.get(payload["transactionId"])
            return None if local is None else {**payload, "transactionId": local}
        if action == "SetChargingProfile":  # a TxProfile names one
            local = local_of.get(self.rules.profile_of(payload).get("transactionId"))  # type: ignore[arg-type]
            if local is None:
                return None
            mapped = copy.deepcopy(payload)
            self.rules.profile_of(mapped)["transactionId"] = local
            return mapped
        return None


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
