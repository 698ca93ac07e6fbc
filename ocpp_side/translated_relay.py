"""A 1.6 station behind a 2.0.1 CSMS: the shell around the pure translators (issue 11).

With ``[upstream] csms_protocol = "ocpp2.0.1"`` a 1.6 station's upstream link speaks
``ocpp2.0.1`` and its frames cross through ``ocpp_side.translation`` instead of verbatim
(a 2.0.1 station keeps ``relay.StationRelay``). The link, the worker, the catch-up, the
boot gate, CSMS maximums and K14 notices are ``relay_link.UpstreamRelay``'s.

Station → CSMS: the 1.6 CALL is validated (invalid: the standalone CALLERROR), then
``upward.translate``; each 2.0.1 call goes to the CSMS in order with a gateway message
id and the station is answered from the CSMS's answers (``Translated.answer``). When the
CSMS is away (or has not accepted the boot) the station gets the gateway's local answer
-- its standalone authorisation policy and heartbeat interval, with the translator's
``transactionId`` for a StartTransaction -- and the 2.0.1 calls of a durable 1.6 action
(StartTransaction, MeterValues, StopTransaction, StatusNotification) go to the outbox
already translated, so every ``seqNo`` and transaction id is given exactly once.

CSMS → station: the 2.0.1 CALL is validated, then ``downward.translate``. ``Refused``
becomes the CALLERROR it names (``NotSupported`` counted in
``ocpp809_relay_not_supported_total{action}``). Otherwise the 1.6 calls go to the
station through its session one at a time (the session's rules: one call in flight,
gateway ids, timeouts), a 1.6 SetChargingProfile / ClearChargingProfile judged by
``csms_guard`` on the way (the DSO cap stays in force), then the 2.0.1 answer goes back
to the CSMS and the follow-ups (e.g. NotifyReport) after it, in the worker's order.

The translation state is one ``TranslationState`` per station (shared by its successive
connections), saved in the outbox file after every translation that changed it: a
restart in the middle of a transaction loses no id and repeats no ``seqNo``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.core.model import OcppVersion
from gateway.errors import InternalError
from ocpp_side import codec, schemas
from ocpp_side.codec import Call, CallError, CallResult, ErrorKind, OcppViolation
from ocpp_side.csms_guard import judge
from ocpp_side.relay_link import BOOT, Hub, PushJob, StationEnd, UpstreamRelay, gateway_message_id
from ocpp_side.session import CallOutcome
from ocpp_side.translation import downward, upward
from ocpp_side.translation.api import (
    Answers,
    Out,
    Payload,
    Refused,
    Translated,
    Translation,
    TranslationState,
)

log = logging.getLogger(__name__)

TranslateFn = Callable[[TranslationState, str, str, Payload, datetime], Translation]

_GUARDED = frozenset({"SetChargingProfile", "ClearChargingProfile"})


@dataclass(frozen=True, slots=True)
class Translators:
    """The two pure translators (a test may pass its own)."""

    upward: TranslateFn  # a 1.6 station CALL -> 2.0.1 calls for the CSMS
    downward: TranslateFn  # a 2.0.1 CSMS CALL -> 1.6 calls for the station

    @staticmethod
    def load() -> Translators:
        return Translators(upward.translate, downward.translate)


class TranslatedRelay(UpstreamRelay):
    def __init__(
        self, hub: Hub, end: StationEnd, csms_version: OcppVersion, translators: Translators
    ) -> None:
        super().__init__(hub, end, csms_version.value)
        self.translators = translators
        self.state = hub.translation_state(self.station_id)
        self._saved = self.state.to_json()  # as persisted (or as new: saved once it changes)
        self._to_station: dict[str, asyncio.Future[CallOutcome]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        # How long a translated call may wait for the station: its turn in the session's
        # queue (one call in flight), then the session's own answer timeout.
        self._station_wait_s = 4 * hub.ocpp.call_timeout_s

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await super().stop()

    def _save(self) -> None:
        """Persist the translation state if it changed since it was last persisted."""
        after = self.state.to_json()
        if after != self._saved:
            self.hub.outbox.save_state(self.station_id, after)
            self._saved = after

    # -- station -> CSMS ---------------------------------------------------------

    async def _handle(self, call: Call, raw: str) -> None:
        session = self.session
        if session.closed:
            return
        try:
            schemas.validate(self.version, call.action, call.payload, request=True)
        except OcppViolation:
            await self._answer_locally(call)  # the same CALLERROR as standalone; nothing forwarded
            return
        now = self.hub.runtime.clock()
        try:
            translation = self.translators.upward(
                self.state, self.station_id, call.action, call.payload, datetime.fromtimestamp(now, UTC)
            )
        except Exception:
            log.exception("%s: translating the station's %s failed", self.station_id, call.action)
            await self._answer_locally(call)
            return
        finally:
            self._save()
        if isinstance(translation, Refused):
            error = codec.encode_error(call.unique_id, translation.error_code, translation.description)
            session.forward_reply(error.decode())
            await self.end.flush()
            return
        frames = []
        for out in translation.calls:
            unique_id = gateway_message_id()
            frames.append((out, codec.encode_call(unique_id, out.action, out.payload).decode(), unique_id))
            if out.action == BOOT:
                self.booting(frames[-1][1])
        answers: list[Payload | None] = []
        if frames and await self._upstream_ready(call.action):
            for out, text, unique_id in frames:
                reply = await self.calls.exchange(unique_id, text)
                if reply is None:
                    break  # away (or too slow): the rest is kept, if durable
                if out.action == BOOT:
                    self.boot_answered(reply[0], repeated=False)
                answers.append(self._csms_answer(out.action, reply[0]))
                self.hub.metrics.relayed.labels("station_to_csms").inc()
        offline = bool(frames) and not answers
        unsent = frames[len(answers) :]
        if unsent:
            if call.action in self.rules.DURABLE:
                for out, text, _ in unsent:
                    self.keep(out.action, text)
            answers.extend([None] * len(unsent))
        if offline:
            self.hub.metrics.local.inc()
        await self._answer_station(call, translation, answers, offline, now)

    def _csms_answer(self, action: str, frame: CallResult | CallError) -> Payload | None:
        """The CSMS's CALLRESULT payload if schema-valid, else None."""
        if type(frame) is CallError:
            log.warning("%s: the CSMS refused %s: %s", self.station_id, action, frame.error_code)
            return None
        assert type(frame) is CallResult
        try:
            schemas.validate(self.up_rules.VERSION, action, frame.payload, request=False)
        except OcppViolation as exc:
            log.warning("%s: the CSMS's %s answer is invalid: %s", self.station_id, action, exc)
            return None
        return frame.payload

    async def _answer_station(
        self, call: Call, translation: Translated, answers: Answers, offline: bool, now: float
    ) -> None:
        try:
            payload: Payload | None = translation.answer(answers)
        except Exception:
            log.exception("%s: translating the answer to %s failed", self.station_id, call.action)
            payload = None
        finally:
            self._save()
        if offline:
            payload = self._local_answer(call, payload, now)
        if payload is not None:
            try:
                schemas.validate(self.version, call.action, payload, request=False)
            except OcppViolation as exc:
                log.error("%s: the translated %s answer is invalid: %s", self.station_id, call.action, exc)
                payload = None
        if payload is None:
            await self._answer_locally(call)
            return
        self.session.forward_reply(codec.encode_result(call.unique_id, payload).decode())
        self.session.after_relayed(call, payload, now)
        await self.end.flush()

    def _local_answer(self, call: Call, translated: Payload | None, now: float) -> Payload | None:
        """The gateway's standalone answer (its policy, its interval), the translator's 1.6 ids kept."""
        try:
            local = self.session.ctx.answers.answer(self.rules, call.action, call.payload, now)
        except OcppViolation:
            return translated
        if call.action == "StartTransaction":
            if translated is None or "transactionId" not in translated:
                return None  # no id the translation knows: never hand out one of ours
            local = {**local, "transactionId": translated["transactionId"]}
        return local

    # -- CSMS -> station ---------------------------------------------------------

    def _csms_call(self, call: Call, text: str) -> None:
        try:
            schemas.validate(self.up_rules.VERSION, call.action, call.payload, request=True)
        except OcppViolation as exc:
            self.error_upstream(call.unique_id, exc.kind, exc.description)
            return
        if self.session.closed:
            self.error_upstream(call.unique_id, ErrorKind.GENERIC, "the station is not connected")
            return
        task = asyncio.get_running_loop().create_task(self._serve_csms(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_csms(self, call: Call) -> None:
        try:
            await self._serve_csms_call(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: serving the CSMS's %s failed", self.station_id, call.action)
            self.error_upstream(call.unique_id, ErrorKind.INTERNAL, "internal error")

    async def _serve_csms_call(self, call: Call) -> None:
        try:
            now = datetime.fromtimestamp(self.hub.runtime.clock(), UTC)
            translation = self.translators.downward(
                self.state, self.station_id, call.action, call.payload, now
            )
        finally:
            self._save()
        if isinstance(translation, Refused):
            if translation.error_code == self.up_rules.ERROR_CODES[ErrorKind.NOT_SUPPORTED]:
                self.hub.metrics.not_supported.labels(call.action).inc()
            log.info(
                "%s: CSMS %s refused (%s): %s",
                self.station_id,
                call.action,
                translation.error_code,
                translation.description,
            )
            self.link.send(
                codec.encode_error(call.unique_id, translation.error_code, translation.description)
            )
            return
        answers = [await self._call_station(out) for out in translation.calls]
        try:
            answer = translation.answer(answers)
            follow_up = translation.follow_up(answers)
        finally:
            self._save()
        if call.action == "GetTransactionStatus":
            # The translator cannot see the outbox: messages kept for the CSMS are still to come.
            answer = {**answer, "messagesInQueue": self.hub.outbox.has_pending(self.station_id)}
        try:
            schemas.validate(self.up_rules.VERSION, call.action, answer, request=False)
        except OcppViolation as exc:  # we built it: a bug of ours, not the CSMS's or the station's
            raise InternalError(f"our {call.action} answer is invalid: {exc.description}") from exc
        self.link.send(codec.encode_result(call.unique_id, answer))
        self.hub.metrics.relayed.labels("csms_to_station").inc()
        if follow_up:
            self._inbox.put_nowait(PushJob(tuple((out.action, out.payload) for out in follow_up)))

    async def _call_station(self, out: Out) -> Payload | None:
        """One 1.6 call to the station through its session (DSO guard first); its answer or None."""
        session = self.session
        if session.closed:
            return None
        payload, reapply = out.payload, False
        if out.action in _GUARDED:
            verdict = judge(
                self.rules, out.action, payload, self.hub.reserved_ids, session.allocation_w, session.caps
            )
            if verdict.answer is not None:
                log.info("%s: CSMS %s on a reserved profile refused", self.station_id, out.action)
                self.hub.metrics.guarded.labels(out.action, "refused").inc()
                return verdict.answer
            if verdict.payload is not None:
                log.info(
                    "%s: CSMS station maximum capped at the DSO allocation %.0f W",
                    self.station_id,
                    session.allocation_w,
                )
                self.hub.metrics.guarded.labels(out.action, "capped").inc()
                payload = verdict.payload
            if verdict.max_profile_id is not None:
                self.remember_max(verdict.max_profile_id, out.payload, payload)
            elif out.action == "ClearChargingProfile":
                self.forget_max(out.payload)
            reapply = verdict.reapply
        unique_id = f"ocpp809-t{next(self._ids)}"
        future: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
        self._to_station[unique_id] = future
        try:
            session.send_relayed(Call(unique_id, out.action, payload), payload, None, reapply)
            self.end.wake()
            async with asyncio.timeout(self._station_wait_s):
                outcome = await future
        except TimeoutError:
            log.warning("%s: no answer to %s from the station", self.station_id, out.action)
            return None
        finally:
            self._to_station.pop(unique_id, None)
        if outcome.payload is None:
            log.info("%s: %s to the station: %s", self.station_id, out.action, outcome.detail)
        return outcome.payload

    def station_answered(self, call: Call, outcome: CallOutcome) -> None:
        future = self._to_station.get(call.unique_id)
        if future is not None and not future.done():
            future.set_result(outcome)
