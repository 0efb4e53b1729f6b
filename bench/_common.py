"""What every scenario needs: processes, fresh databases, the FIFO check, tables and JSON.

The scenarios measure the real thing (real ``cloudops`` processes on loopback ports, a
real SQLite file, a real PostgreSQL and Redis), so most of this module is about starting
those things reproducibly and checking afterwards, from the stored events, that what was
measured also kept the control plane's guarantees: a fast run that broke FIFO per entity
is not a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from sqlalchemy import select

from cloudops.db.engine import Database
from cloudops.db.models import Task, TaskEvent

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable

#: asyncpg DSN of the PostgreSQL server's maintenance database (superuser, trust auth).
ADMIN_DSN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
#: The Redis server used for the broadcast on the production backend.
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
#: Prefix of every database made here; a later run drops leftovers of a dead one.
PG_PREFIX = "cloudops_bench_"

READY_TIMEOUT = 60.0
FINAL_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")


# -- output ---------------------------------------------------------------------------


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else math.nan,
    }


@dataclass
class Target:
    """One line of the issue's targets, judged on this run's figures."""

    name: str
    value: float | None
    op: str  # ">=" or "<="
    threshold: float
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "N/A"
        ok = self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold
        return "PASS" if ok else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "note": self.note,
        }


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def print_targets(targets: Sequence[Target]) -> None:
    if not targets:
        return
    print_table(
        "Targets",
        ["target", "measured", "goal", "verdict", "note"],
        [
            (
                t.name,
                t.value if t.value is not None else math.nan,
                f"{t.op} {fmt(t.threshold)}",
                t.verdict,
                t.note,
            )
            for t in targets
        ],
    )


def python_speed_ms() -> float:
    """Milliseconds one core takes for a fixed pure-Python loop (best of 3): machines of
    one kind differ widely, and figures of runs on different machines compare only with
    this beside them (ratios in one run do not need it)."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    import cloudops

    revision = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cloudops_source": str(Path(cloudops.__file__).parent),
        "git": revision,
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python_loop_ms": python_speed_ms(),
    }


def write_results(scenario: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    directory = results_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scenario}-{utc_stamp()}.json"
    document = {"scenario": scenario, "machine": machine(), **payload}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(
        f"\nmachine: {document['machine']['cpu']} x {document['machine']['nproc']}, "
        f"python loop {document['machine']['python_loop_ms']} ms (lower is faster)"
    )
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


