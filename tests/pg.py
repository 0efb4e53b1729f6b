"""PostgreSQL for the tests: one migrated template per test session, a fresh copy per test.

The server is ``CLOUDOPS_TEST_POSTGRES`` (an asyncpg DSN of its ``postgres`` database),
by default ``postgresql://postgres@127.0.0.1:5432/postgres``. Once per test session the
first user creates ``cloudops_test_template_<pid>`` and runs :func:`cloudops.db.migrate.migrate`
into it; every test database is then a ``CREATE DATABASE ... TEMPLATE`` copy of it (about
100 ms instead of a migration, and made ahead of time in a helper thread). Every database
created here is dropped again: after its test (in the helper thread), and whatever is left
by :func:`drop_created_databases` at the end of the test session.

PostgreSQL is required (the machine has it; ``.ci/run`` starts it when it is down): when it
cannot be reached, :func:`require_postgres` (the one place that decides) fails the test
and says why.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import pytest

from cloudops.db.engine import Database
from cloudops.db.migrate import migrate

T = TypeVar("T")

#: asyncpg DSN of the server's maintenance database.
ADMIN_DSN = os.environ.get(
    "CLOUDOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)

TEMPLATE = f"cloudops_test_template_{os.getpid()}"
DATABASE_PREFIX = "cloudops_t_"
#: The comment on every database made here, followed by the pid of the test process: a
#: later session drops the leftovers of a process that is gone.
OWNER_NOTE = "cloudops tests, pid "

_created: set[str] = set()
_created_lock = threading.Lock()
_template_lock = threading.Lock()
_template_ready = False


def _in_own_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private event loop (callable from sync code, also at
    exit, and from inside a running loop, by way of a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # none here: run one
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tests-pg") as pool:
        return pool.submit(asyncio.run, coro).result()


def _server_root() -> str:
    """The DSN without its database name: ``postgresql://user@host:port``."""
    return ADMIN_DSN.rsplit("/", 1)[0]


def sqlalchemy_url(database: str) -> str:
    return f"{_server_root().replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}"


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def _quote(name: str) -> str:
    assert name.replace("_", "").isalnum(), name
    return f'"{name}"'


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(ADMIN_DSN, timeout=5)


# -- availability ---------------------------------------------------------------------


async def _probe() -> str | None:
    try:
        conn = await _admin()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        version = await conn.fetchval("SHOW server_version_num")
    finally:
        await conn.close()
    if int(version) < 130000:
        return f"server version {version} is older than 13"
    return None


@functools.cache
def unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used (None when it can); asked once per test session."""
    return _in_own_loop(_probe())


def describe() -> str:
    """One line for the pytest report header."""
    reason = unavailable_reason()
    if reason is None:
        return f"postgresql: {ADMIN_DSN} (template {TEMPLATE})"
    return f"postgresql: NOT reachable at {ADMIN_DSN} ({reason}); PostgreSQL tests will FAIL"


def require_postgres() -> None:
    """Fail the calling test, saying why, when PostgreSQL is not reachable."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_DSN}: {reason} (start it as .ci/run does)",
            pytrace=False,
        )


async def _sign(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"COMMENT ON DATABASE {_quote(name)} IS '{OWNER_NOTE}{os.getpid()}'")


# -- the template -------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _drop_leftovers(conn: asyncpg.Connection) -> None:
    """Drop the databases of test sessions on this host that died without cleaning up
    (killed): each one's comment names the process that made it. Also a template of
    ours left by an earlier session with our pid."""
    rows = await conn.fetch(
        "SELECT datname, shobj_description(oid, 'pg_database') AS note FROM pg_database d"
        " WHERE (datname LIKE 'cloudops\\_t\\_%' OR datname LIKE 'cloudops\\_test\\_template\\_%')"
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"
    )
    for name, note in rows:
        owner = re.fullmatch(rf"{re.escape(OWNER_NOTE)}(\d+)", note or "")
        if owner is None:
            continue  # not made by this module: not ours to judge
        pid = int(owner.group(1))
        if (name == TEMPLATE and pid == os.getpid()) or not _alive(pid):
            await _drop(conn, name)


async def _build_template() -> None:
    conn = await _admin()
    try:
        await _drop_leftovers(conn)
        await conn.execute(f"CREATE DATABASE {_quote(TEMPLATE)}")
        await _sign(conn, TEMPLATE)
    finally:
        await conn.close()
    with _created_lock:
        _created.add(TEMPLATE)
    db = Database(sqlalchemy_url(TEMPLATE))
    try:
        await migrate(db)
    finally:
        await db.dispose()


