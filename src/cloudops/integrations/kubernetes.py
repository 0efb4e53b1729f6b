"""The Kubernetes client interface and the simulated cluster of the embedded default.

A rollout restart sets the pod template annotation ``kubectl.kubernetes.io/restartedAt``.
We set it to a token unique to the task, so a retried attempt can see that its restart
already happened and not roll the workload out twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from cloudops.db.engine import Database
from cloudops.db.models import SimulatedWorkload


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    name: str
    restarted_at: str | None
    generation: int


class KubernetesClient(Protocol):
    name: str

    async def get_workload(self, namespace: str, name: str) -> Workload:
        """The Deployment, or LookupError when it does not exist."""

    async def restart(self, namespace: str, name: str, token: str) -> bool:
        """Roll the workload out with restartedAt = token; False when it already was."""


class SimulatedKubernetes:
    """A cluster kept in the control plane's own database: every workload exists."""

    name = "simulated"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_workload(self, namespace: str, name: str) -> Workload:
        async with self._db.write() as session:
            row = await session.get(SimulatedWorkload, (namespace, name))
            if row is None:
                row = SimulatedWorkload(namespace=namespace, name=name, generation=1)
                session.add(row)
                await session.flush()
            return Workload(namespace, name, row.restarted_at, row.generation)

    async def restart(self, namespace: str, name: str, token: str) -> bool:
        async with self._db.write() as session:
            row = (
                await session.execute(
                    select(SimulatedWorkload)
                    .where(SimulatedWorkload.namespace == namespace, SimulatedWorkload.name == name)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if row is None:
                row = SimulatedWorkload(namespace=namespace, name=name, generation=1)
                session.add(row)
            if row.restarted_at == token:
                return False
            row.restarted_at = token
            row.generation += 1
            return True
