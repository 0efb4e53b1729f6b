"""SQLAlchemy's aiosqlite dialect, with one trip to the SQLite thread per statement.

aiosqlite runs every call on its connection's own thread. SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch, close), each a hand-off to that thread
and back to the event loop: on the embedded default that was most of the wall time of a
write transaction, which every worker waits for in turn (SQLite has one writer). Here the
four happen in one function on the thread, and the cursor keeps what it returned
(description, rowcount, lastrowid, rows). A transaction's ``BEGIN`` rides along with its
first statement (``OneTripConnection.begin_with_next_statement``) rather than costing a trip
of its own, and a transaction that sent nothing ends without one. Everything else is
SQLAlchemy's dialect as is; the engine uses this driver for ``sqlite+aiosqlite`` URLs
(``db/engine.py``).

Written here rather than taken from a library because none offers it: it leans on
``aiosqlite.Connection._execute`` and SQLAlchemy's adapter classes, so both are pinned
to tested ranges in ``pyproject.toml`` and the whole engine test suite runs on it.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from threading import Thread
from typing import Any, cast

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

_Outcome = tuple[Any, int, int | None, list[Any] | None, bool]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, begin: str | None) -> _Outcome:
    cursor = conn.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows, conn.in_transaction
    finally:
        cursor.close()


def _run_many(
    conn: sqlite3.Connection, operation: str, seq: Sequence[Any], begin: str | None
) -> _Outcome:
    cursor = conn.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        cursor.executemany(operation, seq)
        return cursor.description, cursor.rowcount, cursor.lastrowid, None, conn.in_transaction
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
        self,
        run: Callable[[sqlite3.Connection, str, Any, str | None], _Outcome],
        operation: Any,
        args: Any,
    ) -> OneTripCursor:
        """One trip: ``run`` on the connection's thread; keep what it returned."""
        adapt = cast(OneTripConnection, self._adapt_connection)
        async with adapt._execute_mutex:
            begin, adapt._pending_begin = adapt._pending_begin, None
            if begin is not None:
                # Until the trip says otherwise: if the statement fails after its BEGIN
                # succeeded, the rollback that follows must reach SQLite (one that
                # finds no transaction is harmless).
                adapt._in_transaction = True
            outcome = await self._connection._execute(
                run, self._connection._conn, operation, args, begin
            )
        self._description, self._rowcount, self._lastrowid, rows, adapt._in_transaction = outcome
        self._rows = collections.deque(rows or ())
        return self

    async def _async_soft_close(self) -> None:
        return  # nothing open on the thread

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_in_transaction", "_pending_begin")
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None
        # Whether SQLite had a transaction open after this connection's last statement
        # (read on the SQLite thread). The pool rolls back every connection it takes
        # back, mostly right after a commit: with none open, that costs no trip.
        self._in_transaction = False

    def begin_with_next_statement(self, begin: str) -> None:
        """Open the transaction (``begin`` is its BEGIN statement) in the same trip to
        the SQLite thread as the next statement, not in one of its own."""
        self._pending_begin = begin

    def commit(self) -> None:
        if self._has_transaction():
            super().commit()  # if it fails, the transaction is still open: roll it back
            self._in_transaction = False

    def rollback(self) -> None:
        if self._has_transaction():
            super().rollback()
            self._in_transaction = False

    def _has_transaction(self) -> bool:
        """Whether ending the transaction needs a trip: not when its BEGIN never left
        (it is dropped) or when SQLite had none open after the last statement."""
        self._pending_begin = None
        return self._in_transaction


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
