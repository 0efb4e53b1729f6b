"""What a task type is: a plan of named async steps, each run with a step context.

A step must be idempotent: a retried attempt (after a failure or a crashed worker) runs
the unfinished step again, and the step must find what an earlier attempt already did
(an artifact with the same checksum, a restart already rolled out) instead of doing it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.db.engine import Database
from cloudops.domain import TaskType
from cloudops.errors import TaskCancelled
from cloudops.events.records import ArtifactRecord
from cloudops.integrations.artifacts import ArtifactStore, StoredObject
from cloudops.integrations.kubernetes import KubernetesClient


@dataclass(frozen=True, slots=True)
class TaskView:
    """What a step may know about its task (a snapshot taken when the attempt started)."""

    id: str
    type: TaskType
    entity_id: str
    attempt: int
    max_attempts: int
    input: dict[str, Any]
    metadata: dict[str, Any]
    project_id: str | None
    environment_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Services:
    """The outside world as handlers see it; each piece is an interface with a swap."""

    db: Database
    artifacts: ArtifactStore
    kubernetes: KubernetesClient
    step_delay: float


class StepSink(Protocol):
    """Implemented by the worker: turns what a step reports into journal events."""

    cancelled: asyncio.Event

    async def report_progress(self, fraction: float, message: str | None) -> None: ...

    async def log(self, message: str) -> None: ...

    async def find_artifact(self, path: str) -> ArtifactRecord | None: ...

    async def record_artifact(
        self, kind: str, subject: str | None, stored: StoredObject
    ) -> ArtifactRecord: ...


class StepContext:
    def __init__(self, task: TaskView, step: str, sink: StepSink, services: Services) -> None:
        self.task = task
        self.step = step
        self.services = services
        self._sink = sink

    @property
    def input(self) -> dict[str, Any]:
        return self.task.input

    def check_cancelled(self) -> None:
        if self._sink.cancelled.is_set():
            raise TaskCancelled(self.task.id)

    async def sleep(self, seconds: float) -> None:
        """A delay that a cancel interrupts at once."""
        self.check_cancelled()
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sink.cancelled.wait(), timeout=seconds)
        self.check_cancelled()

    async def progress(self, fraction: float, message: str | None = None) -> None:
        self.check_cancelled()
        await self._sink.report_progress(min(max(fraction, 0.0), 1.0), message)

    async def log(self, message: str) -> None:
        await self._sink.log(message)

    async def simulate_work(self, ticks: int = 4) -> None:
        """Spend STEP_DELAY seconds in ``ticks`` slices, reporting progress after each."""
        delay = self.services.step_delay
        if delay <= 0:
            self.check_cancelled()
            return
        for i in range(ticks):
            await self.sleep(delay / ticks)
            await self.progress((i + 1) / ticks)

    async def write_artifact(
        self, kind: str, path: str, data: bytes, *, subject: str | None = None
    ) -> ArtifactRecord:
        """Store bytes and record the artifact, once: a retry finds the earlier one."""
        existing = await self._sink.find_artifact(path)
        if existing is not None:
            stored = await self.services.artifacts.stat(path)
            if stored is not None and stored.sha256 == existing.sha256:
                await self.log(f"{path} already stored by an earlier attempt (sha256 matches)")
                return existing
        self.check_cancelled()
        stored = await self.services.artifacts.put(path, data)
        if existing is not None:
            return existing
        return await self._sink.record_artifact(kind, subject, stored)


StepFunction = Callable[[StepContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    run: StepFunction


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    #: Multiplies CLOUDOPS_RETRY_BASE_DELAY.
    base_factor: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0


class Handler(Protocol):
    type: TaskType
    retry: RetryPolicy

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        """The steps for this input; fixed once the task is queued."""

    #: Whether :meth:`on_completed` writes anything. False: it is not called, and the
    #: COMPLETED event is a write of its own (on PostgreSQL one statement, with no
    #: BEGIN or COMMIT round trip).
    writes_on_completion: bool

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        """Effects that must commit together with the COMPLETED event (called only when
        ``writes_on_completion``)."""
