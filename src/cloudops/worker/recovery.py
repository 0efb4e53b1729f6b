"""Rebuild the in-process bus from the database at start.

QUEUED tasks go back in their queue order; a task left RUNNING by a dead process goes back
to the head of its entity's queue (it has the lowest queue position there) as attempt + 1,
or is dead-lettered if that was its last attempt, so that a task that kills its worker
cannot crash-loop the service forever.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from cloudops.bus.base import Lease, SessionBus, TaskMessage
from cloudops.db.models import Task
from cloudops.db.types import utcnow
from cloudops.domain import EventKind, StepStatus, TaskStatus
from cloudops.tasks.journal import Guard, Journal

log = logging.getLogger(__name__)


async def requeue_orphans(journal: Journal) -> int:
    """Tasks RUNNING in the database but run by nobody: their worker died (embedded bus)."""
    async with journal.db.read() as session:
        orphans = (
            (await session.execute(select(Task).where(Task.status == TaskStatus.RUNNING.value)))
            .scalars()
            .all()
        )
    for task in orphans:
        await requeue_orphan(journal, task, f"worker died during attempt {task.attempt}")
    return len(orphans)


async def requeue_orphan(
    journal: Journal, task: Task, error: str, lease: Lease | None = None
) -> bool:
    """Move a RUNNING task whose worker is gone back to QUEUED as attempt + 1 (steps that
    were running go back to PENDING), or dead-letter it after its last attempt."""
    steps = [dict(s) for s in task.steps]
    for step in steps:
        if step["status"] == StepStatus.RUNNING:
            step.update(status=StepStatus.PENDING.value, progress=0.0, startedAt=None)
    guard = Guard({TaskStatus.RUNNING}, task.attempt, lease)
    now = utcnow()
    async with journal.transaction() as txn:
        if task.attempt < task.max_attempts:
            appended = await txn.append(
                task.id,
                EventKind.RETRY_SCHEDULED,
                guard,
                {
                    "status": TaskStatus.QUEUED.value,
                    "attempt": task.attempt + 1,
                    "run_after": None,
                    "error": error,
                    "steps": steps,
                },
                message=f"{error}; attempt {task.attempt + 1} of {task.max_attempts} now",
                at=now,
            )
        else:
            appended = await txn.append(
                task.id,
                EventKind.FAILED,
                guard,
                {
                    "status": TaskStatus.FAILED.value,
                    "dead_lettered": True,
                    "error": error,
                    "finished_at": now,
                    "steps": steps,
                },
                message=f"{error}; no attempts left, dead-lettered",
                at=now,
            )
    if appended is not None:
        log.warning(
            "recovered a task left running", extra={"action": "task_recovered", "task_id": task.id}
        )
    return appended is not None


async def republish_queued(journal: Journal, bus: SessionBus) -> int:
    async with journal.db.read() as session:
        rows = (
            await session.execute(
                select(Task.id, Task.entity_id, Task.queue_seq, Task.run_after)
                .where(Task.status == TaskStatus.QUEUED.value)
                .order_by(Task.queue_seq)
            )
        ).all()
    for row in rows:
        await bus.publish(TaskMessage(row.id, row.entity_id, row.queue_seq, row.run_after))
    return len(rows)
