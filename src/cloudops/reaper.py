"""The sandbox reaper: a loop around TaskService.reap_expired_sandboxes.

It keeps no state: what has expired and what was torn down is in the database, so it
survives restarts, and several reapers (one per process) never tear a sandbox down twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cloudops.errors import CloudOpsError
from cloudops.services.tasks import TaskService

log = logging.getLogger(__name__)


class SandboxReaper:
    def __init__(self, tasks: TaskService, interval: float) -> None:
        self._tasks = tasks
        self._interval = interval
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="sandbox-reaper")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _run(self) -> None:
        while True:
            try:
                count = await self._tasks.reap_expired_sandboxes()
                if count:
                    log.info(
                        "queued sandbox teardowns",
                        extra={"action": "sandbox_reaped", "count": count},
                    )
            except (CloudOpsError, OSError, RuntimeError):
                log.warning(
                    "reaper pass failed; trying again",
                    exc_info=True,
                    extra={"action": "reaper_failed"},
                )
            except Exception:
                log.exception("reaper pass failed", extra={"action": "reaper_failed"})
            await asyncio.sleep(self._interval)
