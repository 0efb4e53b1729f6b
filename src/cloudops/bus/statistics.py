"""Planner statistics for the PostgreSQL bus's claim, kept fresh while the queue grows.

The claim walks the active tasks in queue order over a partial index and stops at the
first runnable head. PostgreSQL picks that plan only when its statistics say there are
many active tasks; on a table that grew since its last ANALYZE (a fresh database taking a
burst of submissions, or a server running with ``autovacuum = off``, as some do) it
believes there are a handful, sorts every active task and joins each with every session
instead: measured with 3,000 queued tasks, 50-500 ms per claim against 5 ms after an
ANALYZE, and with 2,500 queued 12 ms against 0.4 — slow enough to cost a quarter of the
throughput, yet too fast to look wrong — and the worker claims one task at a time.

So while the bus claims, it looks at ``pg_stat_user_tables`` at most once per
:data:`CHECK_EVERY` (in the background: one small query a second), and when the queue
tables changed by more than autovacuum's default threshold since their last ANALYZE, it
runs one, under a transaction-level advisory lock so that one process of many does it.
A server whose autovacuum keeps up never reaches the threshold. Written here because the
claim is ours: no library keeps one query's statistics fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import text

from cloudops.db.engine import Database

log = logging.getLogger(__name__)

#: At most one look at the statistics this often (seconds).
CHECK_EVERY = 1.0
#: Seconds closing waits for a check in flight before cancelling it.
CLOSE_WAIT = 5.0
#: pg_try_advisory_xact_lock key: one ANALYZE of the queue tables at a time.
_LOCK_KEY = 0x636C6F75  # "clou"

#: Tables whose changes since their last ANALYZE pass autovacuum's default threshold
#: (autovacuum_analyze_threshold 50 + autovacuum_analyze_scale_factor 0.1 x rows).
_STALE = text("""
SELECT relname FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname IN ('tasks', 'bus_sessions')
  AND n_mod_since_analyze > 50 + 0.1 * n_live_tup
""")


class QueueStatistics:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._checked_at = -CHECK_EVERY
        self._check: asyncio.Task[None] | None = None
        #: How many ANALYZE runs this process made (for logs and tests).
        self.analyzed = 0

    def claimed(self) -> None:
        """Called after every claim; starts a check when none ran lately."""
        now = time.monotonic()
        if now - self._checked_at < CHECK_EVERY or self._check is not None:
            return
        self._checked_at = now
        self._check = asyncio.create_task(self._refresh(), name="bus-statistics")
        self._check.add_done_callback(self._checked)

    def _checked(self, check: asyncio.Task[None]) -> None:
        self._check = None

    async def _refresh(self) -> None:
        try:
            async with self._db.engine.begin() as conn:
                stale = list((await conn.execute(_STALE)).scalars())
                if not stale:
                    return
                locked = await conn.scalar(text(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})"))
                if not locked:
                    return  # another process is analyzing them right now
                for table in sorted(stale):
                    await conn.execute(text(f"ANALYZE {table}"))
            self.analyzed += 1
            log.info(
                "refreshed the planner statistics of the queue tables",
                extra={"action": "bus_analyzed", "tables": sorted(stale)},
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Claims still work, only slower on a stale table; the next claim after
            # CHECK_EVERY tries again.
            log.warning(
                "could not refresh the queue tables' statistics: %s",
                exc,
                extra={"action": "bus_analyze_failed"},
            )

    async def close(self) -> None:
        """Let a check in flight finish (it is a few milliseconds) rather than cancel it
        mid-statement, which would hand the pool a connection still busy with it
        (sqlalchemy#6592); one stuck on a database that does not answer is cancelled."""
        check = self._check
        if check is None:
            return
        await asyncio.wait({check}, timeout=CLOSE_WAIT)
        if not check.done():
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
