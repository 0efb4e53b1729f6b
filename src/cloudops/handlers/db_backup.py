"""DB_BACKUP: prepare -> stream to storage -> verify checksum.

The backup path is derived from the task (its creation time), not from the clock at run
time, so a retried attempt writes the same file instead of a second backup. An SQLite
instance whose file exists under ``<data>/instances/sqlite/<instanceId>.db`` is backed up
for real with the SQLite online backup API; other engines produce simulated content.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.domain import ArtifactKind, DatabaseEngine, TaskType
from cloudops.errors import StepError
from cloudops.handlers.base import RetryPolicy, Step, StepContext, TaskView

EXTENSIONS = {
    DatabaseEngine.POSTGRES: "dump",
    DatabaseEngine.MYSQL: "sql",
    DatabaseEngine.SQLSERVER: "bak",
    DatabaseEngine.SQLITE: "sqlite",
}


def backup_subject(engine: str, instance_id: str) -> str:
    return f"db:{engine.lower()}:{instance_id}"


def backup_path(task: TaskView) -> str:
    engine = DatabaseEngine(task.input["engine"])
    stamp = task.created_at.strftime("%Y%m%dT%H%M%S%fZ")
    return f"backups/{engine.value.lower()}/{task.input['instanceId']}/{stamp}.{EXTENSIONS[engine]}"


def sqlite_instance_file(data_dir: Path, instance_id: str) -> Path:
    return data_dir / "instances" / "sqlite" / f"{instance_id}.db"


def _sqlite_backup_bytes(source: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "backup.db"
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return target.read_bytes()


def _simulated_dump(task: TaskView) -> bytes:
    header = json.dumps(
        {"engine": task.input["engine"], "instanceId": task.input["instanceId"], "task": task.id}
    ).encode()
    # Deterministic filler so that every attempt produces the same bytes.
    seed = hashlib.sha256(task.id.encode()).digest()
    body = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(2048))
    return b"-- simulated backup\n" + header + b"\n" + body


class DbBackupHandler:
    type = TaskType.DB_BACKUP
    retry = RetryPolicy()
    writes_on_completion = False

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def _prepare(self, ctx: StepContext) -> None:
        await ctx.log(f"preparing backup of {ctx.input['engine']} {ctx.input['instanceId']}")
        await ctx.simulate_work()

    async def _stream(self, ctx: StepContext) -> None:
        engine = DatabaseEngine(ctx.input["engine"])
        source = sqlite_instance_file(self._data_dir, ctx.input["instanceId"])
        if engine is DatabaseEngine.SQLITE and source.exists():
            data = await asyncio.to_thread(_sqlite_backup_bytes, source)
            await ctx.log(f"online backup of {source.name} ({len(data)} bytes)")
        else:
            data = _simulated_dump(ctx.task)
            await ctx.log("no real instance configured: writing simulated dump")
        await ctx.simulate_work()
        await ctx.write_artifact(
            ArtifactKind.DB_BACKUP,
            backup_path(ctx.task),
            data,
            subject=backup_subject(engine.value, ctx.input["instanceId"]),
        )

    async def _verify(self, ctx: StepContext) -> None:
        path = backup_path(ctx.task)
        stored = await ctx.services.artifacts.stat(path)
        async with ctx.services.db.read() as session:
            from sqlalchemy import select

            from cloudops.db.models import Artifact

            recorded = (
                await session.execute(select(Artifact.sha256).where(Artifact.path == path))
            ).scalar_one_or_none()
        if stored is None or recorded is None or stored.sha256 != recorded:
            raise StepError(f"backup {path} does not match its recorded checksum")
        await ctx.log(f"sha256 {stored.sha256} verified")
        await ctx.simulate_work(2)

    def plan(self, task_input: dict[str, Any]) -> Sequence[Step]:
        return (
            Step("prepare", self._prepare),
            Step("stream to storage", self._stream),
            Step("verify checksum", self._verify),
        )

    async def on_completed(self, session: AsyncSession, task: TaskView) -> None:
        return None
