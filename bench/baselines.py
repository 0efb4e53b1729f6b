"""The two yardsticks the throughput scenario measures in the same run (scenario 2).

(a) The in-process limit: a bare asyncio per-key FIFO loop that makes the same writes per
    task as the control plane (each write: a guarded UPDATE ... RETURNING of the task and
    the INSERT of its event, like the journal) through one aiosqlite connection, and
    commits them as the control plane does: the writes that arrive while a commit is in
    flight go together in the next one (a group commit), each caller waiting for its own.
    No ORM, no bus abstraction, no broadcast: what is left when the control plane's own
    code costs nothing. Our embedded figure as a fraction of it says how much the layers
    cost.
(b) The peer a user would pick instead: procrastinate, one job per task, ``lock=`` the
    entity (its per-lock FIFO, one job at a time per lock), with its worker processes on
    the same PostgreSQL server (a fresh database of its own). The job body does nothing;
    procrastinate stores its own job and event rows, we store our five events.

``python -m bench.baselines procrastinate-worker --dsn DSN`` is the worker process of (b).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    Proc,
    RunCheck,
    clean_env,
    layout_order,
    partition,
    pg_database,
    pg_dsn,
    spawn,
)

SKIPPED_PROCRASTINATE = "skipped: procrastinate is not installed (pip install -e .[bench])"


@dataclass
class BaselineResult:
    name: str
    layout: str
    tasks: int
    entities: int
    seconds: float
    workers: int = 1
    writes_per_task: float | None = None
    commits_per_task: float | None = None
    check: RunCheck = field(default_factory=RunCheck)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layout": self.layout,
            "tasks": self.tasks,
            "entities": self.entities,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "tasks_per_s": round(self.tasks_per_s, 1),
            "writes_per_task": self.writes_per_task,
            "commits_per_task": self.commits_per_task,
            "check": self.check.as_dict(),
        }


@dataclass
class SubmittedAlone:
    """N submissions made as the throughput runs make them (their ``--submitters``), with
    no worker running: how fast the submitters alone can go. A run's clock starts at its
    first submission, so submitting alone is the ceiling of its tasks/s."""

    name: str
    layout: str
    tasks: int
    seconds: float
    #: Tasks (or jobs) found stored and waiting afterwards: every submission counted.
    stored: int

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.stored == self.tasks

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layout": self.layout,
            "tasks": self.tasks,
            "seconds": round(self.seconds, 3),
            "tasks_per_s": round(self.tasks_per_s, 1),
            "stored": self.stored,
            "ok": self.ok,
        }


# -- (a) bare asyncio per-key FIFO on one aiosqlite connection ------------------------------

_SCHEMA = [
    "CREATE TABLE tasks (id INTEGER PRIMARY KEY, entity TEXT NOT NULL, seq INTEGER NOT NULL,"
    " status TEXT NOT NULL, last_sequence INTEGER NOT NULL)",
    "CREATE TABLE events (task_id INTEGER NOT NULL REFERENCES tasks(id), sequence INTEGER NOT"
    " NULL, kind TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (task_id, sequence))",
]


async def asyncio_fifo(
    path: Path, *, tasks: int, entities: int, layout: str, writes_per_task: int, concurrency: int
) -> BaselineResult:
    """Submit ``tasks`` in ``layout`` order while ``concurrency`` runners take the head of
    any ready entity and make its remaining writes, one entity at a time each."""
    import aiosqlite

    assert writes_per_task >= 3, "a task writes at least QUEUED, STARTED and COMPLETED"
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        await conn.execute(f"PRAGMA {pragma}")
    for statement in _SCHEMA:
        await conn.execute(statement)
    NewRow = tuple[str, int] | None  # a submission's (entity, queue position)
    Write = tuple[int, str, str, NewRow]
    pending: list[tuple[Write, asyncio.Future[None]]] = []
    flushing: asyncio.Task[None] | None = None
    commits = 0

    async def write_one(task_id: int, kind: str, status: str, insert: NewRow) -> None:
        now = datetime.now(UTC).isoformat()
        if insert is not None:
            await conn.execute(
                "INSERT INTO tasks (id, entity, seq, status, last_sequence)"
                " VALUES (?, ?, ?, 'QUEUED', 0)",
                (task_id, insert[0], insert[1]),
            )
        cursor = await conn.execute(
            "UPDATE tasks SET last_sequence = last_sequence + 1, status = ? WHERE id = ?"
            " RETURNING last_sequence",
            (status, task_id),
        )
        row = await cursor.fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO events (task_id, sequence, kind, at) VALUES (?, ?, ?, ?)",
            (task_id, row[0], kind, now),
        )

    async def flush() -> None:
        nonlocal flushing, commits, pending
        while pending:
            batch, pending = pending, []
            await conn.execute("BEGIN IMMEDIATE")
            for args, _ in batch:
                await write_one(*args)
            await conn.execute("COMMIT")
            commits += 1
            for _, done in batch:
                done.set_result(None)
        flushing = None

    async def commit(task_id: int, kind: str, status: str, insert: NewRow) -> None:
        """Durable when it returns; writes waiting together share a commit."""
        nonlocal flushing
        done = asyncio.get_running_loop().create_future()
        pending.append(((task_id, kind, status, insert), done))
        if flushing is None:
            flushing = asyncio.create_task(flush())
        await done

    queues: dict[str, deque[int]] = defaultdict(deque)
    busy: set[str] = set()
    ready: asyncio.Queue[str] = asyncio.Queue()
    done = asyncio.Event()
    finished = 0
    # After the submit's commit: STARTED, the steps' commits, COMPLETED.
    run_commits = [("STARTED", "RUNNING")]
    run_commits += [("STEP", "RUNNING")] * (writes_per_task - 3)
    run_commits += [("COMPLETED", "COMPLETED")]

    async def runner() -> None:
        nonlocal finished
        while True:
            entity = await ready.get()
            task_id = queues[entity][0]
            for kind, status in run_commits:
                await commit(task_id, kind, status, None)
            queues[entity].popleft()
            finished += 1
            if queues[entity]:
                ready.put_nowait(entity)
            else:
                busy.discard(entity)
            if finished == tasks:
                done.set()

    runners = [asyncio.create_task(runner()) for _ in range(concurrency)]
    began = time.perf_counter()
    for task_id, entity_index in enumerate(layout_order(layout, tasks, entities), start=1):
        entity = f"e{entity_index}"
        await commit(task_id, "QUEUED", "QUEUED", (entity, task_id))
        queues[entity].append(task_id)
        if entity not in busy:
            busy.add(entity)
            ready.put_nowait(entity)
    await done.wait()
    seconds = time.perf_counter() - began
    for task in runners:
        task.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    check = await _check_asyncio(conn, tasks, writes_per_task)
    await conn.close()
    return BaselineResult(
        "asyncio+aiosqlite",
        layout,
        tasks,
        entities,
        seconds,
        1,
        float(writes_per_task),
        round(commits / tasks, 2),
        check,
    )


async def _check_asyncio(conn: Any, tasks: int, writes: int) -> RunCheck:
    check = RunCheck(tasks=tasks)
    cursor = await conn.execute("SELECT count(*) FROM tasks WHERE status = 'COMPLETED'")
    check.final = (await cursor.fetchone())[0]
    cursor = await conn.execute("SELECT count(*) FROM events")
    check.events = (await cursor.fetchone())[0]
    if check.events != tasks * writes:
        check.problem(f"{check.events} events stored, expected {tasks * writes}")
    # Per entity, the first write after QUEUED (its start) must come in queue order, each
    # after the previous task's COMPLETED: rowid order of events is write order.
    cursor = await conn.execute(
        "SELECT t.entity, t.seq, e.kind FROM events e JOIN tasks t ON t.id = e.task_id"
        " WHERE e.kind != 'QUEUED' ORDER BY e.rowid"
    )
    running: dict[str, int] = {}
    last_started: dict[str, int] = {}
    for entity, seq, kind in await cursor.fetchall():
        if kind == "COMPLETED":
            running.pop(entity, None)
            continue
        if entity in running and running[entity] != seq:
            check.fifo_ok = False
            check.problem(f"{entity}: task {seq} ran while {running[entity]} was running")
        if entity not in running:
            if last_started.get(entity, 0) > seq:
                check.fifo_ok = False
                check.problem(f"{entity}: task {seq} started after a later one")
            last_started[entity] = seq
            running[entity] = seq
    return check


# -- (b) procrastinate -----------------------------------------------------------------------


def procrastinate_installed() -> bool:
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return False
    return True


def _app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="bench_noop")
    async def bench_noop() -> None:
        return None

    return app


@contextlib.asynccontextmanager
async def _fresh_app(synchronous_commit: str | None) -> AsyncIterator[tuple[str, Any]]:
    """procrastinate on a fresh database of its own (its DSN), schema applied, open."""
    async with pg_database("procrastinate", synchronous_commit=synchronous_commit) as name:
        dsn = pg_dsn(name)
        app = _app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            yield dsn, app


async def procrastinate_run(
    *,
    tasks: int,
    entities: int,
    layout: str,
    workers: int,
    concurrency: int,
    workdir: Path,
    synchronous_commit: str | None = None,
    within: float = 600.0,
    submitters: int = 1,
) -> BaselineResult:
    import psycopg

    async with _fresh_app(synchronous_commit) as (dsn, app):
        procs: list[Proc] = []
        try:
            for index in range(workers):
                procs.append(
                    spawn(
                        f"procrastinate-{index}",
                        [
                            PYTHON,
                            "-m",
                            "bench.baselines",
                            "procrastinate-worker",
                            "--dsn",
                            dsn,
                            "--concurrency",
                            str(concurrency),
                        ],
                        clean_env(),
                        workdir,
                    )
                )
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await _wait_workers(conn, procs, workers)
                task = app.tasks["bench_noop"]
                began = datetime.now(UTC)
                started = time.perf_counter()
                await _defer_all(task, layout_order(layout, tasks, entities), submitters)
                deadline = time.monotonic() + within
                while True:
                    cursor = await conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs"
                        " WHERE status IN ('succeeded', 'failed')"
                    )
                    row = await cursor.fetchone()
                    assert row is not None
                    if row[0] >= tasks:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"procrastinate: {row[0]} of {tasks} done")
                    if not all(p.alive() for p in procs):
                        raise RuntimeError("a procrastinate worker died")
                    await asyncio.sleep(0.1)
                elapsed = time.perf_counter() - started
                cursor = await conn.execute(
                    "SELECT max(at) FROM procrastinate_events WHERE type = 'succeeded'"
                )
                row = await cursor.fetchone()
                seconds = (row[0] - began).total_seconds() if row and row[0] else elapsed
                check = await _check_procrastinate(conn, tasks)
        finally:
            for proc in procs:
                proc.stop()
    return BaselineResult("procrastinate", layout, tasks, entities, seconds, workers, check=check)


async def _defer_all(task: Any, order: list[int], submitters: int) -> None:
    """Defer a job per entry of ``order`` (``lock=`` its entity) from ``submitters``
    concurrent loops, each entity always from the same one, as our runs submit."""

    async def submitter(part: list[tuple[int, int]]) -> None:
        for _position, entity_index in part:
            await task.configure(lock=f"e{entity_index}").defer_async()

    await asyncio.gather(*(submitter(part) for part in partition(order, submitters)))


async def procrastinate_submit_alone(
    *,
    tasks: int,
    entities: int,
    layout: str,
    synchronous_commit: str | None = None,
    submitters: int = 1,
) -> SubmittedAlone:
    """procrastinate's defers as its runs make them (``lock=`` the entity, from
    ``submitters`` loops), with no worker: the ceiling of its runs, as ours is of ours."""
    import psycopg

    async with _fresh_app(synchronous_commit) as (dsn, app):
        task = app.tasks["bench_noop"]
        started = time.perf_counter()
        await _defer_all(task, layout_order(layout, tasks, entities), submitters)
        seconds = time.perf_counter() - started
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            )
            row = await cursor.fetchone()
    return SubmittedAlone("procrastinate", layout, tasks, seconds, row[0] if row else 0)


async def _wait_workers(conn: Any, procs: list[Proc], workers: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        cursor = await conn.execute("SELECT count(*) FROM procrastinate_workers")
        row = await cursor.fetchone()
        if row and row[0] >= workers:
            return
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError("procrastinate workers did not start")
        await asyncio.sleep(0.1)


async def _check_procrastinate(conn: Any, tasks: int) -> RunCheck:
    """Per lock, jobs must start in defer order (job id), each after the previous one
    succeeded. Ordered by event id, not by ``at``: procrastinate stamps events with
    ``now()``, the start of a transaction, which can precede a concurrent commit that the
    transaction's later statements already see; event ids are drawn when the row is
    written, so their order is the order things happened."""
    check = RunCheck(tasks=tasks)
    cursor = await conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    )
    row = await cursor.fetchone()
    check.final = row[0] if row else 0
    cursor = await conn.execute(
        "SELECT j.lock, j.id, e.type FROM procrastinate_events e"
        " JOIN procrastinate_jobs j ON j.id = e.job_id"
        " WHERE e.type IN ('started', 'succeeded') ORDER BY e.id"
    )
    rows = await cursor.fetchall()
    check.events = len(rows)
    running: dict[str, int] = {}
    last_started: dict[str, int] = {}
    for lock, job_id, kind in rows:
        if kind == "succeeded":
            if running.get(lock) == job_id:
                del running[lock]
            continue
        if lock in running:
            check.fifo_ok = False
            check.problem(f"lock {lock}: job {job_id} started while {running[lock]} ran")
        if last_started.get(lock, 0) > job_id:
            check.fifo_ok = False
            check.problem(f"lock {lock}: job {job_id} started after a later job")
        running[lock] = job_id
        last_started[lock] = job_id
    if check.final != tasks:
        check.problem(f"{check.final} of {tasks} jobs succeeded")
    return check


def _worker_main(dsn: str, concurrency: int) -> None:
    app = _app(dsn)
    app.run_worker(concurrency=concurrency, wait=True, install_signal_handlers=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("procrastinate-worker", help="(internal) a procrastinate worker")
    worker.add_argument("--dsn", required=True)
    worker.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    if args.command == "procrastinate-worker":
        _worker_main(args.dsn, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
