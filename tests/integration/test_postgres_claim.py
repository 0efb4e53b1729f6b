"""The PostgreSQL claim hands the worker the task as stored, every column of it.

The claim returns the head task whole so that the worker need not read it again; its
columns are matched to the statement's by position (see ``_CLAIM``), so a column added to
the table or moved in the statement must still land on the right attribute.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from cloudops.bus.postgres import PostgresSessionBus
from cloudops.db.models import Task
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.conftest import make_environment

pytestmark = pytest.mark.parametrize("runtime_factory", ["postgres"], indirect=True)


async def test_the_claimed_task_is_the_stored_row_column_for_column(
    runtime_factory: Callable[..., Any],
) -> None:
    runtime: Runtime = await runtime_factory(run_worker=False)
    env = await make_environment(runtime)
    # A deployment fills most columns: project, environment, steps, input, metadata.
    options = inputs.TaskOptions(
        idempotency_key="claim-1", correlation_id="corr-1", metadata={"team": "payments"}
    )
    submitted = await runtime.tasks.deploy(inputs.Deploy(env.id, "2.4.1", options=options))
    assert submitted.value is not None, submitted.user_errors
    bus = runtime.bus
    assert isinstance(bus, PostgresSessionBus)

    for _ in range(2):  # the second claim runs the cached statement with cached metadata
        # receive() retries a claim that fails, so a mismatch could otherwise hang.
        delivery = await asyncio.wait_for(bus.receive(), 10)
        claimed = delivery.task
        assert claimed is not None
        async with runtime.db.read() as session:
            stored = await session.get(Task, submitted.value.id)
        assert stored is not None
        differing = {
            attribute.key: (getattr(claimed, attribute.key), getattr(stored, attribute.key))
            for attribute in Task.__mapper__.column_attrs
            if getattr(claimed, attribute.key) != getattr(stored, attribute.key)
        }
        assert differing == {}
        assert delivery.fence >= 1 and delivery.lease is not None
        assert delivery.lease.entity_id == stored.entity_id
        await bus.release(delivery)
