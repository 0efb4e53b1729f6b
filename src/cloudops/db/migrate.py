"""Run the Alembic migrations from code, so ``cloudops serve`` migrates itself at start.

A database already at the newest revision, with its default organization, is only read:
Alembic (about 0.7 s of imports and script parsing per process) is loaded only when
there is something to do. ``HEAD_REVISION`` names that newest revision; a test checks it
against Alembic's own head, so a new migration cannot be forgotten here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection

from cloudops.db.engine import Database
from cloudops.db.models import DEFAULT_ORGANIZATION_ID, Organization

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

#: The newest migration in ``migrations/versions`` (tests/integration/test_migrations.py).
HEAD_REVISION = "0005"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _up_to_date(connection: Connection) -> bool:
    """At the newest revision, with the default organization: nothing to write."""
    if not inspect(connection).has_table("alembic_version"):
        return False
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    if list(versions) != [HEAD_REVISION]:
        return False
    return _has_default_organization(connection)


def _has_default_organization(connection: Connection) -> bool:
    found = connection.execute(
        select(Organization.id).where(Organization.id == DEFAULT_ORGANIZATION_ID)
    ).first()
    return found is not None


def _upgrade(connection: Connection) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Several processes may start at once; one migrates, the others wait for it.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7735420113)")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _ensure_default_organization(connection: Connection) -> None:
    # Inside the migration transaction, so under the same lock: processes starting at once
    # must not both see it missing and both insert it (the second would fail on the key).
    if not _has_default_organization(connection):
        connection.execute(insert(Organization).values(id=DEFAULT_ORGANIZATION_ID, name="default"))


async def migrate(database: Database) -> None:
    """Bring the schema to head and make sure the default organization exists."""
    async with database.engine.connect() as conn:
        if await conn.run_sync(_up_to_date):
            return
    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade)
        await conn.run_sync(_ensure_default_organization)
