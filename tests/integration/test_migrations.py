"""Migrations equal models: upgrade head on an empty database leaves nothing to autogenerate.

On SQLite and on PostgreSQL (an empty database, not the migrated test template). On
PostgreSQL, several processes may start at once on a new database: ``migrate()`` must be
idempotent and safe to run concurrently (an advisory lock serializes the upgrades).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from cloudops.bus.postgres import PostgresSessionBus
from cloudops.db.engine import Database
from cloudops.db.migrate import HEAD_REVISION, alembic_config, migrate
from cloudops.db.models import DEFAULT_ORGANIZATION_ID, Base, BusSession, Organization, Task
from tests import pg

#: New databases the concurrency test migrates. Whether two starters collide depends on
#: timing; the test after it makes them collide every time.
ROUNDS = 3


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _head(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def schema_state(db: Database) -> tuple[list[object], str | None, list[str]]:
    """(autogenerate diff, alembic revision, organization ids)."""
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
        head = await conn.run_sync(_head)
    async with db.read() as session:
        orgs = list((await session.execute(select(Organization.id))).scalars())
    return diff, head, orgs


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


def test_head_revision_is_alembics_head() -> None:
    """migrate() skips Alembic on a database at HEAD_REVISION: it must be the newest."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [HEAD_REVISION], f"set HEAD_REVISION in db/migrate.py to {heads}"


