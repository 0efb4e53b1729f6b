"""Submitting, cancelling and retrying tasks.

A submission is validated in two passes: the shape of the input first (nothing touches the
database while it is malformed), then what needs the database (idempotency, existence of
the things it names). The task and its QUEUED event commit together, and the bus hears of
the task only if they do: on PostgreSQL in the same statement, on SQLite after commit.
Bad input writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.bus.base import InStatement, SessionBus, TaskMessage
from cloudops.db.models import DEFAULT_ORGANIZATION_ID, Artifact, Environment, Project, Task
from cloudops.db.types import new_id, utcnow
from cloudops.domain import (
    ArtifactKind,
    EnvironmentType,
    EventKind,
    StepStatus,
    TaskStatus,
    TaskType,
)
from cloudops.handlers.db_backup import backup_subject
from cloudops.handlers.registry import HandlerRegistry
from cloudops.handlers.sandbox import TEARDOWN
from cloudops.integrations.artifacts import ArtifactStore
from cloudops.services import inputs
from cloudops.services.projects import environment_conflict
from cloudops.services.results import ErrorCode, Result, UserError
from cloudops.services.validation import TTL_MAX_MINUTES, Checker, canonical_json, check_engine
from cloudops.tasks.journal import Guard, Journal, JournalTransaction
from cloudops.tasks.steps import fresh_plan, stamp

Resolver = Callable[[AsyncSession, "Draft"], Awaitable[list[UserError]]]


async def _nothing_to_resolve(_session: AsyncSession, _draft: Draft) -> list[UserError]:
    return []


@dataclass
class Draft:
    """A shape-valid request on its way to becoming a task."""

    type: TaskType
    entity_id: str
    input: dict[str, Any]
    options: inputs.TaskOptions
    resolve: Resolver = _nothing_to_resolve
    project_id: str | None = None
    environment_id: str | None = None
    new_environment: Environment | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_hash(self) -> str:
        identity = {
            "type": self.type.value,
            "input": self.input,
            "correlationId": self.options.correlation_id,
            "metadata": self.options.metadata or {},
        }
        return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


class TaskService:
    def __init__(
        self,
        *,
        journal: Journal,
        bus: SessionBus,
        registry: HandlerRegistry,
        artifacts: ArtifactStore,
    ) -> None:
        self.journal = journal
        self.db = journal.db
        self.bus = bus
        self.registry = registry
        self.artifacts = artifacts
        # Commit and publish happen under one lock, so the in-process bus sees tasks in
        # the order their queue positions were assigned (see _queueing).
        self._enqueue_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _queueing(
        self, *, one_append: bool = False
    ) -> AsyncIterator[tuple[JournalTransaction, list[TaskMessage]]]:
        """A journal transaction; the messages the caller adds reach the bus when it
        commits, in queue-position order. A bus that publishes inside the transaction
        (PostgreSQL: NOTIFY at commit; positions from a sequence under a per-entity lock)
        needs no second transaction and no process-wide lock; the in-process bus is
        published to after commit, under the lock. ``one_append``: see
        Journal.transaction (only with a bus that publishes after commit)."""
        inside = self.bus.publishes_in_transaction
        async with contextlib.nullcontext() if inside else self._enqueue_lock:
            messages: list[TaskMessage] = []
            async with self.journal.transaction(one_append=one_append) as txn:
                yield txn, messages
                if inside:
                    for message in messages:
                        await self.bus.publish_in(txn.session, message)
            if not inside:
                for message in messages:
                    await self.bus.publish(message)

    # -- the five task types ---------------------------------------------------------
    async def deploy(self, data: inputs.Deploy, org: str = DEFAULT_ORGANIZATION_ID) -> Result[Task]:
        check = Checker()
        check.text("environmentId", data.environment_id, max_len=64)
        check.no_whitespace("version", data.version, max_len=128)
        check.no_whitespace("image", data.image, max_len=512)
        check.options(data.options)
        if check.errors:
            return Result.refused(*check.errors)

        async def resolve(session: AsyncSession, draft: Draft) -> list[UserError]:
            env = await session.get(Environment, data.environment_id)
            if env is None or not await _in_org(session, env.project_id, org):
                return [
                    UserError(
                        ["input", "environmentId"],
                        f"no environment with id {data.environment_id!r}",
                        ErrorCode.NOT_FOUND,
                    )
                ]
            if env.expired:
                return [
                    UserError(
                        ["input", "environmentId"],
                        f"environment {env.name!r} has expired",
                        ErrorCode.CONFLICT,
                    )
                ]
            draft.project_id, draft.environment_id = env.project_id, env.id
            return []

        task_input = {
            "environmentId": data.environment_id,
            "version": data.version,
            "image": data.image,
        }
        return await self._submit(
            Draft(TaskType.DEPLOYMENT, data.environment_id, task_input, data.options, resolve), org
        )

    async def backup_database(
        self, data: inputs.BackupDatabase, org: str = DEFAULT_ORGANIZATION_ID
    ) -> Result[Task]:
        check = Checker()
        check_engine(check, data.engine)
        check.instance_id("instanceId", data.instance_id)
        check.options(data.options)
        if check.errors:
            return Result.refused(*check.errors)
        task_input = {"engine": data.engine, "instanceId": data.instance_id}
        entity = backup_subject(data.engine, data.instance_id)
        return await self._submit(Draft(TaskType.DB_BACKUP, entity, task_input, data.options), org)

    async def restore_database(
        self, data: inputs.RestoreDatabase, org: str = DEFAULT_ORGANIZATION_ID
    ) -> Result[Task]:
        check = Checker()
        check_engine(check, data.engine)
        check.instance_id("instanceId", data.instance_id)
        check.text("artifactId", data.artifact_id, max_len=64)
        check.options(data.options)
        if check.errors:
            return Result.refused(*check.errors)
        subject = backup_subject(data.engine, data.instance_id)

        async def resolve(session: AsyncSession, draft: Draft) -> list[UserError]:
            field_path = ["input", "artifactId"]
            artifact = await session.get(Artifact, data.artifact_id)
            if artifact is None:
                return [
                    UserError(
                        field_path, f"no artifact with id {data.artifact_id!r}", ErrorCode.NOT_FOUND
                    )
                ]
            if artifact.kind != ArtifactKind.DB_BACKUP or artifact.subject != subject:
                return [
                    UserError(
                        field_path,
                        f"artifact {artifact.id} is not a backup of "
                        f"{data.engine} instance {data.instance_id!r}",
                    )
                ]
            stored = await self.artifacts.stat(artifact.path)
            if stored is None or stored.sha256 != artifact.sha256:
                return [
                    UserError(
                        field_path,
                        f"backup {artifact.path} no longer matches its "
                        "recorded sha256; it cannot be restored",
                    )
                ]
            return []

        task_input = {
            "engine": data.engine,
            "instanceId": data.instance_id,
            "artifactId": data.artifact_id,
        }
        return await self._submit(
            Draft(TaskType.DB_RESTORE, subject, task_input, data.options, resolve), org
        )

    async def restart_workload(
        self, data: inputs.RestartWorkload, org: str = DEFAULT_ORGANIZATION_ID
    ) -> Result[Task]:
        check = Checker()
        check.dns_label("namespace", data.namespace)
        check.dns_label("name", data.name)
        check.options(data.options)
        if check.errors:
            return Result.refused(*check.errors)
        task_input = {"namespace": data.namespace, "name": data.name}
        entity = f"k8s:{data.namespace}/{data.name}"
        return await self._submit(
            Draft(TaskType.RESTART_WORKLOAD, entity, task_input, data.options), org
        )

    async def create_sandbox(
        self, data: inputs.CreateSandbox, org: str = DEFAULT_ORGANIZATION_ID
    ) -> Result[Task]:
        check = Checker()
        check.text("projectId", data.project_id, max_len=64)
        check.dns_label("name", data.name)
        if not 1 <= data.ttl_minutes <= TTL_MAX_MINUTES:
            check.fail("ttlMinutes", f"must be between 1 and {TTL_MAX_MINUTES} minutes")
        check.options(data.options)
        if check.errors:
            return Result.refused(*check.errors)
        env_id = new_id()

        async def resolve(session: AsyncSession, draft: Draft) -> list[UserError]:
            if not await _in_org(session, data.project_id, org):
                return [
                    UserError(
                        ["input", "projectId"],
                        f"no project with id {data.project_id!r}",
                        ErrorCode.NOT_FOUND,
                    )
                ]
            now = utcnow()
            env = Environment(
                id=env_id,
                project_id=data.project_id,
                name=data.name,
                type=EnvironmentType.SANDBOX.value,
                ttl_minutes=data.ttl_minutes,
                expires_at=now + timedelta(minutes=data.ttl_minutes),
                expired=False,
                created_at=now,
            )
            conflict = await environment_conflict(session, env)
            if conflict is not None:
                return [conflict]
            draft.new_environment = env
            draft.project_id, draft.environment_id = data.project_id, env_id
            return []

        task_input = {
            "projectId": data.project_id,
            "name": data.name,
            "ttlMinutes": data.ttl_minutes,
            "action": "provision",
        }
        draft = Draft(TaskType.SANDBOX, env_id, task_input, data.options, resolve)
        return await self._submit(draft, org)

    async def reap_expired_sandboxes(self, limit: int = 100) -> int:
        """Mark sandboxes past ``expiresAt`` as expired and queue each one's teardown on
        its own session. The conditional update makes it happen once, even with several
        reapers; the teardown's idempotency key makes the task unique too."""
        now = utcnow()
        queued: list[Task] = []
        async with self._queueing() as (txn, messages):
            envs = (
                (
                    await txn.session.execute(
                        select(Environment)
                        .where(
                            Environment.type == EnvironmentType.SANDBOX.value,
                            Environment.expired.is_(False),
                            Environment.expires_at <= now,
                        )
                        .order_by(Environment.expires_at)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
            for env in envs:
                marked = await txn.session.execute(
                    update(Environment)
                    .where(Environment.id == env.id, Environment.expired.is_(False))
                    .values(expired=True)
                    .execution_options(synchronize_session=False)
                )
                if marked.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                project_org = await txn.session.scalar(
                    select(Project.organization_id).where(Project.id == env.project_id)
                )
                draft = Draft(
                    TaskType.SANDBOX,
                    env.id,
                    {"projectId": env.project_id, "name": env.name, "action": TEARDOWN},
                    inputs.TaskOptions(idempotency_key=f"sandbox-teardown:{env.id}"),
                )
                draft.project_id, draft.environment_id = env.project_id, env.id
                org = project_org or DEFAULT_ORGANIZATION_ID
                if await _by_key(txn.session, org, f"sandbox-teardown:{env.id}") is None:
                    task = await self._insert(txn, draft, org)
                    queued.append(task)
                    messages.append(TaskMessage(task.id, task.entity_id, task.queue_seq))
        return len(queued)

    # -- cancel and retry -------------------------------------------------------------
    async def cancel(self, task_id: str, org: str = DEFAULT_ORGANIZATION_ID) -> Result[Task]:
        task = await self.get(task_id, org)
        if task is None:
            return Result.refused(
                UserError(["id"], f"no task with id {task_id!r}", ErrorCode.NOT_FOUND)
            )
        if TaskStatus(task.status).is_final:
            return Result.refused(
                UserError(
                    ["id"],
                    f"task is {task.status}; only QUEUED or RUNNING tasks can be cancelled",
                    ErrorCode.NOT_CANCELLABLE,
                )
            )
        now = utcnow()
        steps = [dict(s) for s in task.steps]
        for step in steps:
            if step["status"] in (StepStatus.PENDING, StepStatus.RUNNING):
                step.update(
                    status=StepStatus.SKIPPED.value, finishedAt=stamp(now), message="cancelled"
                )
        async with self.journal.transaction() as txn:
            cancelled = await txn.append(
                task.id,
                EventKind.CANCELLED,
                Guard({TaskStatus.QUEUED}),
                {
                    "status": TaskStatus.CANCELLED.value,
                    "finished_at": now,
                    "steps": steps,
                    "run_after": None,
                },
                message="cancelled before it started",
                at=now,
            )
            if cancelled is None:
                # It is running (or just finished): ask its worker to stop at the next boundary.
                await txn.session.execute(
                    update(Task)
                    .where(Task.id == task.id, Task.status == TaskStatus.RUNNING.value)
                    .values(cancel_requested=True)
                )
        if cancelled is not None:
            await self.bus.remove(task.id, task.entity_id)
        else:
            await self.bus.request_cancel(task.id)
        fresh = await self.get(task.id, org)
        if (
            fresh is not None
            and TaskStatus(fresh.status).is_final
            and cancelled is None
            and fresh.status != TaskStatus.CANCELLED
        ):
            return Result.refused(
                UserError(
                    ["id"],
                    f"task is {fresh.status}; it finished before it could be cancelled",
                    ErrorCode.NOT_CANCELLABLE,
                )
            )
        return Result(fresh)

    async def retry(self, task_id: str, org: str = DEFAULT_ORGANIZATION_ID) -> Result[Task]:
        task = await self.get(task_id, org)
        if task is None:
            return Result.refused(
                UserError(["id"], f"no task with id {task_id!r}", ErrorCode.NOT_FOUND)
            )
        handler = self.registry.get(task.type)
        names = [step.name for step in handler.plan(task.input)]
        async with self._queueing() as (txn, messages):
            queue_seq = await next_queue_seq(txn.session, task.entity_id)
            requeued = await txn.append(
                task.id,
                EventKind.QUEUED,
                Guard({TaskStatus.FAILED, TaskStatus.CANCELLED}),
                {
                    "status": TaskStatus.QUEUED.value,
                    "attempt": 1,
                    "steps": fresh_plan(names),
                    "progress": 0.0,
                    "dead_lettered": False,
                    "error": None,
                    "run_after": None,
                    "started_at": None,
                    "finished_at": None,
                    "cancel_requested": False,
                    "queue_seq": queue_seq,
                },
                message="queued again by retryTask (attempt 1, fresh plan)",
            )
            if requeued is None:
                return Result.refused(
                    UserError(
                        ["id"],
                        f"task is {task.status}; only FAILED or CANCELLED tasks can be retried",
                        ErrorCode.NOT_RETRYABLE,
                    )
                )
            messages.append(TaskMessage(task.id, task.entity_id, queue_seq))
            # The task as this retry left it: read after commit, a worker may already
            # have started it and the caller would not see its own QUEUED.
            queued = await txn.session.get(Task, task.id, populate_existing=True)
        return Result(queued)

    async def get(self, task_id: str, org: str = DEFAULT_ORGANIZATION_ID) -> Task | None:
        async with self.db.read() as session:
            task = await session.get(Task, task_id)
        return task if task is not None and task.organization_id == org else None

    # -- the shared submission path -----------------------------------------------------
    async def _submit(self, draft: Draft, org: str) -> Result[Task]:
        for _ in range(3):
            try:
                if self.bus.in_statement is not None:
                    return await self._submit_in_statement(draft, org, self.bus.in_statement)
                if not self.bus.publishes_in_transaction:
                    return await self._submit_alone(draft, org)
                return await self._submit_in_transaction(draft, org)
            except IntegrityError:
                if draft.options.idempotency_key is None:
                    raise
                # A concurrent request with the same key won: look again.
        raise RuntimeError("idempotency key conflict did not settle")

    async def _submit_in_transaction(self, draft: Draft, org: str) -> Result[Task]:
        """Checks, task, QUEUED event in one write transaction; the bus hears of it after
        commit (or inside, see _queueing)."""
        async with self._queueing() as (txn, messages):
            refused = await _check(txn.session, draft, org)
            if refused is not None:
                return refused
            task = await self._insert(txn, draft, org)
            messages.append(TaskMessage(task.id, task.entity_id, task.queue_seq, snapshot=task))
        return Result(task)  # exactly the row just committed: no need to read it back

    async def _submit_alone(self, draft: Draft, org: str) -> Result[Task]:
        """SQLite: the checks are reads (as on PostgreSQL, see _submit_in_statement); then
        the task and its QUEUED event are one write in one trip to the database's thread
        (no ORM session), and the bus hears of it after commit, under the lock that keeps
        its messages in queue-position order (see _queueing)."""
        refused = await self._check_by_reading(draft, org)
        if refused is not None:
            return refused
        if draft.new_environment is not None:
            # A draft that adds a row of its own (a sandbox's environment, whose name must
            # be free) is checked again inside the write: nothing can come between that
            # check and the insert.
            draft.new_environment = None
            return await self._submit_in_transaction(draft, org)
        async with self._queueing(one_append=True) as (txn, messages):
            task = await self._insert(txn, draft, org)
            messages.append(TaskMessage(task.id, task.entity_id, task.queue_seq, snapshot=task))
        return Result(task)  # exactly the row just committed: no need to read it back

    async def _submit_in_statement(
        self, draft: Draft, org: str, bus: InStatement[str]
    ) -> Result[Task]:
        """PostgreSQL: the checks are reads; then the task, its QUEUED event, its queue
        position and its bus message are one statement, one round trip in all (a sandbox
        adds its environment row first, in a transaction). The checks need no transaction
        around them: nothing they read is ever deleted, and a duplicate idempotency key
        fails the insert on its unique index (the caller looks again)."""
        refused = await self._check_by_reading(draft, org)
        if refused is not None:
            return refused
        async with self.journal.transaction(one_append=draft.new_environment is None) as txn:
            task = await self._insert(txn, draft, org, bus)
        return Result(task)

    async def _check_by_reading(self, draft: Draft, org: str) -> Result[Task] | None:
        """``_check`` in a read session, outside the write that follows; None when there
        is nothing to read or the submission can go ahead."""
        if not _reads_first(draft):
            return None
        async with self.db.read() as session:
            return await _check(session, draft, org)

    async def _insert(
        self, txn: JournalTransaction, draft: Draft, org: str, bus: InStatement[str] | None = None
    ) -> Task:
        handler = self.registry.get(draft.type)
        names = [step.name for step in handler.plan(draft.input)]
        if draft.new_environment is not None:
            txn.session.add(draft.new_environment)
        now = utcnow()
        task = Task(
            id=new_id(),
            organization_id=org,
            type=draft.type.value,
            status=TaskStatus.QUEUED.value,
            entity_id=draft.entity_id,
            project_id=draft.project_id,
            environment_id=draft.environment_id,
            correlation_id=draft.options.correlation_id,
            idempotency_key=draft.options.idempotency_key,
            input_hash=draft.input_hash,
            attempt=1,
            max_attempts=handler.retry.max_attempts,
            progress=0.0,
            steps=fresh_plan(names),
            input=draft.input,
            meta=draft.options.metadata or {},
            dead_lettered=False,
            cancel_requested=False,
            queue_seq=None,  # the insert numbers it (JournalTransaction.insert)
            last_sequence=0,
            created_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            run_after=None,
            error=None,
        )
        if draft.new_environment is not None:
            await txn.session.flush()  # the environment row first: the task refers to it
        await txn.insert(
            task, EventKind.QUEUED, f"{draft.type.value.lower()} queued on {draft.entity_id}", bus
        )
        return task


def _reads_first(draft: Draft) -> bool:
    """Whether ``_check`` has anything to read (a restart names nothing stored)."""
    return draft.options.idempotency_key is not None or draft.resolve is not _nothing_to_resolve


async def _check(session: AsyncSession, draft: Draft, org: str) -> Result[Task] | None:
    """What a submission needs the database for: an earlier task with its idempotency key
    (the answer then), the things it names; None when it can go ahead."""
    key = draft.options.idempotency_key
    if key is not None:
        existing = await _by_key(session, org, key)
        if existing is not None:
            return _deduplicate(existing, draft)
    errors = await draft.resolve(session, draft)
    return Result.refused(*errors) if errors else None


#: The entity's lock, then the position, in one round trip: the materialized CTE is
#: evaluated before the row it yields reaches nextval.
_LOCKED_NEXTVAL = text("""
WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext(:entity)))
SELECT nextval('task_queue_seq') FROM locked
""")


async def next_queue_seq(session: AsyncSession, entity_id: str) -> int:
    """The next queue position. SQLite has one writer, so max()+1 is safe. On PostgreSQL a
    sequence numbers positions, and a transaction lock per entity makes two concurrent
    submissions to one entity commit in the order of their positions (strict FIFO)."""
    if session.get_bind().dialect.name == "postgresql":
        return int(await session.scalar(_LOCKED_NEXTVAL, {"entity": entity_id}) or 0)
    current = await session.scalar(select(func.max(Task.queue_seq)))
    return int(current or 0) + 1


async def _by_key(session: AsyncSession, org: str, key: str) -> Task | None:
    return (
        await session.execute(
            select(Task).where(Task.organization_id == org, Task.idempotency_key == key)
        )
    ).scalar_one_or_none()


async def _in_org(session: AsyncSession, project_id: str, org: str) -> bool:
    owner = await session.scalar(select(Project.organization_id).where(Project.id == project_id))
    return owner == org


def _deduplicate(existing: Task, draft: Draft) -> Result[Task]:
    if existing.input_hash == draft.input_hash and existing.type == draft.type.value:
        return Result(existing, deduplicated=True)
    return Result.refused(
        UserError(
            ["input", "idempotencyKey"],
            "this idempotencyKey was already used with a different input",
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
        )
    )