def ensure_template() -> str:
    """Create and migrate this session's template database once; its name."""
    global _template_ready
    with _template_lock:
        if not _template_ready:
            atexit.register(drop_created_databases)  # also outside pytest (scripts)
            _in_own_loop(_build_template())
            _template_ready = True
    return TEMPLATE


# -- test databases -------------------------------------------------------------------

#: Copies of the template made ahead of time (in helper threads, while tests run), so
#: that a test rarely waits for CREATE DATABASE (a few hundred ms on a busy machine).
#: Drops run there too.
PREFETCH = 3

_ready: deque[Future[str]] = deque()
_pool_lock = threading.Lock()
_housekeeper: ThreadPoolExecutor | None = None


def _in_background(job: Callable[[], Coroutine[Any, Any, T]]) -> Future[T]:
    """Run ``job()`` on a helper thread (two at a time, in order)."""
    global _housekeeper
    with _pool_lock:
        if _housekeeper is None:
            _housekeeper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tests-pg-bg")
        return _housekeeper.submit(lambda: asyncio.run(job()))


async def _create(template: str | None) -> str:
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex}"
    conn = await _admin()
    try:
        clause = f" TEMPLATE {_quote(template)}" if template else ""
        await conn.execute(f"CREATE DATABASE {_quote(name)}{clause}")
        # Tests need no durability: commits need not wait for the disk (visibility and
        # locking are unchanged). Not inherited from a template, so set on every copy.
        await conn.execute(f"ALTER DATABASE {_quote(name)} SET synchronous_commit TO off")
        await _sign(conn, name)
    finally:
        await conn.close()
    with _created_lock:
        _created.add(name)
    return sqlalchemy_url(name)


async def fresh_database() -> str:
    """A new database with the schema at head and the default organization (a copy of
    the template); its SQLAlchemy URL. Skips the test when PostgreSQL is not reachable."""
    require_postgres()
    template = await asyncio.to_thread(ensure_template)
    with _pool_lock:
        ready = len(_ready)
    for _ in range(PREFETCH + 1 - ready):
        future = _in_background(lambda: _create(template))
        with _pool_lock:
            _ready.append(future)
    with _pool_lock:
        first = _ready.popleft()
    return await asyncio.wrap_future(first)


async def empty_database() -> str:
    """A new database without any table (for migration tests); its SQLAlchemy URL."""
    require_postgres()
    return await _create(None)


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    await conn.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    with _created_lock:
        _created.discard(name)


async def _drop_all(names: list[str]) -> None:
    conn = await _admin()
    try:
        for name in names:
            await _drop(conn, name)
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop a database made by :func:`fresh_database` or :func:`empty_database`, in the
    background (its connections are terminated first; the session's end waits for it)."""
    name = database_name(url)
    _in_background(lambda: _drop_all([name]))


def drop_created_databases() -> None:
    """Drop every database this test session created, the template included (called from
    ``pytest_sessionfinish``); waits for the background work first."""
    global _housekeeper, _template_ready
    with _pool_lock:
        housekeeper, _housekeeper = _housekeeper, None
        _ready.clear()
    if housekeeper is not None:
        housekeeper.shutdown(wait=True)
    with _created_lock:
        names = sorted(_created, key=lambda name: name == TEMPLATE)  # the template last
    _template_ready = False
    if names:
        _in_own_loop(_drop_all(names))


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh migrated database for one test, dropped at teardown (fails without
    PostgreSQL)."""
    url = await fresh_database()
    try:
        yield url
    finally:
        await drop_database(url)


async def claims_waiting_for_a_lock(url: str) -> list[int]:
    """Backend pids of the session bus's claim statements (``_CLAIM``) that wait for a
    lock in the database of ``url`` (a SQLAlchemy URL)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%WITH pick AS%'"
        )
    finally:
        await conn.close()
    return [int(row["pid"]) for row in rows]


async def claim_waiting_for_a_lock(url: str, timeout: float = 10) -> int:
    """The backend pid of the one claim statement in ``url``'s database, once it waits for
    a lock."""
    async with asyncio.timeout(timeout):
        while True:
            pids = await claims_waiting_for_a_lock(url)
            if pids:
                [pid] = pids
                return pid
            await asyncio.sleep(0.01)
