"""The database handle: engine, session factories, and SQLite tuned for a server.

SQLite allows one writer at a time. Rather than let concurrent writers spin in SQLite's
busy handler, writers in this process queue on an asyncio lock and open their transaction
with ``BEGIN IMMEDIATE`` (so a reader never has to upgrade to a writer mid-transaction and
fail with "database is locked"); the busy timeout then only covers other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from cloudops.db import sqlite_driver
from cloudops.db.one_trip import OneTripWriter, Statements
from cloudops.errors import DatabaseUnavailable

_WRITE = "cloudops_write"
T = TypeVar("T")


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix) :].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        dbapi_conn = conn.connection.dbapi_connection
        if isinstance(dbapi_conn, sqlite_driver.OneTripConnection):
            dbapi_conn.begin_with_next_statement(begin)
        else:
            conn.exec_driver_sql(begin)


class Database:
    """Owns the engine; hands out read and write sessions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = _sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        engine_url = make_url(url)
        if engine_url.drivername == "sqlite+aiosqlite":
            engine_url = engine_url.set(drivername=sqlite_driver.DRIVERNAME)
        self.engine = create_async_engine(engine_url, **kwargs)
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._one_trip: OneTripWriter | None = None
        # PostgreSQL (READ COMMITTED) gives every statement its own snapshot, inside a
        # transaction or not, so a read-only session loses nothing without one and saves
        # the BEGIN and ROLLBACK round trips; so does a write that is one statement, which
        # is atomic by itself. SQLite keeps its transactions: there a read transaction is
        # one snapshot.
        self._autocommit_engine = (
            None if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._read_engine = self._autocommit_engine or self.engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; it never writes, so it never waits for the writer."""
        async with self._session(self._read_engine) as session:
            yield session

    @contextlib.asynccontextmanager
    async def _session(self, engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
        """A session with no transaction of ours around it."""
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                yield session
        except DBAPIError as exc:
            _raise_if_unavailable(exc)
            raise

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A PostgreSQL connection on which each statement commits by itself: a write that
        is one statement costs one round trip, with no BEGIN and no COMMIT."""
        if self._autocommit_engine is None:
            raise RuntimeError("autocommit() is for PostgreSQL; SQLite writes use write()")
        try:
            async with self._autocommit_engine.connect() as conn:
                yield conn
        except DBAPIError as exc:
            _raise_if_unavailable(exc)
            raise

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success and rolls back on any exception. (A
        write that is one statement is atomic by itself: on PostgreSQL it needs no
        transaction, see ``autocommit``.)"""
        lock = self._write_lock or contextlib.nullcontext()
        try:
            async with (
                lock,
                AsyncSession(self._write_engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
        except DBAPIError as exc:
            _raise_if_unavailable(exc)
            raise

    async def write_in_one_trip(self, work: Callable[[Statements], T]) -> T:
        """SQLite: ``work`` committed, in one trip to the database's thread under the
        write lock, in one transaction with the other writes waiting for that trip
        (``db/one_trip.py``); undone if ``work`` raises. For writes made of a few Core
        statements whose parameters follow from each other (the worker's)."""
        if self._write_lock is None:
            raise RuntimeError("write_in_one_trip() is for SQLite; PostgreSQL uses autocommit()")
        if self._one_trip is None:
            async with self._write_lock:
                if self._one_trip is None:
                    connection = await self._write_engine.connect()
                    self._one_trip = await OneTripWriter.open(connection, self._write_lock)
        return await self._one_trip.run(work)

    @property
    def one_trip_commits(self) -> int:
        """Transactions committed by ``write_in_one_trip`` (they pass no engine events)."""
        return self._one_trip.commits if self._one_trip is not None else 0

    @property
    def one_trip_writes(self) -> int:
        """Writes committed by ``write_in_one_trip`` (several may share a commit)."""
        return self._one_trip.writes if self._one_trip is not None else 0

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        if self._one_trip is not None:
            writer, self._one_trip = self._one_trip, None
            await writer.close()
        await self.engine.dispose()


def _raise_if_unavailable(exc: DBAPIError) -> None:
    """Lost connections become DatabaseUnavailable; every other driver error passes through."""
    if exc.connection_invalidated:
        raise DatabaseUnavailable(str(exc.orig)) from exc
