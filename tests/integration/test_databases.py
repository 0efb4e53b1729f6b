"""Backups and restores: checksums recorded, corrupted backups refused, real SQLite backups."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import select

from cloudops.db.models import Artifact
from cloudops.domain import TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.conftest import wait_final


async def backup(runtime: Runtime, engine: str, instance: str) -> Artifact:
    result = await runtime.tasks.backup_database(inputs.BackupDatabase(engine, instance))
    assert result.value is not None, result.user_errors
    [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.COMPLETED, task.error
    async with runtime.db.read() as session:
        return (
            await session.execute(select(Artifact).where(Artifact.task_id == task.id))
        ).scalar_one()


async def test_backup_then_restore(runtime: Runtime) -> None:
    artifact = await backup(runtime, "POSTGRES", "orders-1")
    assert artifact.kind == "db_backup"
    assert artifact.path.startswith("backups/postgres/orders-1/") and artifact.path.endswith(
        ".dump"
    )
    restore = await runtime.tasks.restore_database(
        inputs.RestoreDatabase("POSTGRES", "orders-1", artifact.id)
    )
    assert restore.value is not None, restore.user_errors
    [task] = await wait_final(runtime, [restore.value.id])
    assert task.status == TaskStatus.COMPLETED
    assert task.entity_id == "db:postgres:orders-1"


async def test_restore_refuses_a_backup_of_another_instance(runtime: Runtime) -> None:
    artifact = await backup(runtime, "POSTGRES", "orders-1")
    refused = await runtime.tasks.restore_database(
        inputs.RestoreDatabase("POSTGRES", "billing", artifact.id)
    )
    assert [e.field for e in refused.user_errors] == [["input", "artifactId"]]


async def test_restore_refuses_a_corrupted_backup(runtime: Runtime) -> None:
    artifact = await backup(runtime, "MYSQL", "crm")
    path = runtime.settings.data_dir / artifact.path
    # Accepted while intact...
    accepted = await runtime.tasks.restore_database(
        inputs.RestoreDatabase("MYSQL", "crm", artifact.id)
    )
    assert accepted.value is not None
    await wait_final(runtime, [accepted.value.id])
    # ...refused at once after a byte changes.
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    refused = await runtime.tasks.restore_database(
        inputs.RestoreDatabase("MYSQL", "crm", artifact.id)
    )
    assert refused.value is None
    assert "sha256" in refused.user_errors[0].message


async def test_restore_step_fails_without_retry_when_backup_rots_after_queueing(
    runtime_factory: object,
) -> None:
    runtime: Runtime = await runtime_factory(step_delay=0.3)  # type: ignore[operator]
    artifact = await backup(runtime, "SQLSERVER", "erp")
    blocker = await runtime.tasks.backup_database(inputs.BackupDatabase("SQLSERVER", "erp"))
    restore = await runtime.tasks.restore_database(
        inputs.RestoreDatabase("SQLSERVER", "erp", artifact.id)
    )
    assert blocker.value is not None and restore.value is not None
    (runtime.settings.data_dir / artifact.path).write_bytes(b"rotten")
    tasks = {t.id: t for t in await wait_final(runtime, [blocker.value.id, restore.value.id])}
    failed = tasks[restore.value.id]
    assert failed.status == TaskStatus.FAILED and failed.attempt == 1 and failed.dead_lettered
    assert failed.error is not None and "corrupted" in failed.error


async def test_real_sqlite_instance_is_backed_up_and_restored(runtime: Runtime) -> None:
    instance = runtime.settings.data_dir / "instances" / "sqlite" / "inventory.db"
    instance.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(instance) as conn:
        conn.execute("create table items (name text)")
        conn.execute("insert into items values ('widget')")
    conn.close()
    artifact = await backup(runtime, "SQLITE", "inventory")
    with sqlite3.connect(instance) as conn:
        conn.execute("delete from items")
    conn.close()
    result = await runtime.tasks.restore_database(
        inputs.RestoreDatabase("SQLITE", "inventory", artifact.id)
    )
    assert result.value is not None
    [task] = await wait_final(runtime, [result.value.id])
    assert task.status == TaskStatus.COMPLETED
    conn = sqlite3.connect(Path(instance))
    try:
        assert conn.execute("select name from items").fetchall() == [("widget",)]
    finally:
        conn.close()
