"""Which handler runs which task type."""

from __future__ import annotations

from pathlib import Path

from cloudops.handlers.base import Handler
from cloudops.handlers.db_backup import DbBackupHandler
from cloudops.handlers.db_restore import DbRestoreHandler
from cloudops.handlers.deployment import DeploymentHandler
from cloudops.handlers.restart_workload import RestartWorkloadHandler
from cloudops.handlers.sandbox import SandboxHandler


class HandlerRegistry:
    def __init__(self, handlers: list[Handler]) -> None:
        self._handlers: dict[str, Handler] = {h.type.value: h for h in handlers}

    def get(self, task_type: str) -> Handler:
        try:
            return self._handlers[task_type]
        except KeyError:
            raise LookupError(f"no handler for task type {task_type}") from None

    def register(self, handler: Handler) -> None:
        self._handlers[handler.type.value] = handler


def default_registry(data_dir: Path) -> HandlerRegistry:
    return HandlerRegistry(
        [
            DeploymentHandler(),
            DbBackupHandler(data_dir),
            DbRestoreHandler(data_dir),
            RestartWorkloadHandler(),
            SandboxHandler(),
        ]
    )
