"""The embedded default's SQLite driver (db/sqlite_driver.py): one trip to the SQLite
thread per statement, and otherwise exactly what a DBAPI cursor must answer — rows,
rowcount, RETURNING, lastrowid, executemany, errors — on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

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
