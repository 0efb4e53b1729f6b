"""The contract's input types and the payloads the mutations return."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from cloudops.graphql.enums import DatabaseEngine, EnvironmentType
from cloudops.graphql.types import Environment, Project, Task
from cloudops.services import inputs as svc
from cloudops.services.results import UserError as DomainUserError


@strawberry.type
class UserError:
    field: list[str] = strawberry.field(
        description=(
            'Path to the offending input field, e.g. ["input", "ttlMinutes"]; empty when not '
            "about one field."
        )
    )
    message: str
    code: str = strawberry.field(
        description=(
            "Stable machine-readable code: INVALID_INPUT, NOT_FOUND, CONFLICT, "
            "IDEMPOTENCY_KEY_REUSED, FORBIDDEN, NOT_RETRYABLE, NOT_CANCELLABLE."
        )
    )

    @classmethod
    def of(cls, errors: list[DomainUserError]) -> list[UserError]:
        return [cls(field=e.field, message=e.message, code=e.code.value) for e in errors]


@strawberry.type
class TaskPayload:
    task: Task | None = strawberry.field(description="Null when userErrors is not empty.")
    user_errors: list[UserError]
    deduplicated: bool = strawberry.field(
        description=(
            "True when an earlier task with the same idempotencyKey and the same input was "
            "returned instead of a new one."
        )
    )


@strawberry.type
class ProjectPayload:
    project: Project | None
    user_errors: list[UserError]


@strawberry.type
class EnvironmentPayload:
    environment: Environment | None
    user_errors: list[UserError]


@strawberry.input
class CreateProjectInput:
    name: str
    description: str | None = None
    teams_webhook_url: str | None = None
    email_recipients: list[str] | None = None

    def to_service(self) -> svc.CreateProject:
        return svc.CreateProject(
            self.name, self.description, self.teams_webhook_url, self.email_recipients
        )


@strawberry.input
class CreateEnvironmentInput:
    project_id: strawberry.ID
    name: str
    type: EnvironmentType

    def to_service(self) -> svc.CreateEnvironment:
        return svc.CreateEnvironment(str(self.project_id), self.name, self.type.value)


@strawberry.input
class _TaskInput:
    idempotency_key: str | None = None
    correlation_id: str | None = None
    metadata: JSON | None = None

    def options(self, header_key: str | None) -> svc.TaskOptions:
        key = self.idempotency_key if self.idempotency_key is not None else header_key
        return svc.TaskOptions(key, self.correlation_id, self.metadata)


@strawberry.input(description="entityId = environmentId.")
class DeployInput(_TaskInput):
    environment_id: strawberry.ID
    version: str
    image: str | None = None


@strawberry.input(
    description=(
        "entityId = db:<engine lowercased>:<instanceId>; backups and restores of one instance "
        "therefore serialize."
    )
)
class BackupDatabaseInput(_TaskInput):
    engine: DatabaseEngine
    instance_id: str


@strawberry.input(
    description=(
        "artifactId must name a db_backup artifact of the same engine and instanceId, whose "
        "bytes still match its sha256."
    )
)
class RestoreDatabaseInput(_TaskInput):
    engine: DatabaseEngine
    instance_id: str
    artifact_id: strawberry.ID


@strawberry.input(description="entityId = k8s:<namespace>/<name>.")
class RestartWorkloadInput(_TaskInput):
    namespace: str
    name: str


@strawberry.input(
    description=(
        "Creates an Environment of type SANDBOX at once (expiresAt = now + ttlMinutes); "
        "entityId = that environment's id. ttlMinutes: 1 to 10080."
    )
)
class CreateSandboxInput(_TaskInput):
    project_id: strawberry.ID
    name: str
    ttl_minutes: int
