"""The embedded default's SQLite driver (db/sqlite_driver.py): one trip to the SQLite
thread per statement, and otherwise exactly what a DBAPI cursor must answer — rows,
rowcount, RETURNING, lastrowid, executemany, errors — on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cloudops.db import sqlite_driver
from cloudops.db.engine import Database


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.write() as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    return database


async def test_the_engine_runs_on_the_one_trip_driver(db: Database) -> None:
    assert db.engine.url.drivername == sqlite_driver.DRIVERNAME
    assert isinstance(db.engine.dialect, sqlite_driver.OneTripSQLiteDialect)
    await db.dispose()


async def test_rows_rowcount_returning_and_lastrowid(db: Database) -> None:
    async with db.write() as session:
        inserted = await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert inserted.rowcount == 1
        assert inserted.lastrowid == 1
        many = await session.execute(
            text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}]
        )
        assert many.rowcount == 2
        updated = await session.execute(text("UPDATE t SET v = v || '!' WHERE id > 1"))
        assert updated.rowcount == 2
        returned = await session.execute(text("UPDATE t SET v = 'z' WHERE id = 1 RETURNING id, v"))
        assert returned.all() == [(1, "z")]
        nothing = await session.execute(text("UPDATE t SET v = 'y' WHERE id = 99 RETURNING id"))
        assert nothing.all() == []
    async with db.read() as session:
        rows = (await session.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
        assert rows == [(1, "z"), (2, "b!"), (3, "c!")]
        assert (await session.execute(text("SELECT v FROM t WHERE id = 2"))).scalar_one() == "b!"
    await db.dispose()


async def test_an_error_rolls_back_and_the_connection_stays_usable(db: Database) -> None:
    async with db.write() as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('b')"))
            await session.execute(text("INSERT INTO t (v) VALUES ('a')"))  # duplicate
    async with db.write() as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('c')"))
    async with db.read() as session:
        values = (await session.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    assert values == ["a", "c"], "the failed transaction must have left nothing"
    await db.dispose()


class Trips:
    """Every hand-off to a SQLite thread, by what it ran (the real calls go through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[str] = []
        real = aiosqlite.Connection._execute

        async def counted(conn: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
            if fn in (sqlite_driver._run, sqlite_driver._run_many):
                begin = args[-1]
                self.seen.append(f"{begin} + {args[1]}" if begin else str(args[1]))
            else:
                self.seen.append(getattr(fn, "__name__", repr(fn)))
            return await real(conn, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)


async def test_begin_rides_with_the_first_statement_and_the_pool_costs_no_trip(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = Trips(monkeypatch)
    async with db.write() as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
        await session.execute(text("INSERT INTO t (v) VALUES ('b')"))
    assert trips.seen == [
        "BEGIN IMMEDIATE + INSERT INTO t (v) VALUES ('a')",
        "INSERT INTO t (v) VALUES ('b')",
        "commit",
    ], "no trip for BEGIN, none for the pool's rollback after the commit"
    trips.seen.clear()
    async with db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2
    assert trips.seen == ["BEGIN + SELECT count(*) FROM t", "rollback"]
    trips.seen.clear()
    async with db.write():
        pass  # a transaction that sent nothing ends without a trip
    assert trips.seen == []
    await db.dispose()


async def test_the_write_lock_is_taken_with_the_first_statement(db: Database) -> None:
    path = db.url.split("///", 1)[1]
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    async with db.write() as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again after the commit
    other.execute("ROLLBACK")
    other.close()
    await db.dispose()


async def test_a_commit_that_fails_is_rolled_back_before_the_connection_is_reused(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'deferred.db'}")
    async with database.write() as session:
        await session.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await session.execute(
            text(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES "
                "parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    # A deferred foreign key fails at COMMIT, and SQLite then keeps the transaction open.
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        async with database.write() as session:
            await session.execute(text("INSERT INTO child (parent_id) VALUES (7)"))
    for _ in range(3):  # whichever pooled connection comes next must start clean
        async with database.write() as session:
            await session.execute(text("INSERT INTO parent (id) VALUES (NULL)"))
    async with database.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM child"))).scalar_one() == 0
        assert (await session.execute(text("SELECT count(*) FROM parent"))).scalar_one() == 3
    await database.dispose()


async def test_a_first_statement_that_fails_still_ends_its_transaction(db: Database) -> None:
    """Its BEGIN went in the same trip and succeeded: the rollback must reach SQLite,
    or the pooled connection would go back with the transaction (and its lock) open."""
    async with db.write() as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
    for _ in range(3):
        with pytest.raises(IntegrityError):
            async with db.write() as session:
                await session.execute(text("INSERT INTO t (v) VALUES ('a')"))  # duplicate
    async with db.write() as session:
        await session.execute(text("INSERT INTO t (v) VALUES ('b')"))
    async with db.read() as session:
        values = (await session.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    assert values == ["a", "b"]
    await db.dispose()
