"""The contract's object types. Rows come from the database or, for events, from the
broadcast record, so rendering a live event needs no query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, Union

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from cloudops.db import models
from cloudops.domain import TaskStatus as DomainStatus
from cloudops.events.records import ArtifactRecord, EventRecord
from cloudops.graphql.enums import (
    EnvironmentType,
    Role,
    StepStatus,
    TaskEventKind,
    TaskStatus,
    TaskType,
)
from cloudops.graphql.loaders import Loaders, TaskRelations

if TYPE_CHECKING:
    from cloudops.graphql.connections import TaskConnection, TaskFilter

Info = strawberry.Info[Any, None]

T = TypeVar("T")
RowT = TypeVar("RowT")
NO_RELATIONS = TaskRelations()


class Deferred(Generic[T]):
    """A field's value that has to be read: the read starts at the first await, so a node
    whose field the query does not select costs one small object and no read, and a
    second selection of the field (an alias) awaits the same read."""

    __slots__ = ("_pending", "_read")

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._pending: asyncio.Future[T] | None = None

    def __await__(self) -> Generator[Any, None, T]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._read())
        return self._pending.__await__()


#: A plain field's value: known when the object is built, or read on demand. Plain fields
#: cost graphql-core a getattr; a field with a resolver costs Strawberry an Info, its
#: argument handling and a call chain per node, which on a page of 50 tasks was a tenth
#: of the request.
Later = Union[T, Deferred[T]]  # noqa: UP007 (a generic alias needs Union)

TaskConnectionRef = Annotated["TaskConnection", strawberry.lazy("cloudops.graphql.connections")]
TaskFilterRef = Annotated["TaskFilter", strawberry.lazy("cloudops.graphql.connections")]


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class TaskStep:
    index: int = strawberry.field(description="0-based position in the task's plan.")
    name: str
    status: StepStatus
    progress: float = strawberry.field(description="0.0 to 1.0 within this step.")
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TaskStep:
        return cls(
            index=state["index"],
            name=state["name"],
            status=StepStatus(state["status"]),
            progress=float(state["progress"]),
            message=state.get("message"),
            started_at=_parse(state.get("startedAt")),
            finished_at=_parse(state.get("finishedAt")),
        )


@strawberry.type
class Artifact:
    id: strawberry.ID
    kind: str = strawberry.field(
        description=(
            "deployment_plan (written by DEPLOYMENT) or db_backup (written by DB_BACKUP); "
            "more kinds may be added."
        )
    )
    path: str = strawberry.field(
        description=(
            "Path relative to the data directory, e.g. artifacts/<taskId>/plan.json or "
            "backups/<engine>/<instanceId>/<file>."
        )
    )
    size_bytes: int
    sha256: str = strawberry.field(description="Hex SHA-256 of the stored bytes.")
    created_at: datetime
    task_id: strawberry.ID = strawberry.field(description="The task that produced it.")

    @strawberry.field(
        description=(
            "HTTP path on this server that returns the bytes (same authorization as queries)."
        )
    )
    def url(self) -> str:
        return f"/artifacts/{self.id}"

    @classmethod
    def from_row(cls, row: models.Artifact | ArtifactRecord) -> Artifact:
        return cls(
            id=strawberry.ID(row.id),
            kind=row.kind,
            path=row.path,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            created_at=row.created_at,
            task_id=strawberry.ID(row.task_id),
        )


@strawberry.type
class TaskEvent:
    id: strawberry.ID
    task_id: strawberry.ID
    sequence: int = strawberry.field(
        description="1, 2, 3, ... per task, no gaps, in the order things happened."
    )
    kind: TaskEventKind
    at: datetime
    status: TaskStatus = strawberry.field(
        description=(
            "The task's status and progress right after this event (no extra query needed)."
        )
    )
    progress: float
    entity_id: str
    type: TaskType
    step: TaskStep | None = strawberry.field(
        description=(
            "The step this event is about, as it is right after the event (STEP_* and LOG events)."
        )
    )
    message: str | None
    artifact: Artifact | None

    @classmethod
    def from_record(cls, record: EventRecord) -> TaskEvent:
        return cls(
            id=strawberry.ID(record.id),
            task_id=strawberry.ID(record.task_id),
            sequence=record.sequence,
            kind=TaskEventKind(record.kind),
            at=record.at,
            status=TaskStatus(record.status),
            progress=record.progress,
            entity_id=record.entity_id,
            type=TaskType(record.type),
            step=TaskStep.from_state(record.step) if record.step else None,
            message=record.message,
            artifact=Artifact.from_row(record.artifact) if record.artifact else None,
        )


@strawberry.type
class Project:
    id: strawberry.ID
    name: str
    description: str | None
    teams_webhook_url: str | None
    email_recipients: list[str]
    created_at: datetime
    row: strawberry.Private[models.Project]

    @classmethod
    def from_row(cls, row: models.Project) -> Project:
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            description=row.description,
            teams_webhook_url=row.teams_webhook_url,
            email_recipients=list(row.email_recipients or []),
            created_at=row.created_at,
            row=row,
        )

    @strawberry.field
    async def environments(self, info: Info) -> list[Environment]:
        rows = await info.context.loaders.environments_of_project.load(self.row.id)
        return [Environment.from_row(r) for r in rows]

    @strawberry.field
    async def tasks(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        filter: TaskFilterRef | None = None,
    ) -> TaskConnectionRef:
        from cloudops.graphql.connections import task_connection

        return await task_connection(
            info, first, after, filter, [models.Task.project_id == self.row.id]
        )


@strawberry.type
class Environment:
    id: strawberry.ID
    name: str
    type: EnvironmentType
    ttl_minutes: int | None
    expires_at: datetime | None
    expired: bool
    current_version: str | None = strawberry.field(
        description="Version of the last COMPLETED deployment, null if none."
    )
    created_at: datetime
    row: strawberry.Private[models.Environment]

    @classmethod
    def from_row(cls, row: models.Environment) -> Environment:
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            type=EnvironmentType(row.type),
            ttl_minutes=row.ttl_minutes,
            expires_at=row.expires_at,
            expired=row.expired,
            current_version=row.current_version,
            created_at=row.created_at,
            row=row,
        )

    @strawberry.field
    async def project(self, info: Info) -> Project:
        row = await info.context.loaders.project.load(self.row.project_id)
        return Project.from_row(row)

    @strawberry.field
    async def tasks(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> TaskConnectionRef:
        from cloudops.graphql.connections import task_connection

        return await task_connection(
            info, first, after, None, [models.Task.environment_id == self.row.id]
        )


@strawberry.type
class Task:
    id: strawberry.ID
    type: TaskType
    status: TaskStatus
    entity_id: str = strawberry.field(
        description=(
            "The session key: tasks with the same entityId run one at a time, in the order they "
            "were queued."
        )
    )
    correlation_id: str | None
    idempotency_key: str | None
    attempt: int = strawberry.field(description="1 on the first run, +1 on every retry.")
    max_attempts: int
    run_after: datetime | None = strawberry.field(
        description=("Earliest time a queued task may start (set by retry backoff); null = now.")
    )
    progress: float = strawberry.field(
        description="0.0 to 1.0 over all steps; exactly 1.0 once COMPLETED."
    )
    steps: list[TaskStep]
    input: JSON = strawberry.field(
        description="The validated input of the mutation that created the task."
    )
    metadata: JSON
    error: str | None = strawberry.field(description="Last error message, if any attempt failed.")
    dead_lettered: bool
    cancel_requested: bool = strawberry.field(
        description=(
            "A cancel was asked for while the task was RUNNING; it stops at the next step boundary."
        )
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: Later[int | None] = strawberry.field(
        graphql_type=int | None,
        description=(
            "For a QUEUED task: how many tasks of the same entityId are ahead of it (0 = next). "
            "Null otherwise."
        ),
    )
    project: Later[Project | None] = strawberry.field(graphql_type=Project | None)
    environment: Later[Environment | None] = strawberry.field(graphql_type=Environment | None)
    artifacts: Later[list[Artifact]] = strawberry.field(graphql_type=list[Artifact])
    row: strawberry.Private[models.Task]

    @classmethod
    def from_row(
        cls,
        row: models.Task,
        loaders: Loaders,
        related: TaskRelations = NO_RELATIONS,
        shown: Collection[str] | None = None,
    ) -> Task:
        """``related``: the relations read with a page of tasks; the others are read
        through ``loaders`` if the query selects them. ``shown``: the only fields the
        query selects (None: any), for a row read without the JSON columns of the others,
        which are then left empty."""
        return cls(
            id=strawberry.ID(row.id),
            type=TaskType(row.type),
            status=TaskStatus(row.status),
            entity_id=row.entity_id,
            correlation_id=row.correlation_id,
            idempotency_key=row.idempotency_key,
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            run_after=row.run_after,
            progress=row.progress,
            steps=[TaskStep.from_state(s) for s in row.steps]
            if shown is None or "steps" in shown
            else [],
            input=JSON(row.input if shown is None or "input" in shown else {}),
            metadata=JSON(row.meta if shown is None or "metadata" in shown else {}),
            error=row.error,
            dead_lettered=row.dead_lettered,
            cancel_requested=row.cancel_requested,
            created_at=row.created_at,
            updated_at=row.updated_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            queue_position=_queue_position(row, loaders),
            project=_related(row.project_id, related.projects, Project.from_row, loaders.project),
            environment=_related(
                row.environment_id, related.environments, Environment.from_row, loaders.environment
            ),
            artifacts=_task_artifacts(row, loaders, related),
            row=row,
        )

    @strawberry.field(description="Stored events of this task, oldest first.")
    async def events(
        self, info: Info, after_sequence: int | None = 0, first: int | None = 100
    ) -> list[TaskEvent]:
        from cloudops.graphql.pagination import page_size
        from cloudops.graphql.replay import stored_events

        records = await stored_events(
            info.context.runtime.db, self.row.id, after_sequence or 0, limit=page_size(first)
        )
        return [TaskEvent.from_record(r) for r in records]


@strawberry.type
class Health:
    status: str = strawberry.field(description="ok, or degraded when a dependency check fails.")
    version: str
    database: bool
    bus: str = strawberry.field(
        description="Name of the bus backend in use, e.g. memory or postgres."
    )
    broadcast: str = strawberry.field(
        description="Name of the broadcast backend in use, e.g. memory or redis."
    )
    queued_tasks: int
    running_tasks: int
    broadcast_connected: bool = strawberry.field(
        description="Live events flow: this process is connected to its broadcast backend. "
        "While it is not, status is degraded; tasks still run and every event is stored, "
        "and subscriptions end with BROADCAST_LOST so that clients resume with "
        "afterSequence."
    )


@strawberry.type
class Viewer:
    id: strawberry.ID
    name: str
    role: Role


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _or_none(build: Callable[[RowT], T], row: RowT | None) -> T | None:
    return build(row) if row is not None else None


async def _loaded(build: Callable[[RowT], T], pending: Awaitable[RowT | None]) -> T | None:
    return _or_none(build, await pending)


async def _artifacts(pending: Awaitable[list[models.Artifact]]) -> list[Artifact]:
    return [Artifact.from_row(r) for r in await pending]


def _queue_position(row: models.Task, loaders: Loaders) -> Later[int | None]:
    if row.status != DomainStatus.QUEUED:
        return None
    key = (row.entity_id, row.queue_seq)
    return Deferred(lambda: loaders.queue_position.load(key))


def _related(
    ref_id: str | None,
    read_with_page: Mapping[str, RowT] | None,
    build: Callable[[RowT], T],
    loader: DataLoader[str, RowT | None],
) -> Later[T | None]:
    """A task's project or environment: none, the one read with the page, or read later."""
    if ref_id is None:
        return None
    if read_with_page is not None:
        return _or_none(build, read_with_page.get(ref_id))
    return Deferred(lambda: _loaded(build, loader.load(ref_id)))


def _task_artifacts(
    row: models.Task, loaders: Loaders, related: TaskRelations
) -> Later[list[Artifact]]:
    if related.artifacts is not None:
        return [Artifact.from_row(r) for r in related.artifacts.get(row.id, ())]
    task_id = row.id
    return Deferred(lambda: _artifacts(loaders.artifacts_of_task.load(task_id)))


async def load_task(info: Info, task_id: str) -> models.Task | None:
    async with info.context.runtime.db.read() as session:
        row: models.Task | None = await session.get(models.Task, task_id)
    if row is None or row.organization_id != info.context.viewer.organization_id:
        return None
    return row
