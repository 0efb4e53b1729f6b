"""SQLite write transactions that cost one trip to the database's thread.

A worker's write on the embedded default is a guarded ``UPDATE … RETURNING`` and one
``INSERT`` of its events. Through a SQLAlchemy connection that was three trips to
aiosqlite's thread (BEGIN with the UPDATE, the INSERT, COMMIT), each a hand-off and back
while every other writer waits for the lock, and most of the write's CPU went to
SQLAlchemy's execution machinery (execution context, result, transaction and pool objects)
around two statements that never change. Here SQLAlchemy still compiles each statement
(once) and supplies its bind and result processing, but the whole transaction — ``BEGIN
IMMEDIATE``, the caller's statements, ``COMMIT`` — is one function on the connection's
thread: the caller's ``work``, given ``Statements`` that run synchronously there. Writes
that arrive while one trip is on the thread go together in the next, as one transaction
with a savepoint each (a group commit): one COMMIT for all, and a failing write undone
alone.

Written here rather than taken from a library because none runs a transaction as one call
on aiosqlite's thread; it uses ``aiosqlite.Connection._execute``, as the driver in
``sqlite_driver.py`` does (pinned in ``pyproject.toml``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

T = TypeVar("T")

_NO_DEFAULT = object()


class Statements(Protocol):
    """Synchronous statements inside a write transaction (on SQLite's thread, or in an
    ORM session's greenlet: see ``SessionStatements``)."""

    def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
        """Run ``statement``; the rows it returns (attribute access by column key)."""
        ...

    def insert_many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run an INSERT once per row (one executemany)."""
        ...


class SessionStatements:
    """``Statements`` on a synchronous ORM session (``AsyncSession.run_sync``): the same
    code writes inside a larger session transaction and alone in one trip."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
        return self._session.execute(statement, params).all()

    def insert_many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        self._session.execute(statement, list(rows))


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement as SQLite runs it: its SQL, its positional parameters with SQLAlchemy's
    bind processors (and defaults for literal values), and a maker of its rows."""

    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    row: Callable[[Sequence[Any]], Any] | None

    def parameters(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = []
        for name, default, process in zip(self.names, self.defaults, self.processors, strict=True):
            value = params.get(name, default)
            if value is _NO_DEFAULT:
                raise KeyError(f"no value for the statement's parameter {name!r}")
            values.append(process(value) if process is not None else value)
        return tuple(values)


@functools.lru_cache(maxsize=256)
def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    """Compiled once per statement (the journal builds each shape once) and parameter
    names, which SQLAlchemy also compiles with (an INSERT's columns are the names given)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    if compiled.insert_prefetch or compiled.update_prefetch:
        # Python-side column defaults are computed by SQLAlchemy's execution context,
        # which this path does without: the caller must give every such column.
        missing = [column.key for column in compiled.insert_prefetch + compiled.update_prefetch]
        raise ValueError(f"a one-trip statement needs values for {missing}")
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[name] for name in names]
    row = None
    columns = list(getattr(statement, "exported_columns", ()))
    if columns:
        row = _row_maker(columns, dialect)
    return _Compiled(
        compiled.string,
        names,
        tuple(_NO_DEFAULT if bind.required else bind.effective_value for bind in binds),
        tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
        row,
    )


def _row_maker(columns: Sequence[Any], dialect: Dialect) -> Callable[[Sequence[Any]], Any]:
    row_type = collections.namedtuple("Row", [column.key for column in columns])  # type: ignore[misc]
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    ]

    def make(raw: Sequence[Any]) -> Any:
        return row_type._make(
            process(value) if process is not None else value
            for process, value in zip(processors, raw, strict=True)
        )

    return make


class _ThreadStatements:
    """``Statements`` on the sqlite3 connection itself, on aiosqlite's thread."""

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
        compiled = _compile(statement, self._dialect, tuple(params))
        cursor = self._conn.execute(compiled.sql, compiled.parameters(params))
        try:
            if compiled.row is None:
                return []
            return [compiled.row(raw) for raw in cursor.fetchall()]
        finally:
            cursor.close()

    def insert_many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        compiled = _compile(statement, self._dialect, tuple(rows[0]))
        self._conn.executemany(compiled.sql, [compiled.parameters(row) for row in rows])


#: What ``_transactions`` returns per write: (it succeeded, its result or its exception).
_Outcome = tuple[bool, Any]


