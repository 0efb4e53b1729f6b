"""Connections with opaque keyset cursors and totalCount; the task filter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlalchemy.sql.base import ExecutableOption
from strawberry.types.nodes import SelectedField

from cloudops.db import models
from cloudops.graphql.enums import TaskStatus, TaskType
from cloudops.graphql.loaders import TaskRelations
from cloudops.graphql.pagination import decode_cursor, encode_cursor, page_size
from cloudops.graphql.types import Deferred, Info, Later, PageInfo, Project, Task

RowT = TypeVar("RowT", models.Task, models.Project)


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
    total_count: Later[int] = strawberry.field(graphql_type=int)


@strawberry.type
class ProjectEdge:
    cursor: str
    node: Project


@strawberry.type
class ProjectConnection:
    edges: list[ProjectEdge]
    page_info: PageInfo
    total_count: Later[int] = strawberry.field(graphql_type=int)


def _fields(selections: list[Any]) -> Iterator[SelectedField]:
    """The fields of a selection set, those of its fragments (spread or inline) included."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        else:
            yield from _fields(selection.selections)


def _asks_for(info: Info, name: str) -> bool:
    """Whether the connection's own selection has the field ``name``."""
    return any(f.name == name for field in info.selected_fields for f in _fields(field.selections))


def _node_fields(info: Info) -> set[str]:
    """The names of the fields the query asks of the connection's nodes."""
    return {
        f.name
        for field in info.selected_fields
        for edges in _fields(field.selections)
        if edges.name == "edges"
        for node in _fields(edges.selections)
        if node.name == "node"
        for f in _fields(node.selections)
    }


@dataclass(frozen=True, slots=True)
class _Window:
    """The page asked for, checked before anything is read or counted: a refused
    ``first`` or ``after`` starts no count on a connection of its own."""

    size: int
    #: The sort key of the row the page starts after.
    after: tuple[datetime, str] | None

    @classmethod
    def of(cls, first: int | None, after: str | None) -> _Window:
        return cls(page_size(first), decode_cursor(after) if after is not None else None)


@dataclass(frozen=True, slots=True)
class _Page(Generic[RowT]):
    rows: list[RowT]
    has_next_page: bool


def _total_count(info: Info, model: type[RowT], conditions: list[Any]) -> Later[int]:
    """The rows matching ``conditions``, if the query asks (a count grows with the table).
    Counted on a connection of its own, started now: the count runs beside the page's
    reads and the completion of its nodes (in SQLite's thread or on the server), instead
    of after them; with 100,000 tasks it is the slowest statement of the page."""
    if not _asks_for(info, "totalCount"):
        return 0

    async def count() -> int:
        async with info.context.runtime.db.read() as session:
            counted = select(func.count()).select_from(model).where(*conditions)
            return int(await session.scalar(counted) or 0)

    counting = asyncio.ensure_future(count())
    # A request that fails or goes away before the field is completed leaves the count
    # unawaited: its outcome is collected here, not reported as never retrieved.
    counting.add_done_callback(_collected)
    return Deferred(lambda: counting)


def _collected(done: asyncio.Future[int]) -> None:
    if not done.cancelled():
        done.exception()


#: A task's JSON columns, by the node field that shows each: a page of nodes that does not
#: show one does not read it (decoding them was a tenth of a dashboard page's CPU).
_JSON_FIELDS = {
    "steps": models.Task.steps,
    "input": models.Task.input,
    "metadata": models.Task.meta,
}


async def _keyset_page(
    session: AsyncSession,
    model: type[RowT],
    conditions: list[Any],
    window: _Window,
    *,
    newest_first: bool,
    options: Sequence[ExecutableOption] = (),
) -> _Page[RowT]:
    """One page ordered by (created_at, id), after the window's row."""
    size = window.size
    created: Any = model.created_at
    row_id: Any = model.id
    page_conditions = list(conditions)
    if window.after is not None:
        at, last_id = window.after
        if newest_first:
            page_conditions.append(or_(created < at, and_(created == at, row_id < last_id)))
        else:
            page_conditions.append(or_(created > at, and_(created == at, row_id > last_id)))
    order = (created.desc(), row_id.desc()) if newest_first else (created, row_id)
    result = await session.execute(
        select(model).where(*page_conditions).order_by(*order).limit(size + 1).options(*options)
    )
    rows = list(result.scalars())
    return _Page(rows[:size], len(rows) > size)


def _page_info(cursors: list[str], has_next_page: bool) -> PageInfo:
    return PageInfo(has_next_page=has_next_page, end_cursor=cursors[-1] if cursors else None)


async def task_connection(
    info: Info,
    first: int | None,
    after: str | None,
    task_filter: TaskFilter | None,
    scope: list[ColumnElement[bool]] | None = None,
) -> TaskConnection:
    """Newest first: ordered by (createdAt, id) descending."""
    conditions: list[Any] = [models.Task.organization_id == info.context.viewer.organization_id]
    conditions += scope or []
    if task_filter is not None:
        conditions += task_filter.conditions()
    window = _Window.of(first, after)
    total = _total_count(info, models.Task, conditions)
    shown = _node_fields(info)
    # Not read at all (an access would raise, not read them one row at a time).
    unread = [defer(c, raiseload=True) for name, c in _JSON_FIELDS.items() if name not in shown]
    async with info.context.runtime.db.read() as session:
        page = await _keyset_page(
            session, models.Task, conditions, window, newest_first=True, options=unread
        )
        related = await TaskRelations.read(session, page.rows, shown)
    edges = [
        TaskEdge(
            cursor=encode_cursor(r.created_at, r.id),
            node=Task.from_row(r, info.context.loaders, related, shown=shown),
        )
        for r in page.rows
    ]
    return TaskConnection(
        edges=edges,
        total_count=total,
        page_info=_page_info([e.cursor for e in edges], page.has_next_page),
    )


async def project_connection(info: Info, first: int | None, after: str | None) -> ProjectConnection:
    """Oldest first: ordered by (createdAt, id) ascending."""
    conditions: list[Any] = [models.Project.organization_id == info.context.viewer.organization_id]
    window = _Window.of(first, after)
    total = _total_count(info, models.Project, conditions)
    async with info.context.runtime.db.read() as session:
        page = await _keyset_page(session, models.Project, conditions, window, newest_first=False)
    edges = [
        ProjectEdge(cursor=encode_cursor(r.created_at, r.id), node=Project.from_row(r))
        for r in page.rows
    ]
    return ProjectConnection(
        edges=edges,
        total_count=total,
        page_info=_page_info([e.cursor for e in edges], page.has_next_page),
    )