async def test_a_database_at_head_starts_without_alembic_and_a_missing_part_is_mended(
    tmp_path: Path,
) -> None:
    """A start on an up-to-date database only reads it (in a fresh process: Alembic is
    not even imported); one whose default organization is gone takes the full path and
    gets it back."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    db = Database(url)
    try:
        await migrate(db)
    finally:
        await db.dispose()
    script = (
        "import asyncio, sys\n"
        "from cloudops.db.engine import Database\n"
        "from cloudops.db.migrate import migrate\n"
        "async def main():\n"
        f"    db = Database({url!r})\n"
        "    await migrate(db)\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode == 0
    assert out.decode().strip() == "False", "an up-to-date database still loaded Alembic"
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM organizations"))
        await migrate(db)
        _, head, orgs = await schema_state(db)
        assert (head, orgs) == (HEAD_REVISION, [DEFAULT_ORGANIZATION_ID])
    finally:
        await db.dispose()


@pytest.fixture
async def empty_postgres() -> AsyncIterator[str]:
    """An empty PostgreSQL database (no tables at all); dropped at teardown."""
    url = await pg.empty_database()  # skips, saying why, without PostgreSQL
    try:
        yield url
    finally:
        await pg.drop_database(url)


async def test_postgres_upgrade_head_then_autogenerate_finds_nothing(empty_postgres: str) -> None:
    db = Database(empty_postgres)
    try:
        async with db.engine.connect() as conn:
            tables = await conn.scalar(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            )
        assert tables == 0, "the database must start empty"
        await migrate(db)
        diff, head, orgs = await schema_state(db)
        assert diff == [], f"models and migrations differ on PostgreSQL: {diff}"
        assert head is not None
        assert orgs == [DEFAULT_ORGANIZATION_ID]
        async with db.engine.connect() as conn:
            # Queue positions come from a sequence on PostgreSQL (migration 0002).
            assert await conn.scalar(text("SELECT nextval('task_queue_seq')")) == 1

        await migrate(db)  # idempotent: nothing to do, nothing duplicated
        assert await schema_state(db) == ([], head, [DEFAULT_ORGANIZATION_ID])
    finally:
        await db.dispose()


async def migrate_concurrently(url: str, processes: int) -> list[str]:
    """Run migrate() on ``url`` from ``processes`` engines at once; the errors."""
    dbs = [Database(url) for _ in range(processes)]
    try:
        results = await asyncio.gather(*(migrate(db) for db in dbs), return_exceptions=True)
    finally:
        for db in dbs:
            await db.dispose()
    return [repr(r).splitlines()[0] for r in results if isinstance(r, BaseException)]


async def test_postgres_concurrent_migrations_of_one_empty_database_both_succeed() -> None:
    # Two processes starting at once on a new database. The outcome depends on timing
    # (the upgrade is serialized; what follows it is not), so several new databases.
    failures: list[str] = []
    for _ in range(ROUNDS):
        url = await pg.empty_database()  # skips, saying why, without PostgreSQL
        try:
            failures += await migrate_concurrently(url, 2)
            db = Database(url)
            try:
                diff, head, orgs = await schema_state(db)
            finally:
                await db.dispose()
            assert diff == [] and head is not None
            assert orgs == [DEFAULT_ORGANIZATION_ID]
        finally:
            await pg.drop_database(url)
    assert not failures, (
        f"BUG: {len(failures)} of {2 * ROUNDS} concurrent migrate() calls failed: {failures[0]}. "
        "migrate() serializes the Alembic upgrade with an advisory lock, but then creates "
        "the default organization by get-then-insert outside that lock, so two processes "
        "can both find it missing and both insert it."
    )


async def test_postgres_concurrent_migrate_creates_the_default_organization_once(
    empty_postgres: str,
) -> None:
    # A database at head without the default organization (e.g. migrated with the alembic
    # CLI, which does not create it). Holding a lock on the organizations table makes both
    # processes reach migrate()'s "does the organization exist?" at the same time.
    db = Database(empty_postgres)
    try:
        await migrate(db)
        async with db.write() as session:
            await session.execute(text("DELETE FROM organizations"))
    finally:
        await db.dispose()
    database = pg.database_name(empty_postgres)
    admin = await asyncpg.connect(pg.ADMIN_DSN.rsplit("/", 1)[0] + "/" + database)
    try:
        gate = admin.transaction()
        await gate.start()
        await admin.execute("LOCK TABLE organizations IN ACCESS EXCLUSIVE MODE")
        starters = asyncio.ensure_future(migrate_concurrently(empty_postgres, 2))
        for _ in range(200):  # until both wait for the lock (at their organization lookup)
            await admin.execute("SELECT pg_stat_clear_snapshot()")  # fresh in a transaction
            waiting = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                database,
            )
            if waiting >= 2 or starters.done():
                break
            await asyncio.sleep(0.05)
        assert waiting >= 2, f"expected both migrate() calls to wait for the lock: {waiting}"
        await gate.commit()
        failures = await asyncio.wait_for(starters, 30)
        count = await admin.fetchval("SELECT count(*) FROM organizations")
    finally:
        await admin.close()
    assert count == 1
    assert not failures, (
        f"BUG: concurrent migrate() failed: {failures[0]}. migrate() creates the default "
        "organization by get-then-insert outside its advisory lock, so two processes that "
        "start together both find it missing and both insert it."
    )


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_postgres_upgrade_gives_every_entity_with_work_a_bus_session(
    empty_postgres: str,
) -> None:
    """Tasks queued before 0005 had no session row until a worker looked at them; the bus
    now claims through the session rows, so the upgrade creates the missing ones (for
    entities with QUEUED or RUNNING work only) and a worker claims the queued head."""
    db = Database(empty_postgres)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0004")
            await conn.execute(
                insert(Organization).values(id=DEFAULT_ORGANIZATION_ID, name="default")
            )
            for seq, (entity, status) in enumerate(
                [("queued-1", "QUEUED"), ("queued-1", "QUEUED"), ("done-1", "COMPLETED")], 1
            ):
                await conn.execute(
                    insert(Task).values(
                        id=f"task-{seq}",
                        organization_id=DEFAULT_ORGANIZATION_ID,
                        type="DEPLOYMENT",
                        status=status,
                        entity_id=entity,
                        input_hash="x",
                        queue_seq=seq,
                    )
                )
        await migrate(db)
        async with db.read() as session:
            sessions = (await session.execute(select(BusSession.entity_id))).scalars().all()
        assert sessions == ["queued-1"]

        bus = PostgresSessionBus(db, poll_interval=0.05)
        try:
            delivery = await asyncio.wait_for(bus.receive(), 10)
        finally:
            await bus.close()
        assert (delivery.message.task_id, delivery.message.session_id) == ("task-1", "queued-1")
    finally:
        await db.dispose()