def _transactions(
    conn: sqlite3.Connection, dialect: Dialect, works: Sequence[Callable[[Statements], Any]]
) -> tuple[bool, list[_Outcome]]:
    """On the SQLite thread: the writes waiting together, as one transaction (a group
    commit). With several, each runs inside a savepoint of its own: one that raises is
    undone alone and gets its exception, the others commit. Returns whether it committed
    and each write's outcome; a failure of the transaction itself (BEGIN, COMMIT) raises,
    with everything rolled back."""
    statements = _ThreadStatements(conn, dialect)
    alone = len(works) == 1
    outcomes: list[_Outcome] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for work in works:
            if not alone:
                conn.execute("SAVEPOINT one_trip")
            try:
                result = work(statements)
            except Exception as exc:
                if not alone:
                    conn.execute("ROLLBACK TO one_trip")
                    conn.execute("RELEASE one_trip")
                outcomes.append((False, exc))
                continue
            if not alone:
                conn.execute("RELEASE one_trip")
            outcomes.append((True, result))
        committed = any(ok for ok, _ in outcomes)
        conn.execute("COMMIT" if committed else "ROLLBACK")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return committed, outcomes


#: Turns of the event loop a trip waits at most for writes still on their way (_gather).
GATHER_TURNS = 4


@dataclass(slots=True)
class _Write:
    work: Callable[[Statements], Any]
    done: asyncio.Future[Any]


class OneTripWriter:
    """A connection of the engine's, kept for one-trip write transactions. Writes that
    arrive while a trip is on the thread (or while the write lock is held) go together
    in the next trip: one transaction, one COMMIT (``_transactions``)."""

    def __init__(self, connection: AsyncConnection, driver: Any, lock: asyncio.Lock) -> None:
        self._connection = connection
        self._driver = driver  # aiosqlite.Connection
        self._dialect = connection.dialect
        self._lock = lock
        self._pending: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Transactions committed (a trip whose every write failed commits nothing), and
        #: the writes they committed.
        self.commits = 0
        self.writes = 0

    @classmethod
    async def open(cls, connection: AsyncConnection, lock: asyncio.Lock) -> OneTripWriter:
        raw = await connection.get_raw_connection()
        return cls(connection, raw.driver_connection, lock)

    async def run(self, work: Callable[[Statements], T]) -> T:
        """``work`` in a transaction that has committed when this returns. Cancelled
        before its trip, it never runs; cancelled during it, it waits for the trip to
        end (it cannot be stopped on the thread), and its outcome is then unknown to the
        caller, as it would be for a commit cut short."""
        write = _Write(work, asyncio.get_running_loop().create_future())
        self._pending.append(write)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        try:
            result: T = await asyncio.shield(write.done)
        except asyncio.CancelledError:
            if write in self._pending:
                self._pending.remove(write)
            else:
                await asyncio.wait({write.done})
                if not write.done.cancelled():
                    write.done.exception()  # retrieved: the caller has gone
            raise
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                "one-trip write transaction", None, exc, sqlite3.Error
            ) from exc
        return result

    async def _flush(self) -> None:
        """Send what is pending, one trip at a time under the write lock, until nothing is."""
        try:
            while self._pending:
                await self._gather()
                async with self._lock:
                    batch, self._pending = self._pending, []
                    try:
                        committed, outcomes = await self._driver._execute(
                            _transactions,
                            self._driver._conn,
                            self._dialect,
                            [write.work for write in batch],
                        )
                    except Exception as exc:  # the transaction itself failed: all of it
                        for write in batch:
                            if not write.done.done():
                                write.done.set_exception(exc)
                        continue
                    except BaseException:
                        for write in batch:
                            write.done.cancel()
                        raise
                if committed:
                    self.commits += 1
                    self.writes += sum(ok for ok, _ in outcomes)
                for write, (ok, value) in zip(batch, outcomes, strict=True):
                    if write.done.done():
                        continue
                    if ok:
                        write.done.set_result(value)
                    else:
                        write.done.set_exception(value)
        finally:
            self._flusher = None
            # Only when the flusher itself was cancelled (the loop is going away): no
            # write may wait for a trip that will not come.
            for write in self._pending:
                write.done.cancel()
            self._pending.clear()

    async def _gather(self) -> None:
        """Let the writes on their way join the next trip: the loop turns again as long
        as its last turn brought one, GATHER_TURNS at most. A trip's answers wake its
        writers a few turns later (through the shield in ``run``), and each then makes
        its next write: a submitter its next task, a worker the next event of an attempt
        that has just started. Sent at once, the first of them went alone and the others
        waited for the next trip: three trips for two tasks where one would do."""
        for _ in range(GATHER_TURNS):
            waiting = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == waiting:
                return

    async def close(self) -> None:
        """After the writes already given have ended."""
        if self._flusher is not None:
            await asyncio.wait({self._flusher})
        await self._connection.close()
