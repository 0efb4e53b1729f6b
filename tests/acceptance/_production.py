"""Helpers for the production-mode acceptance tests: real ``cloudops`` processes on a real
PostgreSQL with the shared session bus (``CLOUDOPS_BUS=postgres``).

Every test gets its own database (``cloudops_prod_<hex>``), created with asyncpg through
the ``postgres`` database and dropped at the end after its backends are terminated; the
schema comes from ``cloudops migrate``, run as a subprocess like an operator would. The
processes (``cloudops serve --no-worker``, ``cloudops worker``) write to log files in the
test's temporary directory. Progress and results are read from the database with a plain
:class:`~cloudops.db.engine.Database` and Core selects, never with ``Runtime.start`` while
workers run. When PostgreSQL cannot be reached the tests fail and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

import cloudops
from cloudops.db.engine import Database
from cloudops.db.models import Artifact, BusSession, SimulatedWorkload, Task, TaskEvent
from cloudops.domain import ArtifactKind, EventKind, TaskStatus
from cloudops.errors import DatabaseUnavailable
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.services.results import Result
from cloudops.settings import BusKind, Settings
from tests import pg
from tests.acceptance._support import CLOUDOPS, CloudopsProcess, clean_env, free_port, spawn

#: The cluster's maintenance database, reached as the superuser with trust auth.
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
ADMIN_DSN = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"

#: Bound for a process to answer /healthz (API) after it was spawned.
READY_TIMEOUT = 30.0
#: Interval between two reads of the task statuses.
POLL_INTERVAL = 1.0

#: Where an attempt's run ends in the journal.
ATTEMPT_ENDS = frozenset(
    {EventKind.COMPLETED, EventKind.RETRY_SCHEDULED, EventKind.FAILED, EventKind.CANCELLED}
)
LOST_LEASE = "worker lost its lease"
#: What reading the database raises while PostgreSQL is down or restarting.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    SQLAlchemyError,
    DatabaseUnavailable,
)


# -- the database -----------------------------------------------------------------------


def sqlalchemy_url(name: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def production_database() -> Iterator[str]:
    """A fresh, empty database for one test (fails the test when PostgreSQL is down);
    yields its SQLAlchemy URL and drops it at the end."""
    pg.require_postgres()
    name = f"cloudops_prod_{uuid.uuid4().hex}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy_url(name)
    finally:
        asyncio.run(_drop(name))


# -- the processes ------------------------------------------------------------------------


def production_env(url: str, tmp: Path, **overrides: str) -> dict[str, str]:
    values = {
        "CLOUDOPS_DATABASE_URL": url,
        "CLOUDOPS_BUS": "postgres",
        "CLOUDOPS_DATA_DIR": str(tmp / "data"),
        "CLOUDOPS_HOST": "127.0.0.1",
        "CLOUDOPS_REAPER_INTERVAL": "3600",
        "CLOUDOPS_SHUTDOWN_GRACE": "5",
        "CLOUDOPS_LOG_LEVEL": "INFO",
    }
    values.update(overrides)
    return clean_env(**values)


def migrate(url: str, tmp: Path) -> None:
    """``cloudops migrate`` against the test's database, as an operator would run it."""
    done = subprocess.run(
        [str(CLOUDOPS), "migrate"],
        cwd=tmp,
        env=production_env(url, tmp),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (
        f"cloudops migrate exited {done.returncode}:\n{done.stdout.decode()}{done.stderr.decode()}"
    )


@dataclass
class Proc(CloudopsProcess):
    """A process of the cluster; API processes also have an HTTP port."""

    port: int | None = None

    @property
    def healthz(self) -> str:
        assert self.port is not None, f"{self.name} serves no HTTP"
        return f"http://127.0.0.1:{self.port}/healthz"


@dataclass
class Cluster:
    """The processes of one test; whatever still runs at the end is killed."""

    url: str
    tmp: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, *args: str, http: bool = False) -> Proc:
        port = free_port() if http else None
        env = production_env(self.url, self.tmp, **self.env)
        if port is not None:
            env["CLOUDOPS_PORT"] = str(port)
        started = spawn(name, args, self.tmp, env)
        handle = Proc(started.name, started.proc, started.log_path, started._log, port)
        self.procs.append(handle)
        return handle

    def api(self, name: str = "api") -> Proc:
        """``cloudops serve --no-worker``, ready when /healthz says ok."""
        proc = self.spawn(name, "serve", "--no-worker", http=True)
        wait_healthy(proc, READY_TIMEOUT)
        return proc

    def worker(self, name: str) -> Proc:
        return self.spawn(name, "worker")

    def dead(self, expected: Sequence[Proc] = ()) -> list[Proc]:
        """Processes that exited although nobody stopped them."""
        return [p for p in self.procs if p not in expected and not p.alive()]

    def tails(self, lines: int = 4) -> str:
        """Per process: its state, a summary of its log, and its last few log records."""
        parts: list[str] = []
        for p in self.procs:
            state = "running" if p.alive() else f"exit {p.proc.returncode}"
            text = p.log_text()
            records = [line for line in text.splitlines() if _STAMP.match(line)][-lines:]
            parts.append(
                f"--- {p.name} (pid {p.pid}, {state}) {p.log_path}:\n"
                f"    {summarize_log(text, p.proc.returncode)}\n  last records:\n    "
                + "\n    ".join(line[:200] for line in records)
            )
        return "\n".join(parts)

    def stop_and_report(self, timeout: float = 20.0) -> str:
        """SIGTERM every process still running and summarize each log with its exit code:
        a worker whose receive loop died silently shows the traceback only when it stops."""
        for p in self.procs:
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(timeout=timeout)
        return "after SIGTERM to every process:\n" + "\n".join(
            f"--- {p.name} (pid {p.pid}, exit {p.proc.returncode}) {p.log_path}:\n"
            f"    {summarize_log(p.log_text(), p.proc.returncode)}"
            for p in self.procs
        )

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(timeout=10)
            p._log.close()


