"""DataLoaders: nested fields of a list cost one query per field, not one per row."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from strawberry.dataloader import DataLoader

from cloudops.db.engine import Database
from cloudops.db.models import Artifact, Environment, Project, Task
from cloudops.domain import TaskStatus


class Loaders:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.project = DataLoader[str, Project | None](load_fn=self._projects)
        self.environment = DataLoader[str, Environment | None](load_fn=self._environments)
        self.environments_of_project = DataLoader[str, list[Environment]](
            load_fn=self._environments_of_projects
        )
        self.artifacts_of_task = DataLoader[str, list[Artifact]](load_fn=self._artifacts)
        self.queue_position = DataLoader[tuple[str, int], int](load_fn=self._queue_positions)

    async def _projects(self, ids: Sequence[str]) -> list[Project | None]:
        async with self._db.read() as session:
            rows = (await session.execute(select(Project).where(Project.id.in_(ids)))).scalars()
            found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]

    async def _environments(self, ids: Sequence[str]) -> list[Environment | None]:
        async with self._db.read() as session:
            rows = await session.execute(select(Environment).where(Environment.id.in_(ids)))
            found = {row.id: row for row in rows.scalars()}
        return [found.get(i) for i in ids]

    async def _environments_of_projects(self, ids: Sequence[str]) -> list[list[Environment]]:
        grouped: dict[str, list[Environment]] = defaultdict(list)
        async with self._db.read() as session:
            rows = await session.execute(
                select(Environment)
                .where(Environment.project_id.in_(ids))
                .order_by(Environment.created_at, Environment.id)
            )
            for row in rows.scalars():
                grouped[row.project_id].append(row)
        return [grouped[i] for i in ids]

    async def _artifacts(self, task_ids: Sequence[str]) -> list[list[Artifact]]:
        grouped: dict[str, list[Artifact]] = defaultdict(list)
        async with self._db.read() as session:
            rows = await session.execute(
                select(Artifact)
                .where(Artifact.task_id.in_(task_ids))
                .order_by(Artifact.created_at, Artifact.id)
            )
            for row in rows.scalars():
                grouped[row.task_id].append(row)
        return [grouped[i] for i in task_ids]

    async def _queue_positions(self, keys: Sequence[tuple[str, int]]) -> list[int]:
        """How many QUEUED tasks of the same entity are ahead of each (entity, queue_seq)."""
        entities = {entity for entity, _ in keys}
        queued: dict[str, list[int]] = defaultdict(list)
        async with self._db.read() as session:
            rows = await session.execute(
                select(Task.entity_id, Task.queue_seq).where(
                    Task.entity_id.in_(entities), Task.status == TaskStatus.QUEUED.value
                )
            )
            for entity, seq in rows:
                queued[entity].append(seq)
        return [sum(1 for seq in queued[entity] if seq < mine) for entity, mine in keys]