# -- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**cloudops: str) -> dict[str, str]:
    """This environment without any CLOUDOPS_* variable (a developer's shell or .env must
    not change what is measured), plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDOPS_")}
    env.update(cloudops)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def bench_settings_env(
    database_url: str, data_dir: Path, *, log_level: str = "WARNING", **overrides: str
) -> dict[str, str]:
    """CLOUDOPS_* values of every process a scenario starts: STEP_DELAY=0 (the work is the
    control plane's own), no reaper wake-ups, a long lease (no heartbeat traffic)."""
    values = {
        "CLOUDOPS_DATABASE_URL": database_url,
        "CLOUDOPS_DATA_DIR": str(data_dir),
        "CLOUDOPS_HOST": "127.0.0.1",
        "CLOUDOPS_STEP_DELAY": "0",
        "CLOUDOPS_REAPER_INTERVAL": "3600",
        "CLOUDOPS_SHUTDOWN_GRACE": "5",
        "CLOUDOPS_LOG_LEVEL": log_level,
    }
    values.update(overrides)
    return values


@dataclass
class Proc:
    """A child process with its output in a log file (never a pipe nobody reads)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        assert self.port is not None, f"{self.name} serves no HTTP"
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self._log is not None:
            self._log.flush()
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def peak_rss_mb(self) -> float:
        """VmHWM: the largest resident set the process has had."""
        return _status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return _status_kb(self.pid, "VmRSS") / 1024

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode


def _status_kb(pid: int, key: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return math.nan


def spawn(
    name: str, args: Sequence[str], env: dict[str, str], workdir: Path, port: int | None = None
) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115  (closed by Proc.stop)
    popen = subprocess.Popen(
        list(args),
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Proc(name, popen, log_path, port, log)


def spawn_server(
    name: str, settings_env: dict[str, str], workdir: Path, *, no_worker: bool = False
) -> Proc:
    """``cloudops serve`` with the bench handlers registered (see bench.handlers)."""
    port = free_port()
    args = [PYTHON, "-m", "bench.serve", "--port", str(port)]
    if no_worker:
        args.append("--no-worker")
    return spawn(name, args, clean_env(**settings_env), workdir, port)


def spawn_worker(name: str, settings_env: dict[str, str], workdir: Path) -> Proc:
    """``cloudops worker`` with the bench handlers registered (see bench.handlers)."""
    return spawn(name, [PYTHON, "-m", "bench.worker"], clean_env(**settings_env), workdir)


async def wait_healthy(proc: Proc, within: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(f"{proc.base_url}/healthz")
                if response.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not healthy after {within}s:\n{proc.log_tail()}")
            await asyncio.sleep(0.1)


def stop_all(procs: Iterable[Proc]) -> None:
    for proc in procs:
        proc.stop()


# -- PostgreSQL and Redis ----------------------------------------------------------------


def _server_root() -> str:
    return ADMIN_DSN.rsplit("/", 1)[0]


def pg_url(database: str) -> str:
    root = _server_root().replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{root}/{database}"


def pg_dsn(database: str) -> str:
    return f"{_server_root()}/{database}"


async def pg_unavailable() -> str | None:
    try:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    except Exception as exc:
        return f"PostgreSQL not reachable at {ADMIN_DSN}: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def pg_version() -> str | None:
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def create_pg_database(
    kind: str, *, synchronous_commit: str | None = None, template: str | None = None
) -> str:
    """A new empty database on the PostgreSQL server; its name. The name carries our pid,
    so a later run can drop what a killed run left behind."""
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        for (name,) in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", PG_PREFIX + "%"
        ):
            found = re.fullmatch(rf"{PG_PREFIX}\w+?_p(\d+)_[0-9a-f]+", name)
            if found and not _alive(int(found.group(1))):
                await _drop(conn, name)
        name = f"{PG_PREFIX}{kind}_p{os.getpid()}_{uuid.uuid4().hex[:8]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        if synchronous_commit is not None:
            await conn.execute(
                f'ALTER DATABASE "{name}" SET synchronous_commit TO {synchronous_commit}'
            )
    finally:
        await conn.close()
    return name


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await _drop(conn, name)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database(
    kind: str, *, synchronous_commit: str | None = None, template: str | None = None
) -> AsyncIterator[str]:
    """A fresh database for one measured run (its name), dropped afterwards."""
    name = await create_pg_database(kind, synchronous_commit=synchronous_commit, template=template)
    try:
        yield name
    finally:
        await drop_pg_database(name)


class MigratedTemplate:
    """One migrated database per invocation; every run gets a ``CREATE DATABASE ...
    TEMPLATE`` copy of it (much faster than running the migrations again per run)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        async with self._lock:
            if self.name is None:
                from cloudops.db.migrate import migrate

                name = await create_pg_database("template")
                db = Database(pg_url(name))
                try:
                    await migrate(db)
                finally:
                    await db.dispose()
                self.name = name
            return self.name

    async def drop(self) -> None:
        if self.name is not None:
            await drop_pg_database(self.name)
            self.name = None


async def pg_listeners(database: str) -> int:
    """Backends LISTENing in ``database``: one per started worker of the PostgreSQL bus."""
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            database,
        )
        return count
    finally:
        await conn.close()


async def redis_unavailable(url: str) -> str | None:
    from redis import asyncio as redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as exc:
        return f"Redis not reachable at {url}: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


async def redis_version(url: str) -> str | None:
    from redis import asyncio as redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        info = await client.info("server")
        return str(info.get("redis_version"))
    except Exception:
        return None
    finally:
        await client.aclose()


# -- the run's guarantees ----------------------------------------------------------------


@dataclass
class RunCheck:
    """What the stored events say about a run."""

    tasks: int = 0
    final: int = 0
    events: int = 0
    steps: int = 0
    fifo_ok: bool = True
    problems: list[str] = field(default_factory=list)
    first_at: datetime | None = None
    last_finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.fifo_ok and not self.problems and self.final == self.tasks

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "final": self.final,
            "events": self.events,
            "steps_completed": self.steps,
            "fifo_ok": self.fifo_ok,
            "ok": self.ok,
            "problems": self.problems,
        }


async def count_final(db: Database) -> int:
    from sqlalchemy import func

    async with db.read() as session:
        found = await session.scalar(
            select(func.count()).select_from(Task).where(Task.status.in_(FINAL_STATUSES))
        )
    return int(found or 0)


async def wait_all_final(
    db: Database, expected: int, within: float, poll: float = 0.1, stall: float = 60.0
) -> None:
    """Until ``expected`` tasks are final; fails after ``within`` seconds, or sooner when
    none finished for ``stall`` seconds (a broken worker must not cost the whole budget)."""
    deadline = time.monotonic() + within
    last, moved = -1, time.monotonic()
    while True:
        done = await count_final(db)
        if done >= expected:
            return
        now = time.monotonic()
        if done != last:
            last, moved = done, now
        if now > deadline:
            raise TimeoutError(f"only {done} of {expected} tasks final after {within:.0f}s")
        if now - moved > stall:
            raise TimeoutError(
                f"no task finished in {stall:.0f}s ({done} of {expected} final); "
                "rerun with --keep and read the process logs"
            )
        await asyncio.sleep(poll)


