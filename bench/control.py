"""The command loop both bench child processes run: the harness drives them over a pipe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

log = logging.getLogger(__name__)


async def serve_commands(
    conn: Connection, target: object, on_exit: Callable[[], Awaitable[object]], name: str
) -> None:
    """Call ``target``'s methods as the harness asks, until it sends "exit".

    ``conn.recv`` blocks, so it runs on one thread beside the loop: the loop keeps
    serving stations while the harness is silent.
    """
    loop = asyncio.get_running_loop()
    control = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-control")
    try:
        while True:
            command, kwargs = await loop.run_in_executor(control, conn.recv)
            if command == "exit":
                try:
                    await on_exit()
                except Exception:
                    log.exception("%s did not stop cleanly", name)
                conn.send({"ok": True})
                return
            try:
                result = getattr(target, command)(**kwargs)
                if asyncio.iscoroutine(result):
                    result = await result
                conn.send({"ok": True, "result": result})
            except Exception as exc:
                log.exception("%s command %s failed", name, command)
                conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        control.shutdown(wait=False)
