"""ORM models. The database is the source of truth: the bus only schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cloudops.db.types import JSONType, UTCDateTime, new_id, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_ORGANIZATION_ID = "00000000-0000-0000-0000-000000000001"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organization(Base):
    """Tenant boundary; the embedded default has exactly one."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    teams_webhook_url: Mapped[str | None] = mapped_column(String(2048))
    email_recipients: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(16))
    ttl_minutes: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    current_version: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Task(Base):
    """One operation.

    ``last_sequence`` numbers its events; ``queue_seq`` orders its entity's queue.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("organization_id", "idempotency_key"),
        Index("ix_tasks_entity_queue", "entity_id", "status", "queue_seq"),
        Index("ix_tasks_status_queue", "status", "queue_seq"),
        Index("ix_tasks_created", "created_at", "id"),
        # The task list: one organization's tasks, newest first, without a sort.
        Index("ix_tasks_org_created", "organization_id", "created_at", "id"),
        Index("ix_tasks_queue_seq", "queue_seq", unique=True),
        # The PostgreSQL bus walks the active tasks in queue order to claim the next head.
        Index(
            "ix_tasks_active_queue",
            "queue_seq",
            postgresql_where=text("status IN ('QUEUED', 'RUNNING')"),
            sqlite_where=text("status IN ('QUEUED', 'RUNNING')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), index=True)
    environment_id: Mapped[str | None] = mapped_column(ForeignKey("environments.id"), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    input_hash: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    input: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    dead_lettered: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    queue_seq: Mapped[int] = mapped_column(BigInteger)
    last_sequence: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_kind_subject", "kind", "subject"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: What the artifact is of, e.g. ``db:postgres:orders-1`` for a backup; lets a restore
    #: check that the artifact belongs to the instance it is asked to restore.
    subject: Mapped[str | None] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TaskEvent(Base):
    """An append-only record; a row carries every field the API's TaskEvent exposes."""

    __tablename__ = "task_events"
    __table_args__ = (UniqueConstraint("task_id", "sequence"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float)
    entity_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    project_id: Mapped[str | None] = mapped_column(String(36))
    step: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    message: Mapped[str | None] = mapped_column(Text)
    artifact_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))


class SimulatedWorkload(Base):
    """State of the simulated Kubernetes cluster (the embedded default has no real one).

    ``restarted_at`` mirrors the ``kubectl.kubernetes.io/restartedAt`` pod-template
    annotation; ``generation`` counts real rollouts so tests can prove none happened twice.
    """

    __tablename__ = "sim_workloads"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    restarted_at: Mapped[str | None] = mapped_column(String(100))
    generation: Mapped[int] = mapped_column(Integer, default=0)


class BusSession(Base):
    """A lease on one entity's queue for the PostgreSQL bus (the tasks table is the queue).

    ``fence`` grows on every claim: a worker's writes are conditional on its own
    (owner, fence), so one whose lease expired and was taken over cannot write again.
    """

    __tablename__ = "bus_sessions"

    entity_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    # The task the holder was handed: the one in flight. Not derivable from queue order,
    # since a task with a lower queue_seq can be requeued while a later one runs.
    task_id: Mapped[str | None] = mapped_column(String(36))