async def verify_run(
    db: Database, submitted: dict[str, list[str]] | None = None, *, status: str = "COMPLETED"
) -> RunCheck:
    """Check every task of the database from its stored events.

    - every task is final with ``status`` and its events are sequences 1..n, ending in one
      final event, with ``last_sequence`` = n (invariant 3);
    - per entity, tasks STARTED in queue order (queue_seq), each after the previous one's
      final event (one at a time, invariant 1);
    - when ``submitted`` (entity -> task ids in the order they were submitted) is given,
      queue order is submission order.
    """
    check = RunCheck()
    async with db.read() as session:
        tasks = (
            await session.execute(
                select(
                    Task.id,
                    Task.entity_id,
                    Task.queue_seq,
                    Task.status,
                    Task.last_sequence,
                    Task.created_at,
                    Task.finished_at,
                )
            )
        ).all()
        events = (
            await session.execute(
                select(
                    TaskEvent.task_id, TaskEvent.sequence, TaskEvent.kind, TaskEvent.at
                ).order_by(TaskEvent.task_id, TaskEvent.sequence)
            )
        ).all()
    by_task: dict[str, list[Any]] = defaultdict(list)
    for event in events:
        by_task[event.task_id].append(event)
    check.tasks = len(tasks)
    check.events = len(events)
    per_entity: dict[str, list[Any]] = defaultdict(list)
    for task in tasks:
        per_entity[task.entity_id].append(task)
        if task.status in FINAL_STATUSES:
            check.final += 1
        if task.status != status:
            check.problem(f"task {task.id} ended {task.status}, expected {status}")
        if check.first_at is None or task.created_at < check.first_at:
            check.first_at = task.created_at
        if task.finished_at is not None and (
            check.last_finished_at is None or task.finished_at > check.last_finished_at
        ):
            check.last_finished_at = task.finished_at
        own = by_task.get(task.id, [])
        sequences = [e.sequence for e in own]
        if sequences != list(range(1, len(own) + 1)) or len(own) != task.last_sequence:
            check.problem(f"task {task.id}: event sequences {sequences[:8]}... not 1..n")
        finals = [e for e in own if e.kind in FINAL_STATUSES]
        if len(finals) != 1 or (own and own[-1].kind not in FINAL_STATUSES):
            check.problem(f"task {task.id}: {len(finals)} final events, last is not final")
        check.steps += sum(1 for e in own if e.kind == "STEP_COMPLETED")
    for entity, queue in per_entity.items():
        queue.sort(key=lambda t: t.queue_seq)
        if submitted is not None and [t.id for t in queue] != submitted.get(entity):
            check.fifo_ok = False
            check.problem(f"entity {entity}: queue order is not submission order")
        previous_end: datetime | None = None
        previous_id = None
        for task in queue:
            own = by_task.get(task.id, [])
            started = [e.at for e in own if e.kind == "STARTED"]
            ended = [e.at for e in own if e.kind in FINAL_STATUSES]
            if not started or not ended:
                continue
            if previous_end is not None and min(started) < previous_end:
                check.fifo_ok = False
                check.problem(
                    f"entity {entity}: task {task.id} STARTED at {min(started).isoformat()} "
                    f"before {previous_id} ended at {previous_end.isoformat()}"
                )
            previous_end, previous_id = max(ended), task.id
    if submitted is not None:
        expected = sum(len(ids) for ids in submitted.values())
        if expected != check.tasks:
            check.problem(f"{check.tasks} tasks stored, {expected} submitted")
    return check


# -- workloads -------------------------------------------------------------------------

LAYOUTS = ("interleaved", "backlog")


def layout_order(layout: str, tasks: int, entities: int) -> list[int]:
    """Entity index of each task, in submission order."""
    if layout == "interleaved":
        return [i % entities for i in range(tasks)]
    if layout == "backlog":
        base, extra = divmod(tasks, entities)
        order: list[int] = []
        for entity in range(entities):
            order += [entity] * (base + (1 if entity < extra else 0))
        return order
    raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")


def partition(order: Sequence[int], clients: int) -> list[list[tuple[int, int]]]:
    """Split (position, entity) pairs over ``clients`` so that one entity is always
    submitted by one client, in order: per-entity submission order stays well defined
    however many clients submit at once."""
    parts: list[list[tuple[int, int]]] = [[] for _ in range(max(1, clients))]
    for position, entity in enumerate(order):
        parts[entity % len(parts)].append((position, entity))
    return parts


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def csv_ints(text: str) -> list[int]:
    return [int(part) for part in csv_list(text)]


