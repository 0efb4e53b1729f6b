"""Helpers for the acceptance tests: real ``cloudops`` processes on a temporary SQLite file.

The server runs as a subprocess (``cloudops serve``) with its settings in ``CLOUDOPS_*``
variables and its working directory in the test's temporary directory, so no ``.env`` of
the repository is read. Its output goes to a log file there (never to a pipe that nobody
reads). Readiness is a 200 from GET /healthz; task progress is read from the database,
with a plain :class:`~cloudops.db.engine.Database` and never with ``Runtime.start``, whose
recovery would requeue the server's RUNNING tasks. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import func, select

from cloudops.db.engine import Database
from cloudops.db.models import Artifact, SimulatedWorkload, Task, TaskEvent

#: The console script installed next to the interpreter running the tests.
CLOUDOPS = Path(sys.executable).with_name("cloudops")

#: Bound for a server to answer /healthz after it was spawned.
READY_TIMEOUT = 20.0
#: Interval between two looks (a /healthz request or a read of the task statuses).
POLL_INTERVAL = 0.05


def database_url(tmp: Path) -> str:
    """The same file ``tests.conftest.make_settings`` uses."""
    return f"sqlite+aiosqlite:///{tmp / 'cloudops.db'}"


def data_dir(tmp: Path) -> Path:
    return tmp / "data"


def clean_env(**cloudops: str) -> dict[str, str]:
    """The test's environment without any CLOUDOPS_* variable, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDOPS_")}
    env.update(cloudops)
    return env


def server_env(tmp: Path, port: int, **overrides: str) -> dict[str, str]:
    values = {
        "CLOUDOPS_DATABASE_URL": database_url(tmp),
        "CLOUDOPS_DATA_DIR": str(data_dir(tmp)),
        "CLOUDOPS_HOST": "127.0.0.1",
        "CLOUDOPS_PORT": str(port),
        "CLOUDOPS_RETRY_BASE_DELAY": "0.01",
        "CLOUDOPS_REAPER_INTERVAL": "3600",
        "CLOUDOPS_LOG_LEVEL": "INFO",
    }
    values.update(overrides)
    return clean_env(**values)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class CloudopsProcess:
    """One ``cloudops`` process with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean anything up."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> tuple[int, float]:
        """SIGTERM and wait; returns the exit code and how long the exit took."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s of SIGTERM; log tail:\n"
                f"{self.log_tail()}"
            ) from None
        return code, time.monotonic() - began


def spawn(name: str, args: Sequence[str], cwd: Path, env: dict[str, str]) -> CloudopsProcess:
    """Start ``cloudops *args`` with its output in ``cwd/<name>.log``."""
    assert CLOUDOPS.exists(), f"console script not found at {CLOUDOPS}"
    log_path = cwd / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(CLOUDOPS), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return CloudopsProcess(name, proc, log_path, log)


@dataclass
class Server:
    """``cloudops serve`` on the test's SQLite file."""

    process: CloudopsProcess
    port: int
    tmp: Path

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.process.proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def kill(self) -> None:
        self.process.kill()

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        return self.process.terminate(timeout)

    def wait_health(
        self, until: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Poll GET /healthz until ``until(body)`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.proc.returncode} while waiting for {what}; "
                        f"log tail:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(self.url)
                    if response.status_code == 200:
                        body: dict[str, Any] = response.json()
                        last = body
                        if until(body):
                            return body
                    else:
                        last = f"HTTP {response.status_code}: {response.text}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; last /healthz: {last}; "
                        f"log tail:\n{self.log_tail()}"
                    )
                time.sleep(POLL_INTERVAL)

    def wait_tasks(
        self, until: Callable[[Counter[str]], bool], timeout: float, what: str
    ) -> Counter[str]:
        """Read the task counts per status from the database until ``until(counts)`` holds;
        fail after ``timeout`` seconds or as soon as the server exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode} while waiting for {what}; "
                    f"log tail:\n{self.log_tail()}"
                )
            counts = status_counts(self.tmp)
            if until(counts):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; task statuses: "
                    f"{dict(counts)}; log tail:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)


@contextlib.contextmanager
def running_server(tmp: Path, name: str, **overrides: str) -> Iterator[Server]:
    """Spawn ``cloudops serve``, wait until /healthz answers, and kill it at the end if it
    is still running (a test stops it itself when the way it stops matters)."""
    port = free_port()
    process = spawn(name, ["serve"], tmp, server_env(tmp, port, **overrides))
    try:
        server = Server(process, port, tmp)
        server.wait_health(lambda body: body.get("status") == "ok", READY_TIMEOUT, "ready")
        yield server
    finally:
        if process.alive():
            process.proc.kill()
        process.proc.wait(timeout=10)
        process._log.close()


# -- reading the database -----------------------------------------------------------------


@dataclass
class Snapshot:
    tasks: dict[str, Task]
    events: dict[str, list[TaskEvent]]
    artifacts: list[Artifact]
    workloads: dict[tuple[str, str], SimulatedWorkload]

    def with_status(self, status: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.status == status]

    def kinds(self, task_id: str) -> list[str]:
        return [e.kind for e in self.events[task_id]]


async def _read(url: str) -> Snapshot:
    db = Database(url)
    try:
        async with db.read() as session:
            tasks = list((await session.execute(select(Task).order_by(Task.queue_seq))).scalars())
            events = list(
                (
                    await session.execute(
                        select(TaskEvent).order_by(TaskEvent.task_id, TaskEvent.sequence)
                    )
                ).scalars()
            )
            artifacts = list((await session.execute(select(Artifact))).scalars())
            workloads = list((await session.execute(select(SimulatedWorkload))).scalars())
    finally:
        await db.dispose()
    by_task: dict[str, list[TaskEvent]] = defaultdict(list)
    for event in events:
        by_task[event.task_id].append(event)
    return Snapshot(
        tasks={t.id: t for t in tasks},
        events={t.id: by_task[t.id] for t in tasks},
        artifacts=artifacts,
        workloads={(w.namespace, w.name): w for w in workloads},
    )


async def _count(url: str) -> Counter[str]:
    db = Database(url)
    try:
        async with db.read() as session:
            rows = await session.execute(select(Task.status, func.count()).group_by(Task.status))
            return Counter({status: count for status, count in rows})
    finally:
        await db.dispose()


def status_counts(tmp: Path) -> Counter[str]:
    """How many tasks are in each status now."""
    return asyncio.run(_count(database_url(tmp)))


def snapshot(tmp: Path) -> Snapshot:
    """Everything the tests look at, read in one session from the SQLite file."""
    return asyncio.run(_read(database_url(tmp)))
