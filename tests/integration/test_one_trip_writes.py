"""One-trip SQLite write transactions (db/one_trip.py) on a real SQLite file: the values
they store and return are SQLAlchemy's own, a failure leaves nothing behind, and a cancelled
caller still waits for its transaction to end."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
)
from sqlalchemy import update as update_statement
from sqlalchemy.exc import IntegrityError

from cloudops.db.engine import Database
from cloudops.db.one_trip import Statements
from cloudops.db.types import UTCDateTime

METADATA = MetaData()
THINGS = Table(
    "things",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), unique=True, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("data", JSON, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("kind", String(10), nullable=False, default="plain"),
)
INSERT = insert(THINGS)
AT = datetime(2026, 11, 29, 12, 30, 45, 123456, tzinfo=UTC)


def thing(number: int, name: str) -> dict[str, Any]:
    return {
        "id": number,
        "name": name,
        "at": AT + timedelta(hours=number),
        "data": {"n": number, "tags": ["x"]},
        "flag": number % 2 == 0,
        "kind": "odd" if number % 2 else "even",
    }


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'one_trip.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    yield database
    await database.dispose()


async def stored(db: Database) -> list[Any]:
    async with db.read() as session:
        return list((await session.execute(select(THINGS).order_by(THINGS.c.id))).all())


async def test_values_go_in_and_come_back_as_sqlalchemy_stores_and_reads_them(
    db: Database,
) -> None:
    async with db.write() as session:
        await session.execute(INSERT, thing(1, "by-sqlalchemy"))

    def work(statements: Statements) -> list[Any]:
        statements.insert_many(INSERT, [thing(2, "by-one-trip"), thing(3, "also")])
        return list(
            statements.rows(
                update_statement(THINGS)
                .where(THINGS.c.flag.is_(True))
                .values(name=THINGS.c.name + "!")
                .returning(THINGS.c.name, THINGS.c.at, THINGS.c.data, THINGS.c.flag),
                {},
            )
        )

    returned = await db.write_in_one_trip(work)
    assert [tuple(row) for row in returned] == [
        ("by-one-trip!", AT + timedelta(hours=2), {"n": 2, "tags": ["x"]}, True)
    ]
    assert returned[0].at.tzinfo is UTC and returned[0].name == "by-one-trip!"
    rows = await stored(db)
    assert [tuple(row) for row in rows] == [
        tuple(thing(1, "by-sqlalchemy").values()),
        tuple({**thing(2, "by-one-trip!")}.values()),
        tuple(thing(3, "also").values()),
    ]
    # Byte for byte what SQLAlchemy writes: the same text for a datetime and for JSON.
    async with db.read() as session:
        raw = (
            await session.execute(
                select(THINGS.c.id, THINGS.c.at.cast(String), THINGS.c.data.cast(String))
            )
        ).all()
    formats = {(len(at), data.startswith('{"n": ')) for _, at, data in raw}
    assert len(formats) == 1
    assert db.one_trip_commits == 1


async def test_a_failing_statement_rolls_back_the_whole_transaction(db: Database) -> None:
    await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(1, "taken")]))

    def work(statements: Statements) -> None:
        statements.insert_many(INSERT, [thing(2, "first of the failed")])
        statements.insert_many(INSERT, [thing(3, "taken")])  # unique name: fails

    with pytest.raises(IntegrityError):
        await db.write_in_one_trip(work)
    assert [row.name for row in await stored(db)] == ["taken"]
    # The connection is usable at once, and no transaction was left open on it.
    await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(4, "after")]))
    async with db.write() as session:
        await session.execute(INSERT, thing(5, "by-session"))
    assert [row.name for row in await stored(db)] == ["taken", "after", "by-session"]
    assert db.one_trip_commits == 2


async def test_an_exception_in_the_work_rolls_back_and_reaches_the_caller(db: Database) -> None:
    def work(statements: Statements) -> None:
        statements.insert_many(INSERT, [thing(1, "not kept")])
        raise LookupError("the caller's own failure")

    with pytest.raises(LookupError, match="own failure"):
        await db.write_in_one_trip(work)
    assert await stored(db) == []


async def test_a_missing_parameter_is_named_and_nothing_is_written(db: Database) -> None:
    def work(statements: Statements) -> None:
        statements.insert_many(INSERT, [thing(1, "kept out")])
        statements.rows(
            update_statement(THINGS)
            .where(THINGS.c.id == bindparam("wanted"))
            .values(flag=True)
            .returning(THINGS.c.id),
            {},
        )

    with pytest.raises(KeyError, match="wanted"):
        await db.write_in_one_trip(work)
    assert await stored(db) == []


async def test_a_column_default_made_in_python_is_refused_not_left_null(db: Database) -> None:
    """SQLAlchemy computes such defaults in its execution context, which a one-trip
    write does without: leaving the column out is an error, not a silent NULL."""
    row = thing(1, "no kind")
    del row["kind"]
    with pytest.raises(ValueError, match="kind"):
        await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [row]))
    assert await stored(db) == []


async def test_a_cancelled_caller_waits_for_its_transaction_to_end(db: Database) -> None:
    """The transaction cannot be stopped on SQLite's thread: the caller's cancellation
    takes effect once it has ended, so the write lock is never released with a
    transaction still open, and what it wrote is there when the caller sees the cancel."""
    entered = threading.Event()
    go = threading.Event()

    def work(statements: Statements) -> None:
        statements.insert_many(INSERT, [thing(1, "slow")])
        entered.set()
        go.wait(30)

    writing = asyncio.create_task(db.write_in_one_trip(work))
    assert await asyncio.to_thread(entered.wait, 30)
    writing.cancel()
    done, _ = await asyncio.wait({writing}, timeout=0.2)
    assert not done, "the cancel took effect while the transaction was still open"
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert [row.name for row in await stored(db)] == ["slow"]
    await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(2, "next")]))
    assert [row.name for row in await stored(db)] == ["slow", "next"]


async def test_writes_waiting_together_commit_together_and_a_failing_one_alone_is_undone(
    db: Database,
) -> None:
    """A group commit: writes that arrive while the write lock is held go in one trip
    and one transaction, each in a savepoint of its own."""

    def failing(statements: Statements) -> None:
        statements.insert_many(INSERT, [thing(90, "undone")])
        statements.insert_many(INSERT, [thing(91, "name-0")])  # taken by the first write

    async with db.write() as session:  # holds the write lock while the writes queue up
        await session.execute(INSERT, thing(99, "by-session"))
        writes = [
            asyncio.create_task(
                db.write_in_one_trip(lambda s, n=n: s.insert_many(INSERT, [thing(n, f"name-{n}")]))
            )
            for n in range(5)
        ]
        writes.insert(2, asyncio.create_task(db.write_in_one_trip(failing)))
        await asyncio.sleep(0)
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "NoneType",
        "NoneType",
        "IntegrityError",
        "NoneType",
        "NoneType",
        "NoneType",
    ]
    assert [row.name for row in await stored(db)] == [f"name-{n}" for n in range(5)] + [
        "by-session"
    ]
    assert db.one_trip_commits == 1


async def test_a_write_cancelled_before_its_trip_never_runs(db: Database) -> None:
    async with db.write() as session:  # the write lock: the one-trip write must wait
        await session.execute(INSERT, thing(1, "by-session"))
        waiting = asyncio.create_task(
            db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(2, "never")]))
        )
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(3, "after")]))
    assert [row.name for row in await stored(db)] == ["by-session", "after"]
    assert db.one_trip_commits == 1


async def test_writes_a_few_turns_of_the_loop_apart_go_in_one_trip(db: Database) -> None:
    """A trip's answers wake its writers a few turns of the event loop later, and each
    then makes its next write (a submitter its next task, a worker the next event):
    the next trip waits for them while they keep coming, instead of leaving with the
    first one alone."""
    await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(1, "opens the writer")]))

    async def first() -> None:
        await db.write_in_one_trip(lambda s: s.insert_many(INSERT, [thing(2, "first")]))

    async def on_its_way(turns: int, number: int) -> None:
        for _ in range(turns):  # as a writer still being woken by the last trip's answer
            await asyncio.sleep(0)
        await db.write_in_one_trip(
            lambda s: s.insert_many(INSERT, [thing(number, f"later-{number}")])
        )

    await asyncio.gather(first(), on_its_way(1, 3), on_its_way(2, 4))
    assert len(await stored(db)) == 4
    assert db.one_trip_commits == 2, "the three writes should have shared one trip"
