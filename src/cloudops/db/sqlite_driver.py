"""SQLAlchemy's aiosqlite dialect, with one trip to the SQLite thread per statement.

aiosqlite runs every call on its connection's own thread. SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch, close), each a hand-off to that thread
and back to the event loop: on the embedded default that was most of the wall time of a
write transaction, which every worker waits for in turn (SQLite has one writer). Here the
four happen in one function on the thread, and the cursor keeps what it returned
(description, rowcount, lastrowid, rows). Everything else is SQLAlchemy's dialect as is;
the engine uses this driver for ``sqlite+aiosqlite`` URLs (``db/engine.py``).

Written here rather than taken from a library because none offers it: it leans on
``aiosqlite.Connection._execute`` and SQLAlchemy's adapter classes, so both are pinned
to tested ranges in ``pyproject.toml`` and the whole engine test suite runs on it.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVERNAME = "sqlite+cloudops_aiosqlite"

_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    cursor = conn.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(conn: sqlite3.Connection, operation: str, seq: Sequence[Any]) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq)
        return cursor.description, cursor.rowcount, cursor.lastrowid, None
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that exists on the SQLite thread only while its statement runs."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._on_thread(_run, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._on_thread(_run_many, operation, seq_of_parameters)

    async def _on_thread(
        self, run: Callable[[sqlite3.Connection, str, Any], _Outcome], operation: Any, args: Any
    ) -> OneTripCursor:
        """One trip: ``run`` on the connection's thread; keep what it returned."""
        async with self._adapt_connection._execute_mutex:
            outcome = await self._connection._execute(run, self._connection._conn, operation, args)
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows or ())
        return self

    async def _async_soft_close(self) -> None:
        return  # nothing open on the thread

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        creator_fn = kw.pop("async_creator_fn", None)
        connection = creator_fn(*arg, **kw) if creator_fn else aiosqlite.connect(*arg, **kw)
        if not creator_fn and not isinstance(connection, Thread):
            connection._thread.daemon = True  # as SQLAlchemy does: never block exit
        return OneTripConnection(self, await_(connection))


class OneTripSQLiteDialect(SQLiteDialect_aiosqlite):
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> OneTripDBAPI:
        return OneTripDBAPI(aiosqlite, sqlite3)


registry.register(DRIVERNAME.replace("+", "."), __name__, "OneTripSQLiteDialect")