@contextlib.contextmanager
def workdir(keep: bool, prefix: str) -> Iterator[Path]:
    """A scratch directory for data files and process logs; kept with --keep."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"cloudops-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# -- a running control plane ---------------------------------------------------------------


@dataclass
class Stack:
    """A control plane in processes: one API process (or none), and worker processes on
    the production backend. ``db`` is a handle of the bench's own for reading results."""

    backend: str
    database_url: str
    db: Database
    server: Proc | None
    workers: list[Proc]
    pg_name: str | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None, "this stack has no API process"
        return self.server.base_url

    @property
    def procs(self) -> list[Proc]:
        return [p for p in [self.server, *self.workers] if p is not None]


async def wait_pg_workers(name: str, procs: Sequence[Proc], count: int) -> None:
    """Until ``count`` workers of the PostgreSQL bus LISTEN (they take work from then on)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while await pg_listeners(name) < count:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start listening within {READY_TIMEOUT}s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_stack(
    backend: str,
    tmp: Path,
    *,
    workers: int = 1,
    api: bool = True,
    log_level: str = "WARNING",
    worker_concurrency: int = 8,
    redis_url: str = REDIS_URL,
    synchronous_commit: str | None = None,
    template: MigratedTemplate | None = None,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """``embedded``: one ``cloudops serve`` (API and worker) on a fresh SQLite file.
    ``postgres``: a fresh database, ``workers`` worker processes and, with ``api``, one
    ``cloudops serve --no-worker``; events go through Redis."""
    extra = dict(extra_env or {})
    extra.setdefault("CLOUDOPS_WORKER_CONCURRENCY", str(worker_concurrency))
    if backend == "embedded":
        url = f"sqlite+aiosqlite:///{tmp / 'cloudops.db'}"
        env = bench_settings_env(url, tmp / "data", log_level=log_level, **extra)
        server = spawn_server("serve", env, tmp)
        db = Database(url)
        try:
            await wait_healthy(server)
            yield Stack(backend, url, db, server, [])
        finally:
            server.stop()
            await db.dispose()
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}")
    source = await template.get() if template is not None else None
    async with pg_database(
        "cloudops", synchronous_commit=synchronous_commit, template=source
    ) as name:
        url = pg_url(name)
        db = Database(url)
        procs: list[Proc] = []
        try:
            if source is None:
                from cloudops.db.migrate import migrate

                await migrate(db)
            env = bench_settings_env(
                url,
                tmp / "data",
                log_level=log_level,
                CLOUDOPS_BUS="postgres",
                CLOUDOPS_BROADCAST_URL=redis_url,
                **extra,
            )
            procs += [spawn_worker(f"worker-{i}", env, tmp) for i in range(workers)]
            api_server = spawn_server("api", env, tmp, no_worker=True) if api else None
            if api_server is not None:
                procs.append(api_server)
                await wait_healthy(api_server)
            await wait_pg_workers(name, procs, workers)
            yield Stack(backend, url, db, api_server, procs[:workers], name)
        finally:
            stop_all(procs)
            await db.dispose()


# -- GraphQL clients --------------------------------------------------------------------------


class GraphQLSocket:
    """A bare graphql-transport-ws client: one WebSocket, ``connection_init`` then
    subscriptions by id. Bare on purpose: with a thousand of them in one process, the
    client's own cost per message must stay small next to the server's."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://", 1).rstrip("/") + "/graphql"
        self.ws: Any = None

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            max_size=None,
            open_timeout=60,
            ping_interval=None,
        )
        await self.ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        while True:
            message = json.loads(await self.ws.recv())
            if message["type"] == "connection_ack":
                return
            if message["type"] not in ("ping", "pong"):
                raise RuntimeError(f"unexpected message before connection_ack: {message}")

    async def subscribe(
        self, sub_id: str, query: str, variables: dict[str, Any] | None = None
    ) -> None:
        payload = {"query": query, "variables": variables or {}}
        await self.ws.send(json.dumps({"id": sub_id, "type": "subscribe", "payload": payload}))

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every message but pings (answered here); ends when the socket closes."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                if kind == "pong":
                    continue
                yield message
        except ConnectionClosed:
            return

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.ws = None


async def graphql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> Any:
    """POST a query; its data (GraphQL errors raise)."""
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


RESTART_MUTATION = """mutation($input: RestartWorkloadInput!) {
  restartWorkload(input: $input) { task { id } userErrors { message code } } }"""


async def submit_restart(client: httpx.AsyncClient, namespace: str, name: str) -> str:
    """Queue a one-step task (the bench handler under RESTART_WORKLOAD); its id."""
    data = await graphql(
        client, RESTART_MUTATION, {"input": {"namespace": namespace, "name": name}}
    )
    payload = data["restartWorkload"]
    if payload["task"] is None:
        raise RuntimeError(f"restartWorkload refused: {payload['userErrors']}")
    task_id: str = payload["task"]["id"]
    return task_id
