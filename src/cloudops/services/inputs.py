"""The inputs of the mutations, as plain values (the GraphQL layer converts to these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """What every task-creating input takes."""

    idempotency_key: str | None = None
    correlation_id: str | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class CreateProject:
    name: str
    description: str | None = None
    teams_webhook_url: str | None = None
    email_recipients: list[str] | None = None


@dataclass(frozen=True, slots=True)
class CreateEnvironment:
    project_id: str
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Deploy:
    environment_id: str
    version: str
    image: str | None = None
    options: TaskOptions = TaskOptions()


@dataclass(frozen=True, slots=True)
class BackupDatabase:
    engine: str
    instance_id: str
    options: TaskOptions = TaskOptions()


@dataclass(frozen=True, slots=True)
class RestoreDatabase:
    engine: str
    instance_id: str
    artifact_id: str
    options: TaskOptions = TaskOptions()


@dataclass(frozen=True, slots=True)
class RestartWorkload:
    namespace: str
    name: str
    options: TaskOptions = TaskOptions()


@dataclass(frozen=True, slots=True)
class CreateSandbox:
    project_id: str
    name: str
    ttl_minutes: int
    options: TaskOptions = TaskOptions()
