"""The contract's enums are the domain enums, registered with Strawberry (one source of truth)."""

from __future__ import annotations

import strawberry

from cloudops import domain

for _enum, _name in (
    (domain.TaskType, "TaskType"),
    (domain.TaskStatus, "TaskStatus"),
    (domain.StepStatus, "StepStatus"),
    (domain.EventKind, "TaskEventKind"),
    (domain.EnvironmentType, "EnvironmentType"),
    (domain.DatabaseEngine, "DatabaseEngine"),
    (domain.Role, "Role"),
):
    strawberry.enum(_enum, name=_name)

TaskType = domain.TaskType
TaskStatus = domain.TaskStatus
StepStatus = domain.StepStatus
TaskEventKind = domain.EventKind
EnvironmentType = domain.EnvironmentType
DatabaseEngine = domain.DatabaseEngine
Role = domain.Role
