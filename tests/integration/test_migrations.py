"""Migrations equal models: upgrade head on an empty database leaves nothing to autogenerate."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from cloudops.db.engine import Database
from cloudops.db.migrate import migrate
from cloudops.db.models import Base


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_head_then_autogenerate_finds_nothing(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate(db)
        await migrate(db)  # idempotent
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(_diff)
        assert diff == []
    finally:
        await db.dispose()
