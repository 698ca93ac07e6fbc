"""Operator requests to a running gateway: a spool folder beside the store.

``ocpp809 release STATION --reason TEXT`` writes one JSON file into
``<store path>.requests/``; the running gateway picks it up (every ``POLL_S``), feeds
the core, audits it with its reason, and writes ``<name>.result`` with the outcome,
which the command waits for. Only who may write next to the store can ask: the same
people who could edit the store anyway, and no listening socket is added for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

from gateway.core.decisions import StationReleaseRefused
from gateway.core.events import StationReleased
from gateway.runtime import CoreRuntime

log = logging.getLogger(__name__)

POLL_S = 1.0
_MAX_REQUEST_BYTES = 4096


def spool_dir(store_path: str | Path) -> Path:
    return Path(f"{store_path}.requests")


def _write_atomic(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class RequestSpool:
    """The gateway side: an adapter that serves the spool folder."""

    def __init__(self, store_path: str | Path, runtime: CoreRuntime) -> None:
        self.folder = spool_dir(store_path)
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="operator-requests")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _serve(self) -> None:
        while True:
            try:
                await self.serve_once()
            except Exception:  # a bad file must never stop the spool (nor the gateway)
                log.exception("operator request folder %s", self.folder)
            await asyncio.sleep(POLL_S)

    async def serve_once(self) -> int:
        """Answer every request waiting in the folder; returns how many."""
        served = 0
        for request in sorted(self.folder.glob("*.json")):
            served += 1
            result = await self._answer(request)
            _write_atomic(request.with_suffix(".result"), result)
            request.unlink(missing_ok=True)
        return served

    async def _answer(self, request: Path) -> dict[str, object]:
        try:
            if request.stat().st_size > _MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            body = json.loads(request.read_text())
            if body.get("action") != "release":
                raise ValueError(f"unknown action {body.get('action')!r}")
            station_id, reason, by = body["station_id"], body["reason"], body.get("by", "operator")
            if not all(isinstance(v, str) and v for v in (station_id, reason, by)):
                raise ValueError("station_id, reason and by must be non-empty strings")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("operator request %s refused: %s", request.name, exc)
            return {"ok": False, "detail": f"malformed request: {exc}"}
        decisions = self.runtime.submit(StationReleased(station_id, reason, by))
        refused = next((d for d in decisions if isinstance(d, StationReleaseRefused)), None)
        if refused is not None:
            return {"ok": False, "detail": refused.detail}
        return {"ok": True, "detail": f"{station_id} released: its commitment no longer counts"}


def request_release(
    store_path: str | Path, station_id: str, reason: str, by: str, timeout_s: float = 10.0
) -> tuple[bool, str]:
    """The command side: ask the running gateway to release ``station_id``; (ok, what happened)."""
    folder = spool_dir(store_path)
    if not folder.is_dir():
        return False, f"no gateway has served store {store_path} (no folder {folder})"
    name = uuid.uuid4().hex
    request, result = folder / f"{name}.json", folder / f"{name}.result"
    _write_atomic(request, {"action": "release", "station_id": station_id, "reason": reason, "by": by})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result.exists():
            answer = json.loads(result.read_text())
            result.unlink(missing_ok=True)
            return bool(answer.get("ok")), str(answer.get("detail", ""))
        time.sleep(0.05)
    request.unlink(missing_ok=True)
    return False, f"no running gateway answered within {timeout_s:g} s (store {store_path})"
