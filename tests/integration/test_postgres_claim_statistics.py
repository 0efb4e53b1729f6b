"""The PostgreSQL bus refreshes the queue tables' planner statistics as the queue grows.

This machine's PostgreSQL runs with autovacuum off, like the servers this guards against:
without an ANALYZE, the claim sorted every active task (0.5 s per claim with 3,000 queued).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from cloudops.bus.postgres import PostgresSessionBus
from cloudops.bus.statistics import QueueStatistics
from cloudops.runtime import Runtime
from cloudops.services import inputs

pytestmark = pytest.mark.parametrize("runtime_factory", ["postgres"], indirect=True)

LAST_ANALYZE = text(
    "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL"
    " FROM pg_stat_user_tables WHERE relname = 'tasks'"
)
CHANGES = text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'tasks'")


async def submitted(runtime: Runtime, count: int) -> None:
    for index in range(count):
        result = await runtime.tasks.restart_workload(
            inputs.RestartWorkload("default", f"web-{index % 20}")
        )
        assert result.value is not None, result.user_errors
    # The server's activity counters reach pg_stat_user_tables within a second or so.
    async with asyncio.timeout(10):
        while True:
            async with runtime.db.read() as session:
                if (await session.scalar(CHANGES) or 0) >= count:
                    return
            await asyncio.sleep(0.1)


async def settled(statistics: QueueStatistics) -> None:
    check = statistics._check
    if check is not None:
        await asyncio.wait_for(check, 30)


def statistics_of(runtime: Runtime) -> QueueStatistics:
    assert isinstance(runtime.bus, PostgresSessionBus)
    return runtime.bus.statistics


async def analyzed(runtime: Runtime) -> bool:
    async with runtime.db.read() as session:
        return bool(await session.scalar(LAST_ANALYZE))


async def test_a_claim_on_a_grown_table_analyzes_it_once(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime: Runtime = await runtime_factory(run_worker=False)
    statistics = statistics_of(runtime)
    await submitted(runtime, 120)
    assert not await analyzed(runtime)

    statistics.claimed()
    await settled(statistics)
    assert statistics.analyzed == 1
    assert await analyzed(runtime)

    statistics.claimed()  # checked a moment ago: not again so soon
    assert statistics._check is None and statistics.analyzed == 1


async def test_a_claim_on_fresh_statistics_analyzes_nothing(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime: Runtime = await runtime_factory(run_worker=False)
    statistics = statistics_of(runtime)
    await submitted(runtime, 10)  # below the threshold (50 changes + 10 % of the rows)
    statistics.claimed()
    await settled(statistics)
    assert statistics.analyzed == 0


async def test_a_worker_claiming_from_a_grown_queue_analyzes_it_without_being_asked(
    runtime_factory: Callable[..., Any],
) -> None:
    """No claim is slow enough to look wrong with a few hundred queued tasks, yet the
    plan chosen without statistics already costs several times the good one: the worker
    refreshes them as it claims."""
    runtime: Runtime = await runtime_factory(run_worker=False)
    await submitted(runtime, 300)
    worker: Runtime = await runtime_factory()
    async with asyncio.timeout(30):
        while not await analyzed(worker):  # noqa: ASYNC110 (statistics have no event to wait on)
            await asyncio.sleep(0.1)
    assert statistics_of(worker).analyzed >= 1


async def test_closing_lets_a_check_in_flight_finish_instead_of_cancelling_it(
    runtime_factory: Callable[..., Any],
) -> None:
    """A cancel landing inside the check's statement would hand the pool a connection
    still busy with it; closing waits for the check (a few milliseconds) instead."""
    runtime: Runtime = await runtime_factory(run_worker=False)
    statistics = statistics_of(runtime)
    await submitted(runtime, 120)
    statistics.claimed()
    check = statistics._check
    assert check is not None and not check.done()
    await statistics.close()
    assert check.done() and not check.cancelled()
    assert statistics.analyzed == 1
