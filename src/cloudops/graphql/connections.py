"""Connections with opaque keyset cursors and totalCount; the task filter."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy import ColumnElement, and_, func, or_, select

from cloudops.db import models
from cloudops.graphql.enums import TaskStatus, TaskType
from cloudops.graphql.pagination import decode_cursor, encode_cursor, page_size
from cloudops.graphql.types import Info, PageInfo, Project, Task


@strawberry.input
class TaskFilter:
    status: list[TaskStatus] | None = None
    type: list[TaskType] | None = None
    entity_id: str | None = None
    project_id: strawberry.ID | None = None
    dead_lettered: bool | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.status is not None:
            found.append(models.Task.status.in_([s.value for s in self.status]))
        if self.type is not None:
            found.append(models.Task.type.in_([t.value for t in self.type]))
        if self.entity_id is not None:
            found.append(models.Task.entity_id == self.entity_id)
        if self.project_id is not None:
            found.append(models.Task.project_id == str(self.project_id))
        if self.dead_lettered is not None:
            found.append(models.Task.dead_lettered.is_(self.dead_lettered))
        return found


@strawberry.type
class TaskEdge:
    cursor: str
    node: Task


@strawberry.type
class TaskConnection:
    edges: list[TaskEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class ProjectEdge:
    cursor: str
    node: Project


@strawberry.type
class ProjectConnection:
    edges: list[ProjectEdge]
    page_info: PageInfo
    total_count: int


async def task_connection(
    info: Info,
    first: int | None,
    after: str | None,
    task_filter: TaskFilter | None,
    scope: list[ColumnElement[bool]] | None = None,
) -> TaskConnection:
    """Newest first: ordered by (createdAt, id) descending."""
    size = page_size(first)
    T = models.Task
    conditions: list[Any] = [T.organization_id == info.context.viewer.organization_id]
    conditions += scope or []
    if task_filter is not None:
        conditions += task_filter.conditions()
    page_conditions = list(conditions)
    if after is not None:
        at, last_id = decode_cursor(after)
        page_conditions.append(or_(T.created_at < at, and_(T.created_at == at, T.id < last_id)))
    async with info.context.runtime.db.read() as session:
        rows = list(
            (
                await session.execute(
                    select(T)
                    .where(*page_conditions)
                    .order_by(T.created_at.desc(), T.id.desc())
                    .limit(size + 1)
                )
            ).scalars()
        )
        total = await session.scalar(select(func.count()).select_from(T).where(*conditions))
    edges = [
        TaskEdge(cursor=encode_cursor(r.created_at, r.id), node=Task.from_row(r))
        for r in rows[:size]
    ]
    return TaskConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > size, end_cursor=edges[-1].cursor if edges else None
        ),
        total_count=int(total or 0),
    )


async def project_connection(info: Info, first: int | None, after: str | None) -> ProjectConnection:
    """Oldest first: ordered by (createdAt, id) ascending."""
    size = page_size(first)
    P = models.Project
    conditions: list[Any] = [P.organization_id == info.context.viewer.organization_id]
    page_conditions = list(conditions)
    if after is not None:
        at, last_id = decode_cursor(after)
        page_conditions.append(or_(P.created_at > at, and_(P.created_at == at, P.id > last_id)))
    async with info.context.runtime.db.read() as session:
        rows = list(
            (
                await session.execute(
                    select(P).where(*page_conditions).order_by(P.created_at, P.id).limit(size + 1)
                )
            ).scalars()
        )
        total = await session.scalar(select(func.count()).select_from(P).where(*conditions))
    edges = [
        ProjectEdge(cursor=encode_cursor(r.created_at, r.id), node=Project.from_row(r))
        for r in rows[:size]
    ]
    return ProjectConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > size, end_cursor=edges[-1].cursor if edges else None
        ),
        total_count=int(total or 0),
    )