@contextlib.contextmanager
def cluster(url: str, tmp: Path, **env: str) -> Iterator[Cluster]:
    group = Cluster(url, tmp, env)
    try:
        yield group
    finally:
        group.close()


def wait_healthy(proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not proc.alive():
                raise AssertionError(
                    f"{proc.name} exited with {proc.proc.returncode} before it was ready; "
                    f"log tail:\n{proc.log_tail()}"
                )
            try:
                response = client.get(proc.healthz)
                last = f"HTTP {response.status_code}: {response.text}"
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{proc.name} not healthy after {timeout}s; last /healthz: {last}; "
                    f"log tail:\n{proc.log_tail()}"
                )
            time.sleep(0.1)


class HealthMonitor:
    """Polls an API process's /healthz in a thread and keeps every answer."""

    def __init__(self, url: str, interval: float = 0.25, timeout: float = 5.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        #: (wall-clock time, HTTP status or the transport error)
        self.samples: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-monitor", daemon=True)

    def __enter__(self) -> HealthMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                try:
                    answer: int | str = client.get(self.url).status_code
                except httpx.HTTPError as exc:
                    answer = repr(exc)
                self.samples.append((time.time(), answer))
                self._stop.wait(self.interval)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[str]:
        return [
            f"{datetime.fromtimestamp(at, UTC).isoformat()}: {answer}"
            for at, answer in self.samples
            if since <= at <= until and answer != 200
        ]

    def ok_after(self, moment: float) -> bool:
        return any(at >= moment and answer == 200 for at, answer in self.samples)


# -- reading the database -----------------------------------------------------------------


async def _with_db(url: str, read: Callable[[Database], Any]) -> Any:
    db = Database(url, pool_size=1)
    try:
        return await read(db)
    finally:
        await db.dispose()


async def _counts(db: Database) -> Counter[str]:
    async with db.read() as session:
        rows = await session.execute(select(Task.status, func.count()).group_by(Task.status))
        return Counter({status: count for status, count in rows})


def status_counts(url: str) -> Counter[str]:
    counts: Counter[str] = asyncio.run(_with_db(url, _counts))
    return counts


def running_held_by(url: str, pid: int) -> set[str]:
    """Ids of RUNNING tasks whose entity's lease belongs to the process ``pid``."""

    async def read(db: Database) -> set[str]:
        async with db.read() as session:
            rows = await session.execute(
                select(Task.id)
                .join(BusSession, BusSession.entity_id == Task.entity_id)
                .where(
                    Task.status == TaskStatus.RUNNING.value,
                    BusSession.owner.like(f"%:{pid}:%"),
                )
            )
            return set(rows.scalars())

    result: set[str] = asyncio.run(_with_db(url, read))
    return result


def wait_tasks(
    url: str,
    group: Cluster,
    until: Callable[[Counter[str]], bool],
    timeout: float,
    what: str,
    expected_dead: Sequence[Proc] = (),
    stall: float = 60.0,
) -> Counter[str]:
    """Read the task counts until ``until(counts)`` holds; fail after ``timeout`` seconds,
    after ``stall`` seconds in which no task changed status, or as soon as a process exits
    that nobody stopped."""
    deadline = time.monotonic() + timeout
    counts: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    changed = time.monotonic()
    while True:
        dead = group.dead(expected_dead)
        if dead:
            raise AssertionError(
                f"{', '.join(p.name for p in dead)} exited while waiting for {what}; "
                f"task statuses: {dict(counts)}\n{group.tails()}"
            )
        with contextlib.suppress(*DATABASE_DOWN):  # PostgreSQL may be restarting
            counts = status_counts(url)
            if until(counts):
                return counts
        if counts != seen:
            seen, changed = counts, time.monotonic()
        elif time.monotonic() - changed > stall:
            raise AssertionError(
                f"no task changed status for {stall:.0f}s while waiting for {what}; "
                f"task statuses: {dict(counts)}\n{group.tails()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; task statuses: "
                f"{dict(counts)}\n{group.tails()}"
            )
        time.sleep(POLL_INTERVAL)


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    type: str
    status: str
    entity_id: str
    attempt: int
    queue_seq: int
    last_sequence: int
    input: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class EventRow:
    sequence: int
    kind: str
    at: datetime
    message: str | None


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    id: str
    task_id: str
    kind: str
    path: str
    sha256: str
    size_bytes: int


@dataclass
class Snapshot:
    tasks: dict[str, TaskRow]
    events: dict[str, list[EventRow]]
    artifacts: list[ArtifactRow]
    workloads: dict[tuple[str, str], int]  # generation

    def kinds(self, task_id: str) -> list[str]:
        return [e.kind for e in self.events[task_id]]

    def by_entity(self) -> dict[str, list[str]]:
        """Task ids of each entity in queue order."""
        result: dict[str, list[str]] = defaultdict(list)
        for task in sorted(self.tasks.values(), key=lambda t: t.queue_seq):
            result[task.entity_id].append(task.id)
        return dict(result)

    def lost_lease_events(self, task_id: str) -> list[EventRow]:
        return [
            e
            for e in self.events[task_id]
            if e.kind == EventKind.RETRY_SCHEDULED and LOST_LEASE in (e.message or "")
        ]


async def _snapshot(db: Database) -> Snapshot:
    async with db.read() as session:
        task_rows = await session.execute(
            select(
                Task.id,
                Task.type,
                Task.status,
                Task.entity_id,
                Task.attempt,
                Task.queue_seq,
                Task.last_sequence,
                Task.input,
                Task.error,
            ).order_by(Task.queue_seq)
        )
        tasks = {row.id: TaskRow(*row) for row in task_rows}
        event_rows = await session.execute(
            select(
                TaskEvent.task_id,
                TaskEvent.sequence,
                TaskEvent.kind,
                TaskEvent.at,
                TaskEvent.message,
            ).order_by(TaskEvent.task_id, TaskEvent.sequence)
        )
        events: dict[str, list[EventRow]] = {task_id: [] for task_id in tasks}
        for row in event_rows:
            events.setdefault(row.task_id, []).append(
                EventRow(row.sequence, row.kind, row.at, row.message)
            )
        artifact_rows = await session.execute(
            select(
                Artifact.id,
                Artifact.task_id,
                Artifact.kind,
                Artifact.path,
                Artifact.sha256,
                Artifact.size_bytes,
            )
        )
        artifacts = [ArtifactRow(*row) for row in artifact_rows]
        workload_rows = await session.execute(
            select(
                SimulatedWorkload.namespace, SimulatedWorkload.name, SimulatedWorkload.generation
            )
        )
        workloads = {(row.namespace, row.name): row.generation for row in workload_rows}
    return Snapshot(tasks, events, artifacts, workloads)


def snapshot(url: str) -> Snapshot:
    """Tasks, events, artifacts and simulated workloads, read in one session."""
    snap: Snapshot = asyncio.run(_with_db(url, _snapshot))
    return snap


# -- the checks ---------------------------------------------------------------------------


def _first_at(snap: Snapshot, task_id: str, kind: EventKind) -> datetime | None:
    return next((e.at for e in snap.events[task_id] if e.kind == kind), None)


def _run_intervals(
    snap: Snapshot, task_id: str, problems: list[str]
) -> list[tuple[datetime, datetime, str]]:
    """(STARTED, end of that attempt, task) for every attempt the journal shows."""
    intervals: list[tuple[datetime, datetime, str]] = []
    started: datetime | None = None
    for event in snap.events[task_id]:
        if event.kind == EventKind.STARTED:
            if started is not None:
                problems.append(f"task {task_id} STARTED twice without an end in between")
            started = event.at
        elif event.kind in ATTEMPT_ENDS and started is not None:
            intervals.append((started, event.at, task_id))
            started = None
    if started is not None:
        problems.append(f"task {task_id} has an attempt that never ended: {snap.kinds(task_id)}")
    return intervals


def journal_problems(snap: Snapshot) -> list[str]:
    """Everything wrong with the journal: gaps in event sequences, a task that is not
    COMPLETED, FIFO broken per entity, two runs overlapping on one entity."""
    problems: list[str] = []
    for task_id, task in snap.tasks.items():
        if task.status != TaskStatus.COMPLETED:
            problems.append(
                f"task {task_id} ({task.type} on {task.entity_id}) is {task.status} at "
                f"attempt {task.attempt}: {task.error}; events {snap.kinds(task_id)}"
            )
        sequences = [e.sequence for e in snap.events[task_id]]
        if sequences != list(range(1, len(sequences) + 1)):
            problems.append(f"task {task_id}: event sequences not 1..n: {sequences}")
        if task.last_sequence != len(sequences):
            problems.append(
                f"task {task_id}: last_sequence {task.last_sequence} but {len(sequences)} events"
            )
        if snap.events[task_id] and snap.events[task_id][-1].kind != EventKind.COMPLETED:
            problems.append(f"task {task_id}: last event is {snap.events[task_id][-1].kind}")
    for entity, ordered in snap.by_entity().items():
        for previous, current in itertools.pairwise(ordered):
            done = _first_at(snap, previous, EventKind.COMPLETED)
            began = _first_at(snap, current, EventKind.STARTED)
            if done is None or began is None:
                continue  # reported above as not COMPLETED / never started
            if began < done:
                problems.append(
                    f"FIFO broken on {entity}: task {current} started at {began.isoformat()} "
                    f"before task {previous} (earlier in the queue) completed at "
                    f"{done.isoformat()}"
                )
        intervals = sorted(
            iv for task_id in ordered for iv in _run_intervals(snap, task_id, problems)
        )
        for (start_a, end_a, task_a), (start_b, _end_b, task_b) in itertools.pairwise(intervals):
            if start_b < end_a:
                problems.append(
                    f"two runs at once on {entity}: task {task_b} started at "
                    f"{start_b.isoformat()} while task {task_a} ran from {start_a.isoformat()} "
                    f"to {end_a.isoformat()}"
                )
    return problems


def effect_problems(snap: Snapshot, data_dir: Path) -> list[str]:
    """No effect twice: one rollout per restart task, one plan artifact per deploy (bytes
    on disk match), none for restarts."""
    problems: list[str] = []
    restarts: Counter[tuple[str, str]] = Counter()
    for task in snap.tasks.values():
        if task.type == "RESTART_WORKLOAD":
            restarts[(task.input["namespace"], task.input["name"])] += 1
    for key, count in sorted(restarts.items()):
        generation = snap.workloads.get(key)
        if generation != 1 + count:
            rolled = None if generation is None else generation - 1
            problems.append(
                f"workload {key[0]}/{key[1]} rolled out {rolled} times for {count} restart tasks "
                f"(generation {generation})"
            )
    by_task: dict[str, list[ArtifactRow]] = defaultdict(list)
    for artifact in snap.artifacts:
        by_task[artifact.task_id].append(artifact)
    expected = {"DEPLOYMENT": [ArtifactKind.DEPLOYMENT_PLAN.value], "RESTART_WORKLOAD": []}
    for task in snap.tasks.values():
        kinds = sorted(a.kind for a in by_task.get(task.id, []))
        if kinds != expected.get(task.type, kinds):
            problems.append(f"{task.type} task {task.id} has artifacts {kinds}")
    for artifact in snap.artifacts:
        stored = data_dir / artifact.path
        if not stored.is_file():
            problems.append(f"artifact file {stored} is missing")
            continue
        content = stored.read_bytes()
        if hashlib.sha256(content).hexdigest() != artifact.sha256 or len(content) != (
            artifact.size_bytes
        ):
            problems.append(f"artifact file {stored} does not match its recorded sha256/size")
    return problems


def report(problems: list[str], limit: int = 25) -> str:
    shown = "\n".join(problems[:limit])
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s):\n{shown}{more}"


