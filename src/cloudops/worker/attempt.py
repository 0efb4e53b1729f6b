"""One attempt of one task: STARTED, each step, then COMPLETED / retry / FAILED / CANCELLED.

The attempt is the task's only writer while it runs. Every write goes through the journal
with a guard (status RUNNING, this attempt); a write that finds the guard broken means
another actor owns the task now, and the attempt stops without writing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cloudops.bus.base import BoundInStatement, Lease
from cloudops.db.models import Artifact, Task
from cloudops.db.types import new_id, utcnow
from cloudops.domain import EventKind, StepStatus, TaskStatus, TaskType
from cloudops.errors import LeaseLost, PermanentStepError, StepError, TaskCancelled
from cloudops.events.records import ArtifactRecord
from cloudops.handlers.base import Handler, Services, StepContext, TaskView
from cloudops.integrations.artifacts import StoredObject
from cloudops.tasks.journal import Appended, Change, Guard, Journal, JournalTransaction
from cloudops.tasks.steps import StepState, overall_progress, stamp
from cloudops.worker.faults import injected_fault
from cloudops.worker.retry import backoff_delay

log = logging.getLogger(__name__)


class Outcome:
    COMPLETED = "completed"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    LOST = "lost"


@dataclass
class AttemptResult:
    outcome: str
    run_after: Any = None
    #: The attempt's last write also released its session (see Attempt.release).
    released: bool = False


@dataclass
class Attempt:
    """Runs one attempt; also the StepSink its steps report to."""

    journal: Journal
    handler: Handler
    services: Services
    task: TaskView
    steps: list[StepState]
    retry_base_delay: float
    lease: Lease | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    #: STARTED and the guard it is written under (QUEUED, this attempt, the lease). It is
    #: held like a finished step's event: written with the attempt's first write (the
    #: first STEP_STARTED, before any step runs), one write less per task.
    start: Change | None = None
    start_guard: Guard | None = None
    #: The bus's release of the session, to ride in the attempt's last write (COMPLETED,
    #: the retry, FAILED or CANCELLED) where the bus can: one round trip less per task,
    #: and the task's end and its entity's next task becoming claimable commit together.
    release: BoundInStatement | None = None
    _current: int | None = None
    _held: list[Change] = field(default_factory=list)
    _starting: bool = False
    _wrote: bool = False

    def __post_init__(self) -> None:
        if self.start is not None:
            self._held.append(self.start)
            self._starting = True

    @property
    def guard(self) -> Guard:
        if self._starting and self.start_guard is not None:
            return self.start_guard
        return Guard({TaskStatus.RUNNING}, self.task.attempt, self.lease)

    # -- StepSink -------------------------------------------------------------------
    async def report_progress(self, fraction: float, message: str | None) -> None:
        step = self._step()
        step["progress"] = fraction
        if message is not None:
            step["message"] = message
        await self._write(EventKind.STEP_PROGRESS, step=step, message=message)

    async def log(self, message: str) -> None:
        await self._write(
            EventKind.LOG,
            step=self._step() if self._current is not None else None,
            message=message,
            progress=False,
        )

    async def find_artifact(self, path: str) -> ArtifactRecord | None:
        async with self.journal.db.read() as session:
            row = (await session.execute(select(Artifact).where(Artifact.path == path))).scalar()
        return ArtifactRecord.from_row(row) if row is not None else None

    async def record_artifact(
        self, kind: str, subject: str | None, stored: StoredObject
    ) -> ArtifactRecord:
        async with self._transaction() as txn:
            artifact = Artifact(
                id=new_id(),
                task_id=self.task.id,
                kind=kind,
                subject=subject,
                path=stored.path,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                created_at=utcnow(),
            )
            txn.session.add(artifact)
            await txn.session.flush()
            appended = await self._append(
                txn,
                Change(
                    EventKind.ARTIFACT,
                    {},
                    step=self._step() if self._current is not None else None,
                    message=f"{kind} {stored.path} ({stored.size_bytes} bytes)",
                    artifact=artifact,
                ),
            )
            if appended is None:
                raise LeaseLost(self.task.id)  # rolls the artifact row back too
        return ArtifactRecord.from_row(artifact)

    # -- the attempt ---------------------------------------------------------------
    async def run(self) -> AttemptResult:
        result = await self._run()
        if result.outcome == Outcome.LOST and self._starting:
            # STARTED never committed: cancelled (or moved) between receive and start.
            return AttemptResult(Outcome.SKIPPED)
        return result

    async def _run(self) -> AttemptResult:
        plan = list(self.handler.plan(self.task.input))
        try:
            for index, step in enumerate(plan):
                if self.steps[index]["status"] in (StepStatus.COMPLETED, StepStatus.SKIPPED):
                    continue  # done by an earlier attempt
                if self.cancelled.is_set():
                    raise TaskCancelled(self.task.id)
                self._current = index
                state = self.steps[index]
                state.update(
                    status=StepStatus.RUNNING.value,
                    progress=0.0,
                    message=None,
                    startedAt=stamp(utcnow()),
                    finishedAt=None,
                )
                await self._write(EventKind.STEP_STARTED, step=state)
                fault = injected_fault(self.task, step.name)
                if fault is not None:
                    raise fault
                await step.run(StepContext(self.task, step.name, self, self.services))
                state.update(
                    status=StepStatus.COMPLETED.value, progress=1.0, finishedAt=stamp(utcnow())
                )
                self._hold(EventKind.STEP_COMPLETED, state)
                self._current = None
            return await self._complete()
        except TaskCancelled:
            return await self._unless_lost(self._cancel())
        except LeaseLost:
            return self._lost()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a step failed
            return await self._unless_lost(self._fail(exc))

    def _lost(self) -> AttemptResult:
        log.warning(
            "lost the task; stopping without writing",
            extra={"action": "task_lost", "task_id": self.task.id},
        )
        return AttemptResult(Outcome.LOST)

    async def _unless_lost(self, ending: Awaitable[AttemptResult]) -> AttemptResult:
        try:
            return await ending
        except LeaseLost:
            return self._lost()

    def _hold(self, kind: EventKind, state: StepState) -> None:
        """Keep a step's STEP_COMPLETED for the attempt's next write (the next step's
        STEP_STARTED or the task's ending), which follows at once: both go in one write
        (one commit, and on PostgreSQL one statement), and nobody sees the event later.
        The held event keeps its own time, step, progress and steps. A crash before that
        write runs the step again on the next attempt, as a crash just before any write
        would: steps are idempotent."""
        self._held.append(
            Change(
                kind,
                {"steps": copy.deepcopy(self.steps), "progress": overall_progress(self.steps)},
                step=dict(state),
                at=utcnow(),
            )
        )

    @contextlib.asynccontextmanager
    async def _transaction(self, *, one_append: bool = False) -> AsyncIterator[JournalTransaction]:
        """A journal transaction for the attempt's next write (made with _append).
        ``one_append``: the caller makes that write and nothing else (see
        Journal.transaction)."""
        self._wrote = False
        async with self.journal.transaction(one_append=one_append) as txn:
            yield txn
        self._held.clear()
        if self._wrote and self._starting:
            self._starting = False
            log.info(
                "task started",
                extra={
                    "action": "task_started",
                    "task_id": self.task.id,
                    "attempt": self.task.attempt,
                },
            )

    async def _append(
        self, txn: JournalTransaction, change: Change, *, last: bool = False
    ) -> Appended | None:
        """The held events, then ``change``, as one write (one statement on PostgreSQL);
        None when the guard no longer holds. ``last``: the attempt's last write, which
        also releases the session where the bus can."""
        bus = self.release if last else None
        appended = await txn.append_all(self.task.id, self.guard, [*self._held, change], bus=bus)
        self._wrote = appended is not None
        return appended[-1] if appended is not None else None

    async def _commit(self, change: Change, *, last: bool = False) -> Appended | None:
        """The held events and ``change`` as a write of their own (see _append)."""
        async with self._transaction(one_append=True) as txn:
            return await self._append(txn, change, last=last)

    def _ended(self, outcome: str, run_after: Any = None) -> AttemptResult:
        return AttemptResult(outcome, run_after, released=self.release is not None)

    async def interrupt(self) -> None:
        """Shutdown came before the attempt finished: back to QUEUED, same attempt."""
        if self._starting:
            return  # nothing written yet: the task is still QUEUED
        if self._current is not None:
            self.steps[self._current].update(
                status=StepStatus.PENDING.value, progress=0.0, startedAt=None, message=None
            )
        await self._commit(
            Change(
                EventKind.RETRY_SCHEDULED,
                {
                    "status": TaskStatus.QUEUED.value,
                    "steps": self.steps,
                    "progress": overall_progress(self.steps),
                    "run_after": None,
                },
                message="worker shut down mid-task; it resumes when a worker starts again",
            ),
        )

    # -- endings --------------------------------------------------------------------
    async def _complete(self) -> AttemptResult:
        now = utcnow()
        completed = Change(
            EventKind.COMPLETED,
            {
                "status": TaskStatus.COMPLETED.value,
                "progress": 1.0,
                "steps": self.steps,
                "finished_at": now,
                "error": None,
            },
            message=f"{self.task.type.value.lower()} completed",
            at=now,
        )
        if not self.handler.writes_on_completion:
            if await self._commit(completed, last=True) is None:
                return AttemptResult(Outcome.LOST)
        else:
            async with self._transaction() as txn:
                if await self._append(txn, completed, last=True) is None:
                    return AttemptResult(Outcome.LOST)
                await self.handler.on_completed(txn.session, self.task)
        log.info("task completed", extra={"action": "task_completed", "task_id": self.task.id})
        return self._ended(Outcome.COMPLETED)

    async def _cancel(self) -> AttemptResult:
        now = utcnow()
        for state in self.steps:
            if state["status"] in (StepStatus.PENDING, StepStatus.RUNNING):
                state.update(
                    status=StepStatus.SKIPPED.value, finishedAt=stamp(now), message="cancelled"
                )
        appended = await self._commit(
            Change(
                EventKind.CANCELLED,
                {
                    "status": TaskStatus.CANCELLED.value,
                    "steps": self.steps,
                    "finished_at": now,
                    "progress": overall_progress(self.steps),
                },
                message="cancelled while running",
                at=now,
            ),
            last=True,
        )
        if appended is None:
            return AttemptResult(Outcome.LOST)
        log.info("task cancelled", extra={"action": "task_cancelled", "task_id": self.task.id})
        return self._ended(Outcome.CANCELLED)

    async def _fail(self, exc: Exception) -> AttemptResult:
        now = utcnow()
        error = str(exc) or exc.__class__.__name__
        if not isinstance(exc, StepError):
            log.exception(
                "step raised an unexpected error",
                extra={"action": "step_crashed", "task_id": self.task.id},
            )
            error = f"{exc.__class__.__name__}: {error}"
        step_name = None
        if self._current is not None:
            state = self.steps[self._current]
            step_name = state["name"]
            state.update(status=StepStatus.FAILED.value, finishedAt=stamp(now), message=error)
            try:
                await self._write(EventKind.STEP_FAILED, step=state, message=error)
            except LeaseLost:
                return AttemptResult(Outcome.LOST)
            now = utcnow()  # what follows is later than STEP_FAILED: event times never go back
        where = f"step '{step_name}' failed: {error}" if step_name else error
        retryable = not isinstance(exc, PermanentStepError)
        if retryable and self.task.attempt < self.task.max_attempts:
            delay = backoff_delay(self.handler.retry, self.retry_base_delay, self.task.attempt)
            run_after = now + timedelta(seconds=delay)
            appended = await self._commit(
                Change(
                    EventKind.RETRY_SCHEDULED,
                    {
                        "status": TaskStatus.QUEUED.value,
                        "attempt": self.task.attempt + 1,
                        "run_after": run_after,
                        "error": where,
                        "steps": self.steps,
                    },
                    message=f"{where}; attempt {self.task.attempt + 1} of "
                    f"{self.task.max_attempts} in {delay:.1f}s",
                    at=now,
                ),
                last=True,
            )
            if appended is None:
                return AttemptResult(Outcome.LOST)
            log.info(
                "retry scheduled",
                extra={"action": "task_retry_scheduled", "task_id": self.task.id, "delay": delay},
            )
            return self._ended(Outcome.RETRY, run_after)
        appended = await self._commit(
            Change(
                EventKind.FAILED,
                {
                    "status": TaskStatus.FAILED.value,
                    "dead_lettered": True,
                    "error": where,
                    "finished_at": now,
                    "steps": self.steps,
                },
                message=f"{where}; dead-lettered after attempt {self.task.attempt}",
                at=now,
            ),
            last=True,
        )
        if appended is None:
            return AttemptResult(Outcome.LOST)
        log.info("task failed", extra={"action": "task_dead_lettered", "task_id": self.task.id})
        return self._ended(Outcome.FAILED)

    # -- helpers ---------------------------------------------------------------------
    def _step(self) -> StepState:
        assert self._current is not None
        return self.steps[self._current]

    async def _write(
        self,
        kind: EventKind,
        *,
        step: StepState | None,
        message: str | None = None,
        progress: bool = True,
    ) -> None:
        values: dict[str, Any] = {"steps": self.steps}
        if progress:
            values["progress"] = overall_progress(self.steps)
        appended = await self._commit(
            Change(kind, values, step=dict(step) if step else None, message=message)
        )
        if appended is None:
            raise LeaseLost(self.task.id)
        if appended.cancel_requested:
            self.cancelled.set()


def task_view(task: Task) -> TaskView:
    return TaskView(
        id=task.id,
        type=TaskType(task.type),
        entity_id=task.entity_id,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        input=task.input,
        metadata=task.meta,
        project_id=task.project_id,
        environment_id=task.environment_id,
        created_at=task.created_at,
    )
