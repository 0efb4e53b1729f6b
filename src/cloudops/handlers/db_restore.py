"""DB_RESTORE: validate artifact (sha256) -> restore -> verify.

A backup whose bytes no longer match the checksum recorded when it was written is refused:
restoring corrupted data is worse than not restoring.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.db.models import Artifact
from cloudops.domain import ArtifactKind, DatabaseEngine, TaskType
from cloudops.errors import PermanentStepError
from cloudops.handlers.base import RetryPolicy, Step, StepContext, TaskView
from cloudops.handlers.db_backup import backup_subject, sqlite_instance_file


class DbRestoreHandler:
    type = TaskType.DB_RESTORE
    retry = RetryPolicy()
    writes_on_completion = False

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def _artifact(self, ctx: StepContext) -> Artifact:
        async with ctx.services.db.read() as session:
            artifact = await session.get(Artifact, ctx.input["artifactId"])
        subject = backup_subject(ctx.input["engine"], ctx.input["instanceId"])
        if artifact is None or artifact.kind != ArtifactKind.DB_BACKUP:
            raise PermanentStepError(f"artifact {ctx.input['artifactId']} is not a backup")
        if artifact.subject != subject:
            raise PermanentStepError(f"artifact {artifact.id} is a backup of another instance")
        return artifact

    async def _validate(self, ctx: StepContext) -> None:
        artifact = await self._artifact(ctx)
        stored = await ctx.services.artifacts.stat(artifact.path)
        if stored is None:
            raise PermanentStepError(f"backup file {artifact.path} is missing")
        if stored.sha256 != artifact.sha256:
            raise PermanentStepError(
                f"backup {artifact.path} is corrupted: sha256 {stored.sha256} "
                f"does not match the recorded {artifact.sha256}"
            )
        await ctx.log(f"artifact {artifact.path} verified (sha256 {artifact.sha256[:12]}…)")
        await ctx.simulate_work(2)

    async def _restore(self, ctx: StepContext) -> None:
        artifact = await self._artifact(ctx)
        engine = DatabaseEngine(ctx.input["engine"])
        target = sqlite_instance_file(self._data_dir, ctx.input["instanceId"])
        if engine is DatabaseEngine.SQLITE and target.exists():
            data = await ctx.services.artifacts.get(artifact.path)
            if hashlib.sha256(data).hexdigest() != artifact.sha256:
                raise PermanentStepError(f"backup {artifact.path} changed while restoring")
            await asyncio.to_thread(_replace_file, target, data)
            await ctx.log(f"restored {target.name} from {artifact.path}")
        else:
            await ctx.log(f"no real instance configured: simulated restore from {artifact.path}")
        await ctx.simulate_work()

    async def _verify(self, ctx: StepContext) -> None:
        await ctx.simulate_work()
        await ctx.log("restore verified")

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        return (
            Step("validate artifact", self._validate),
            Step("restore", self._restore),
            Step("verify", self._verify),
        )

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        return None


def _replace_file(target: Path, data: bytes) -> None:
    tmp = target.with_suffix(".restoring")
    tmp.write_bytes(data)
    shutil.move(tmp, target)