# -- PostgreSQL itself --------------------------------------------------------------------


def pg_cluster() -> tuple[str, str]:
    """(version, name) of the local cluster ``pg_ctlcluster`` manages."""
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no cluster under /etc/postgresql"
    return versions[-1], "main"


def pg_ctl(action: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    version, name = pg_cluster()
    assert shutil.which("pg_ctlcluster"), "pg_ctlcluster is not installed"
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def pg_ready() -> bool:
    done = subprocess.run(
        ["pg_isready", "-h", PG_HOST, "-p", str(PG_PORT), "-t", "2"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
        check=False,
    )
    return done.returncode == 0


def wait_pg_ready(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pg_ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL not ready {timeout}s after its restart")
        time.sleep(0.1)


def postmaster_started() -> datetime:
    """When the running PostgreSQL server started: the moment it was back after a restart.
    ``pg_ctlcluster restart`` returns, and pg_isready answers, a while after that (seconds
    on some machines), and the processes under test may have reconnected and done their
    work in between."""

    async def read() -> datetime:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            value: datetime = await conn.fetchval("SELECT pg_postmaster_start_time()")
        finally:
            await conn.close()
        return value

    return asyncio.run(read())


def ensure_pg_running() -> None:
    """Start the cluster again if a test left it stopped (called from ``finally``)."""
    if pg_ready():
        return
    pg_ctl("start")
    wait_pg_ready(60.0)


# -- submitting ---------------------------------------------------------------------------


def production_settings(url: str, tmp: Path) -> Settings:
    """Settings of the in-process runtime that submits (it runs no worker)."""
    return Settings(
        database_url=url,
        bus=BusKind.POSTGRES,
        data_dir=tmp / "data",
        reaper_interval=3600.0,
        _env_file=None,
    )


@dataclass(frozen=True, slots=True)
class Mix:
    """What to submit: restarts of ``workloads`` workloads (namespace "prod", w0..) and
    deploys to ``environments`` environments, ``per_entity`` tasks each, interleaved."""

    workloads: int
    environments: int
    per_entity: int

    @property
    def entities(self) -> int:
        return self.workloads + self.environments

    @property
    def total(self) -> int:
        return self.entities * self.per_entity


async def _submit(settings: Settings, mix: Mix, batch: int) -> list[str]:
    runtime = Runtime.build(settings, run_worker=False)
    await runtime.start()
    try:
        project = await runtime.projects.create_project(inputs.CreateProject(name="prod-shop"))
        assert project.value is not None, project.user_errors
        env_ids: list[str] = []
        for i in range(mix.environments):
            env = await runtime.projects.create_environment(
                inputs.CreateEnvironment(project.value.id, f"env-{i}", "PROD")
            )
            assert env.value is not None, env.user_errors
            env_ids.append(env.value.id)
        calls: list[Callable[[], Awaitable[Result[Task]]]] = []
        for round_ in range(mix.per_entity):
            for w in range(mix.workloads):
                restart = inputs.RestartWorkload("prod", f"w{w}")
                calls.append(functools.partial(runtime.tasks.restart_workload, restart))
            for env_id in env_ids:
                deploy = inputs.Deploy(env_id, f"1.{round_}.0", image=f"shop:1.{round_}.0")
                calls.append(functools.partial(runtime.tasks.deploy, deploy))
        ids: list[str] = []
        for start in range(0, len(calls), batch):
            results = await asyncio.gather(*(call() for call in calls[start : start + batch]))
            for result in results:
                assert result.value is not None, result.user_errors
                assert result.value.status == TaskStatus.QUEUED, result.value.status
                ids.append(result.value.id)
    finally:
        await runtime.stop()
    return ids


def submit(url: str, tmp: Path, mix: Mix, batch: int = 50) -> list[str]:
    """Queue the mix through the service layer, in-process, on the test's database."""
    ids: list[str] = asyncio.run(_submit(production_settings(url, tmp), mix, batch))
    return ids


# -- the logs -----------------------------------------------------------------------------

#: Where the cloudops package lives: traceback frames under it are ours.
SOURCE = str(Path(cloudops.__file__).parent)
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z \[")
_RECORD = re.compile(
    r"^\S+Z \[(warning|error|critical)\s*\] (.*?)(?: task_id=\S+)?(?: attempt=\d+)?\s*$"
)
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Unavailable|Lost)\b.*")


def migrate_and_submit(url: str, tmp: Path, mix: Mix) -> list[str]:
    """The start of every production test: migrate as an operator would, then queue the
    mix through the service layer before any process runs."""
    migrate(url, tmp)
    task_ids = submit(url, tmp, mix)
    assert len(task_ids) == mix.total
    return task_ids


def cluster_settings(lease_seconds: float, step_delay: float) -> dict[str, str]:
    """The settings every process of a production test runs with."""
    return {
        "CLOUDOPS_LEASE_SECONDS": str(lease_seconds),
        "CLOUDOPS_STEP_DELAY": str(step_delay),
        "CLOUDOPS_RETRY_BASE_DELAY": "0.05",
        "CLOUDOPS_BUS_POLL_INTERVAL": "0.5",
        "CLOUDOPS_WORKER_CONCURRENCY": "8",
    }


def summarize_log(text: str, exit_code: int | None, limit: int = 8) -> str:
    """Warning/error records and exception lines of one log, counted, plus the cloudops
    frames of the traceback a process ended with when it exited non-zero."""
    records: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    lines = text.splitlines()
    for line in lines:
        if match := _RECORD.match(line):
            records[f"[{match.group(1)}] {' '.join(match.group(2).split())}"] += 1
        elif _EXCEPTION.match(line):
            exceptions[line[:200]] += 1
    parts = [f"{n} x {what}" for what, n in records.most_common(limit)]
    parts += [f"{n} x {what}" for what, n in exceptions.most_common(limit)]
    if exit_code not in (None, 0):
        # The last traceback in the log that went through our code, with its exception.
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
        for begin, end in reversed(list(itertools.pairwise([*starts, len(lines)]))):
            block = lines[begin:end]
            frames = [line.strip() for line in block if line.strip().startswith(f'File "{SOURCE}')]
            if frames:
                raised = next((line for line in reversed(block) if _EXCEPTION.match(line)), "")
                parts.append(
                    f"exit {exit_code}; the last traceback through cloudops:\n      "
                    + "\n      ".join([*frames, raised])
                )
                break
    return "\n    ".join(parts) or "no warnings or errors"


def log_excerpts(logs: Mapping[str, str], exits: Mapping[str, int | None] | None = None) -> str:
    """A summary of every process's log, for a failure message."""
    exits = exits or {}
    return "\n".join(
        f"  {name}: {summarize_log(text, exits.get(name))}" for name, text in logs.items()
    )


def log_times(text: str, action: str) -> list[datetime]:
    """When a process logged records with ``action=<action>`` (structlog's ISO stamps)."""
    times: list[datetime] = []
    for line in text.splitlines():
        if f"action={action}" in line:
            stamp = line.split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                times.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
    return times


def listen_connections(url: str) -> int:
    """Backends of the test's database whose last statement was LISTEN (bus listeners)."""
    name = url.rsplit("/", 1)[1]

    async def count() -> int:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            value = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
                name,
            )
        finally:
            await conn.close()
        return int(value)

    result: int = asyncio.run(count())
    return result
