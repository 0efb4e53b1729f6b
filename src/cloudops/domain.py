"""The vocabulary of the control plane: task types, statuses and event kinds.

Every status string in the code base comes from here. The task state machine
(docs/architecture.md draws it):

    QUEUED -> RUNNING -> COMPLETED | FAILED | CANCELLED
    RUNNING -> QUEUED          (attempt failed and will be retried, or the worker died)
    QUEUED -> CANCELLED        (cancelled before it started)
    FAILED | CANCELLED -> QUEUED  (retryTask: back of the queue, attempt 1, fresh plan)
"""

from __future__ import annotations

from enum import StrEnum


class TaskType(StrEnum):
    DEPLOYMENT = "DEPLOYMENT"
    DB_BACKUP = "DB_BACKUP"
    DB_RESTORE = "DB_RESTORE"
    RESTART_WORKLOAD = "RESTART_WORKLOAD"
    SANDBOX = "SANDBOX"


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class EventKind(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    STEP_STARTED = "STEP_STARTED"
    STEP_PROGRESS = "STEP_PROGRESS"
    STEP_COMPLETED = "STEP_COMPLETED"
    STEP_FAILED = "STEP_FAILED"
    LOG = "LOG"
    ARTIFACT = "ARTIFACT"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in {EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED}


class EnvironmentType(StrEnum):
    SANDBOX = "SANDBOX"
    DEV = "DEV"
    STAGE = "STAGE"
    PROD = "PROD"


class DatabaseEngine(StrEnum):
    POSTGRES = "POSTGRES"
    MYSQL = "MYSQL"
    SQLSERVER = "SQLSERVER"
    SQLITE = "SQLITE"


class ArtifactKind(StrEnum):
    DEPLOYMENT_PLAN = "deployment_plan"
    DB_BACKUP = "db_backup"


class Role(StrEnum):
    """What a viewer may do: VIEWER reads, OPERATOR also runs tasks, ADMIN also configures."""

    VIEWER = "VIEWER"
    OPERATOR = "OPERATOR"
    ADMIN = "ADMIN"

    def allows(self, needed: Role) -> bool:
        order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)
