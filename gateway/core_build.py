"""Building the core from the configuration and the store: one recipe for the gateway,
the test suites and the benchmarks, so none of them wires the core its own way."""

from __future__ import annotations

import asyncio
import json
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.config import Config, MissingStart
from gateway.core.arbiter import Arbiter, ArbiterSettings
from gateway.core.demand import DemandSettings
from gateway.core.durable import describe_resume, resume
from gateway.core.fleet import FleetSettings
from gateway.core.ledger import StationLedger
from gateway.core.model import OcppVersion
from gateway.core.setpoint_rules import SetpointBounds
from gateway.errors import StoreError
from gateway.metrics import CoreMetrics
from gateway.runtime import Clock, CoreRuntime
from gateway.store import Store

log = logging.getLogger(__name__)


def arbiter_settings(config: Config) -> ArbiterSettings:
    lim, sh = config.limits, config.sharing
    return ArbiterSettings(
        bounds=SetpointBounds(
            lim.min_limit_w, lim.max_limit_w, lim.max_command_age_s, lim.future_tolerance_s
        ),
        initial_limit_w=lim.initial_limit_w,
        fallback_limit_w=lim.fallback_limit_w,
        hold_timeout_s=lim.hold_timeout_s,
        meter_stale_after_s=config.ocpp.meter_stale_after_s,
        meter_plausible_factor=config.ocpp.meter_plausible_factor,
        reallocation_settle_s=lim.reallocation_settle_s,
        fallback_without_master=lim.fallback_without_master,
        fleet=FleetSettings(
            live_validity_s=config.ocpp.profile_validity_s,
            refresh_s=config.ocpp.profile_refresh_s,
            raise_interval_s=sh.raise_interval_s,
            demand=DemandSettings(
                enabled=sh.follow_demand,
                idle_share_w=sh.idle_share_w or None,
                headroom_w=sh.headroom_w,
                window_s=sh.window_s,
            ),
        ),
    )


def build_core(
    config: Config,
    store: Store,
    clock: Clock,
    *,
    missing_start: MissingStart | None,
    start_reason: str | None = None,
) -> CoreRuntime:
    """The core resumed from ``store``, on the running loop; ``start()`` it before use.

    ``missing_start``: what an empty store means (``store.missing_start``); None starts it
    in INITIAL, as the tests and benchmarks want. Stations the previous run profiled come
    back offline with what they may still hold (``Fleet.restore``).
    """
    settings = arbiter_settings(config)
    now = clock()
    stored = store.load_limit()
    resumed = stored
    if stored is None and missing_start is not None:
        resumed = resume(None, settings.hold_timeout_s, now, missing_start=missing_start)
    arbiter = Arbiter.start(settings, resumed, now)
    reason = start_reason
    if reason is None and missing_start is not None:
        reason = describe_resume(stored, arbiter.durable, now)
        if stored is None:
            missing = f"store {store.path} {'did not exist' if store.created else 'holds no limit'}"
            log.warning(
                "%s: not a silent fresh start, starting in %s (store.missing_start = %r)",
                missing,
                arbiter.mode.value,
                missing_start,
            )
            reason = f"{missing}: {reason}"
    _restore_commitments(arbiter, store, now)
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
    return CoreRuntime(arbiter, store, CoreMetrics(), scheduler, clock, start_reason=reason)


def _restore_commitments(arbiter: Arbiter, store: Store, now: float) -> None:
    fleet = arbiter.fleet
    # Each station's stored ledger, plus the entries journaled since it was stored (sent,
    # maybe held: ``StationLedger.restored`` counts them as pending).
    rows: dict[str, tuple[OcppVersion, list[list[float]]]] = {}
    what = "commitments"
    try:
        for station_id, version, entries in store.load_commitments():
            what = f"commitment of station {station_id!r}"
            rows[station_id] = (OcppVersion(version), json.loads(entries))
        for journaled in store.load_commitment_journal():
            what = "commitment journal entry"
            for station_id, version, seq, live_w, live_until_s, fallback_w in json.loads(journaled):
                known = rows.get(str(station_id), (OcppVersion(version), []))[1]
                known.append([seq, live_w, live_until_s, fallback_w, 0])
                rows[str(station_id)] = (OcppVersion(version), known)  # the journal is newer
        restored = [(sid, version, StationLedger.restored(r)) for sid, (version, r) in rows.items()]
    except (ValueError, TypeError) as exc:  # a row we cannot read: the store is not ours to trust
        raise StoreError(f"store {store.path}: {what} unreadable: {exc}") from None
    arbiter.restore(restored, now)
    if fleet.offline_count:
        live_w, fallback_w = fleet.offline_reserve(now)
        log.warning(
            "%d station(s) restored offline from the store: %.1f W stay reserved (%.1f W fallback)"
            " until each reconnects and accepts its share, or an operator releases it",
            fleet.offline_count,
            live_w,
            fallback_w,
        )
