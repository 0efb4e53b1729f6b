"""Query, Mutation and Subscription roots, and the schema with its hardening extensions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator

import strawberry
from graphql import GraphQLError, OperationDefinitionNode
from sqlalchemy import func, select
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.permission import BasePermission

from cloudops import __version__
from cloudops.db import models
from cloudops.domain import TaskStatus as DomainStatus
from cloudops.events.hub import Subscription as HubSubscription
from cloudops.events.hub import SubscriptionEnded
from cloudops.events.records import EventRecord
from cloudops.graphql.connections import (
    ProjectConnection,
    TaskConnection,
    TaskFilter,
    project_connection,
    task_connection,
)
from cloudops.graphql.document_cache import DocumentLimits
from cloudops.graphql.errors import MaskUnexpectedErrors, masked_exception
from cloudops.graphql.inputs import (
    BackupDatabaseInput,
    CreateEnvironmentInput,
    CreateProjectInput,
    CreateSandboxInput,
    DeployInput,
    EnvironmentPayload,
    ProjectPayload,
    RestartWorkloadInput,
    RestoreDatabaseInput,
    TaskPayload,
    UserError,
)
from cloudops.graphql.live_outlet import live_outlet
from cloudops.graphql.operation import running_root_fields
from cloudops.graphql.permissions import CanAdminister, CanOperate, CanView
from cloudops.graphql.replay import task_stream
from cloudops.graphql.shared_events import SharedEventExecutor, event_view
from cloudops.graphql.types import (
    Artifact,
    Environment,
    Health,
    Info,
    Project,
    Task,
    TaskEvent,
    Viewer,
    load_task,
)
from cloudops.services import inputs as svc
from cloudops.services.results import Result
from cloudops.settings import Settings

TASK_MUTATIONS = frozenset(
    {"deploy", "backupDatabase", "restoreDatabase", "restartWorkload", "createSandbox"}
)


@strawberry.type
class Query:
    @strawberry.field
    async def health(self, info: Info) -> Health:
        runtime = info.context.runtime
        checked = await runtime.dependencies()
        counts: dict[str, int] = {}
        if checked.database:
            async with runtime.db.read() as session:
                rows = await session.execute(
                    select(models.Task.status, func.count())
                    .where(
                        models.Task.status.in_(
                            [DomainStatus.QUEUED.value, DomainStatus.RUNNING.value]
                        )
                    )
                    .group_by(models.Task.status)
                )
                counts = {status: count for status, count in rows}
        return Health(
            status=checked.status,
            version=__version__,
            database=checked.database,
            bus=runtime.bus.name,
            broadcast=runtime.hub.backend_name,
            queued_tasks=counts.get(DomainStatus.QUEUED.value, 0),
            running_tasks=counts.get(DomainStatus.RUNNING.value, 0),
            broadcast_connected=checked.broadcast_connected,
        )

    @strawberry.field(permission_classes=[CanView])
    def viewer(self, info: Info) -> Viewer:
        v = info.context.viewer
        return Viewer(id=strawberry.ID(v.id), name=v.name, role=v.role)

    @strawberry.field(description="Oldest first.", permission_classes=[CanView])
    async def projects(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> ProjectConnection:
        return await project_connection(info, first, after)

    @strawberry.field(permission_classes=[CanView])
    async def project(self, info: Info, id: strawberry.ID) -> Project | None:
        row = await info.context.loaders.project.load(str(id))
        if row is None or row.organization_id != info.context.viewer.organization_id:
            return None
        return Project.from_row(row)

    @strawberry.field(permission_classes=[CanView])
    async def environment(self, info: Info, id: strawberry.ID) -> Environment | None:
        row = await info.context.loaders.environment.load(str(id))
        if row is None:
            return None
        project = await info.context.loaders.project.load(row.project_id)
        if project is None or project.organization_id != info.context.viewer.organization_id:
            return None
        return Environment.from_row(row)

    @strawberry.field(description="Newest first.", permission_classes=[CanView])
    async def tasks(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        filter: TaskFilter | None = None,
    ) -> TaskConnection:
        return await task_connection(info, first, after, filter)

    @strawberry.field(permission_classes=[CanView])
    async def task(self, info: Info, id: strawberry.ID) -> Task | None:
        row = await load_task(info, str(id))
        return Task.from_row(row, info.context.loaders) if row else None

    @strawberry.field(permission_classes=[CanView])
    async def artifact(self, info: Info, id: strawberry.ID) -> Artifact | None:
        async with info.context.runtime.db.read() as session:
            row = await session.get(models.Artifact, str(id))
        if row is None or await load_task(info, row.task_id) is None:
            return None
        return Artifact.from_row(row)


def _header_key(info: Info) -> str | None:
    """The Idempotency-Key header counts only for a request running one task mutation."""
    key: str | None = info.context.idempotency_key_header
    if key is None or not isinstance(info.operation, OperationDefinitionNode):
        return None
    # Strawberry's Info has no public accessor for the document's fragments.
    fragments = info._raw_info.fragments
    running = running_root_fields(
        info.operation.selection_set, fragments, info.variable_values, TASK_MUTATIONS
    )
    return key if len(running) == 1 else None


def _task_payload(info: Info, result: Result[models.Task]) -> TaskPayload:
    return TaskPayload(
        task=Task.from_row(result.value, info.context.loaders)
        if result.value is not None
        else None,
        user_errors=UserError.of(result.user_errors),
        deduplicated=result.deduplicated,
    )


OPERATE: list[type[BasePermission]] = [CanOperate]


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[CanAdminister])
    async def create_project(self, info: Info, input: CreateProjectInput) -> ProjectPayload:
        result = await info.context.runtime.projects.create_project(
            input.to_service(), info.context.viewer.organization_id
        )
        return ProjectPayload(
            project=Project.from_row(result.value) if result.value else None,
            user_errors=UserError.of(result.user_errors),
        )

    @strawberry.mutation(permission_classes=[CanAdminister])
    async def create_environment(
        self, info: Info, input: CreateEnvironmentInput
    ) -> EnvironmentPayload:
        result = await info.context.runtime.projects.create_environment(input.to_service())
        env = result.value
        return EnvironmentPayload(
            environment=Environment.from_row(env) if env else None,
            user_errors=UserError.of(result.user_errors),
        )

    @strawberry.mutation(permission_classes=OPERATE)
    async def deploy(self, info: Info, input: DeployInput) -> TaskPayload:
        data = svc.Deploy(
            str(input.environment_id), input.version, input.image, input.options(_header_key(info))
        )
        return _task_payload(
            info, await info.context.runtime.tasks.deploy(data, info.context.viewer.organization_id)
        )

    @strawberry.mutation(permission_classes=OPERATE)
    async def backup_database(self, info: Info, input: BackupDatabaseInput) -> TaskPayload:
        data = svc.BackupDatabase(
            input.engine.value, input.instance_id, input.options(_header_key(info))
        )
        return _task_payload(
            info,
            await info.context.runtime.tasks.backup_database(
                data, info.context.viewer.organization_id
            ),
        )

    @strawberry.mutation(permission_classes=OPERATE)
    async def restore_database(self, info: Info, input: RestoreDatabaseInput) -> TaskPayload:
        data = svc.RestoreDatabase(
            input.engine.value,
            input.instance_id,
            str(input.artifact_id),
            input.options(_header_key(info)),
        )
        return _task_payload(
            info,
            await info.context.runtime.tasks.restore_database(
                data, info.context.viewer.organization_id
            ),
        )

    @strawberry.mutation(permission_classes=OPERATE)
    async def restart_workload(self, info: Info, input: RestartWorkloadInput) -> TaskPayload:
        data = svc.RestartWorkload(input.namespace, input.name, input.options(_header_key(info)))
        return _task_payload(
            info,
            await info.context.runtime.tasks.restart_workload(
                data, info.context.viewer.organization_id
            ),
        )

    @strawberry.mutation(permission_classes=OPERATE)
    async def create_sandbox(self, info: Info, input: CreateSandboxInput) -> TaskPayload:
        data = svc.CreateSandbox(
            str(input.project_id), input.name, input.ttl_minutes, input.options(_header_key(info))
        )
        return _task_payload(
            info,
            await info.context.runtime.tasks.create_sandbox(
                data, info.context.viewer.organization_id
            ),
        )

    @strawberry.mutation(
        permission_classes=OPERATE,
        description=(
            "QUEUED: removed from its queue at once. RUNNING: stops at the next step boundary "
            "(or sooner where a step can be interrupted). Final states: userError NOT_CANCELLABLE."
        ),
    )
    async def cancel_task(self, info: Info, id: strawberry.ID) -> TaskPayload:
        return _task_payload(
            info,
            await info.context.runtime.tasks.cancel(str(id), info.context.viewer.organization_id),
        )

    @strawberry.mutation(
        permission_classes=OPERATE,
        description=(
            "FAILED or CANCELLED: queued again at the back of its entity's queue with attempt "
            "reset to 1 and a fresh plan; anything else: userError NOT_RETRYABLE."
        ),
    )
    async def retry_task(self, info: Info, id: strawberry.ID) -> TaskPayload:
        return _task_payload(
            info,
            await info.context.runtime.tasks.retry(str(id), info.context.viewer.organization_id),
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[CanView],
        description=(
            "Events of the tasks that match every given argument (no argument: all tasks), "
            "live.\nWith taskId: if afterSequence is given, first every stored event of that "
            "task with a\nlarger sequence, then the live ones, with no gap and no duplicate; the "
            "stream completes\nafter the task's final event (COMPLETED, FAILED or CANCELLED), at "
            "once if that is stored\nalready. An unknown taskId is an error, not an endless "
            "stream."
        ),
    )
    async def task_events(
        self,
        info: Info,
        task_id: strawberry.ID | None = None,
        entity_id: str | None = None,
        project_id: strawberry.ID | None = None,
        after_sequence: int | None = None,
    ) -> AsyncGenerator[TaskEvent, None]:
        try:
            async with contextlib.AsyncExitStack() as resources:
                stream = await _event_source(
                    info, resources, task_id, entity_id, project_id, after_sequence
                )
                if isinstance(stream, HubSubscription):
                    # The live feed: when the connection takes an outlet, the hub writes
                    # this subscriber's events itself and the loop below waits for the end.
                    outlet = live_outlet(info)
                    if outlet is not None:
                        stream.deliver_directly(outlet)
                async for record in stream:
                    yield event_view(record)
        except SubscriptionEnded as ended:
            # Expected endings (fell behind, broadcast lost, shutdown) say why, unmasked,
            # so the client knows to resubscribe with afterSequence.
            raise GraphQLError(str(ended), extensions={"code": ended.code}) from None
        except (GraphQLError, PermissionError):
            raise
        except Exception as exc:  # e.g. the database went away while replaying
            raise masked_exception(exc) from None


async def _event_source(
    info: Info,
    resources: contextlib.AsyncExitStack,
    task_id: strawberry.ID | None,
    entity_id: str | None,
    project_id: strawberry.ID | None,
    after_sequence: int | None,
) -> AsyncIterable[EventRecord]:
    """The records a taskEvents subscription passes on, after checking its arguments. A
    filter is read straight off the hub's subscription (entered into ``resources``): one
    generator less between the hub and each of a thousand subscribers."""
    runtime = info.context.runtime
    if after_sequence is not None and after_sequence < 0:
        raise GraphQLError(
            "afterSequence: must be 0 or more",
            extensions={"code": "INVALID_INPUT", "field": ["afterSequence"]},
        )
    if task_id is not None:
        row = await load_task(info, str(task_id))
        if row is None:
            raise GraphQLError(
                f"taskId: no task with id {str(task_id)!r}",
                extensions={"code": "NOT_FOUND", "field": ["taskId"]},
            )
        if (entity_id is not None and row.entity_id != entity_id) or (
            project_id is not None and row.project_id != str(project_id)
        ):
            return _nothing()  # no event of this task can match every argument
        return task_stream(runtime.db, runtime.hub, row.id, after_sequence)
    wanted_project = str(project_id) if project_id is not None else None

    def matches(record: EventRecord) -> bool:
        return (entity_id is None or record.entity_id == entity_id) and (
            wanted_project is None or record.project_id == wanted_project
        )

    return await resources.enter_async_context(runtime.hub.subscribe(matches))


async def _nothing() -> AsyncIterator[EventRecord]:
    return
    yield


def build_schema(settings: Settings) -> strawberry.Schema:
    # The limiters' rules are built once: each limiter makes a new rule class per instance,
    # and rules that differ per request would make every validation a cache miss.
    limits = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=SharedEventExecutor,
        extensions=[
            lambda: DocumentLimits(max_tokens=settings.max_tokens, rules=limits),
            MaskUnexpectedErrors,
        ],
    )
