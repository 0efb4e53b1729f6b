"""Run the Alembic migrations from code, so ``cloudops serve`` migrates itself at start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from cloudops.db.engine import Database
from cloudops.db.models import DEFAULT_ORGANIZATION_ID, Organization

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several processes may start at once; one migrates, the others wait for it.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7735420113)")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _ensure_default_organization(connection: Connection) -> None:
    # Inside the migration transaction, so under the same lock: processes starting at once
    # must not both see it missing and both insert it (the second would fail on the key).
    row = connection.execute(
        select(Organization.id).where(Organization.id == DEFAULT_ORGANIZATION_ID)
    ).first()
    if row is None:
        connection.execute(insert(Organization).values(id=DEFAULT_ORGANIZATION_ID, name="default"))


async def migrate(database: Database) -> None:
    """Bring the schema to head and make sure the default organization exists."""
    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade)
        await conn.run_sync(_ensure_default_organization)
