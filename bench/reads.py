"""Scenario 5: the dashboard's task list with a large history stored.

A SQLite file is seeded with N finished DEPLOYMENT tasks (100,000 by default) spread over
10 projects x 10 environments, each with its steps, its plan artifact and its event history
(10 % failed and dead-lettered), in one transaction; then ``cloudops serve`` starts on that data
and HTTP clients ask the task-list query in a loop for a fixed time: one client (the
latency of the query itself, as one user opening the dashboard sees it) and four (the
server saturated: requests/s, and a latency that is mostly waiting behind the others).

Two queries are measured: the issue's (``tasks(first: 50)`` with project, environment,
steps and artifacts) and the dashboard's own Tasks document (first 50, with totalCount,
pageInfo and the TaskSummaryFields fragment, whose queuePosition and counts cost extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    RESULTS_DIR,
    Target,
    bench_settings_env,
    print_table,
    print_targets,
    spawn_server,
    summary_ms,
    wait_healthy,
    workdir,
    write_results,
)
from cloudops.db.engine import Database
from cloudops.db.migrate import migrate
from cloudops.db.models import DEFAULT_ORGANIZATION_ID

QUERIES = {
    "issue": """query { tasks(first: 50) { edges { node {
      id project { id name } environment { id name } steps { name status } artifacts { id }
    } } } }""",
    "dashboard": """query Tasks($first: Int, $filter: TaskFilter) {
      tasks(first: $first, filter: $filter) {
        totalCount pageInfo { hasNextPage endCursor }
        edges { node { ...TaskSummaryFields } } } }
    fragment TaskSummaryFields on Task {
      id type status entityId attempt maxAttempts progress queuePosition deadLettered
      cancelRequested error runAfter createdAt updatedAt startedAt finishedAt
      project { id name } environment { id name } }""",
}
VARIABLES: dict[str, dict[str, Any]] = {"issue": {}, "dashboard": {"first": 50}}
STEPS = ("validate", "plan", "apply", "verify")


def _stamp(at: datetime) -> str:
    return at.isoformat()


def _step(
    index: int, name: str, status: str, at: datetime, message: str | None = None
) -> dict[str, Any]:
    done = status in ("COMPLETED", "FAILED")
    return {
        "index": index,
        "name": name,
        "status": status,
        "progress": 1.0 if status == "COMPLETED" else 0.0,
        "message": message,
        "startedAt": _stamp(at) if status != "PENDING" else None,
        "finishedAt": _stamp(at) if done else None,
    }


def _history(failed: bool, at: datetime) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """The steps of a finished task and its events (kind, status, progress, step, message,
    with_artifact), as the worker would have written them."""
    steps = [_step(i, name, "PENDING", at) for i, name in enumerate(STEPS)]
    events: list[tuple[Any, ...]] = [("QUEUED", "QUEUED", 0.0, None, "deployment queued", False)]
    events.append(("STARTED", "RUNNING", 0.0, None, "attempt 1 of 1", False))
    last = len(STEPS) - 2 if failed else len(STEPS)
    for index, name in enumerate(STEPS[:last]):
        steps[index] = _step(index, name, "RUNNING", at)
        events.append(("STEP_STARTED", "RUNNING", index / 4, dict(steps[index]), None, False))
        if name == "plan":
            events.append(
                ("ARTIFACT", "RUNNING", index / 4, dict(steps[index]), "deployment_plan", True)
            )
        else:
            events.append(("LOG", "RUNNING", index / 4, dict(steps[index]), f"{name} done", False))
        steps[index] = _step(index, name, "COMPLETED", at)
        events.append(
            ("STEP_COMPLETED", "RUNNING", (index + 1) / 4, dict(steps[index]), None, False)
        )
    if failed:
        index = last
        steps[index] = _step(index, STEPS[index], "FAILED", at, "rollout timed out")
        events.append(
            ("STEP_FAILED", "RUNNING", 0.5, dict(steps[index]), "rollout timed out", False)
        )
        events.append(("FAILED", "FAILED", 0.5, None, "dead-lettered after attempt 1", False))
    else:
        events.append(("COMPLETED", "COMPLETED", 1.0, None, "deployment completed", False))
    return steps, events


def _dt(at: datetime) -> str:
    """How SQLAlchemy's SQLite DateTime stores a UTC datetime."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _json(value: Any) -> str:
    """How SQLAlchemy's JSON type stores a value (None as JSON null)."""
    return json.dumps(value)


_random = random.Random()


def _new_id() -> str:
    """A random version-4 UUID string, like ``new_id()``, without uuid.UUID's overhead."""
    bits = _random.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62)
    h = f"{bits | (0x4 << 76) | (0x2 << 62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    marks = ", ".join("?" for _ in columns)
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
        [tuple(row[c] for c in columns) for row in rows],
    )


def seed(
    path: Path, tasks: int, *, projects: int = 10, environments: int = 10, events: bool = True
) -> dict[str, int]:
    """Write ``tasks`` finished deployments into the migrated SQLite file at ``path``.

    Plain sqlite3 and executemany, with every value in the form SQLAlchemy's column types
    store it (see :func:`_dt`, :func:`_json`), because going through Core's per-row type
    processing takes minutes for a history of a million events; the smoke test reads the
    rows back through the models to keep the two in step."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(seconds=tasks * 2)
    project_rows, env_rows = [], []
    for p in range(projects):
        project_id = _new_id()
        project_rows.append(
            {
                "id": project_id,
                "organization_id": DEFAULT_ORGANIZATION_ID,
                "name": f"project-{p:02d}",
                "email_recipients": _json([]),
                "created_at": _dt(first - timedelta(days=1, seconds=p)),
            }
        )
        for e in range(environments):
            env_rows.append(
                {
                    "id": _new_id(),
                    "project_id": project_id,
                    "name": f"env-{e:02d}",
                    "type": "DEV",
                    "expired": 0,
                    "created_at": _dt(first - timedelta(days=1)),
                }
            )
    counts = {"tasks": 0, "artifacts": 0, "events": 0}
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: random uuid keys
        with conn:
            _insert(conn, "projects", project_rows)
            _insert(conn, "environments", env_rows)
            batch: dict[str, list[dict[str, Any]]] = {
                "tasks": [],
                "artifacts": [],
                "task_events": [],
            }

            def flush() -> None:
                for table in ("tasks", "artifacts", "task_events"):
                    _insert(conn, table, batch[table])
                    counts[table.replace("task_", "")] += len(batch[table])
                    batch[table].clear()

            for i in range(tasks):
                env = env_rows[i % len(env_rows)]
                created = first + timedelta(seconds=2 * i)
                created_s = _dt(created)
                finished_s = _dt(created + timedelta(seconds=1))
                failed = i % 10 == 9
                task_id = _new_id()
                steps, history = _history(failed, created)
                artifact_id = _new_id()
                batch["artifacts"].append(
                    {
                        "id": artifact_id,
                        "task_id": task_id,
                        "kind": "deployment_plan",
                        "path": f"artifacts/{task_id}/plan.json",
                        "size_bytes": 612,
                        "sha256": _new_id().replace("-", "") * 2,
                        "created_at": created_s,
                    }
                )
                batch["tasks"].append(
                    {
                        "id": task_id,
                        "organization_id": DEFAULT_ORGANIZATION_ID,
                        "type": "DEPLOYMENT",
                        "status": "FAILED" if failed else "COMPLETED",
                        "entity_id": env["id"],
                        "project_id": env["project_id"],
                        "environment_id": env["id"],
                        "input_hash": _new_id().replace("-", "") * 2,
                        "attempt": 1,
                        "max_attempts": 1,
                        "progress": history[-1][2],
                        "steps": _json(steps),
                        "input": _json(
                            {"environmentId": env["id"], "version": f"1.{i}", "image": None}
                        ),
                        "metadata": _json({}),
                        "error": "step 'apply' failed: rollout timed out" if failed else None,
                        "dead_lettered": int(failed),
                        "cancel_requested": 0,
                        "queue_seq": i + 1,
                        "last_sequence": len(history) if events else 0,
                        "created_at": created_s,
                        "updated_at": finished_s,
                        "started_at": created_s,
                        "finished_at": finished_s,
                    }
                )
                if events:
                    for sequence, (
                        kind,
                        status,
                        progress,
                        step,
                        message,
                        with_artifact,
                    ) in enumerate(history, start=1):
                        batch["task_events"].append(
                            {
                                "id": _new_id(),
                                "task_id": task_id,
                                "sequence": sequence,
                                "kind": kind,
                                "at": created_s if sequence < len(history) else finished_s,
                                "status": status,
                                "progress": progress,
                                "entity_id": env["id"],
                                "type": "DEPLOYMENT",
                                "project_id": env["project_id"],
                                "step": _json(step),
                                "message": message,
                                "artifact_id": artifact_id if with_artifact else None,
                            }
                        )
                if len(batch["tasks"]) >= 5000:
                    flush()
            flush()
    finally:
        conn.close()
    return counts


@dataclass
class Load:
    query: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": len(self.latencies),
            "requests_per_s": round(self.rps, 1),
            "errors": self.errors,
            "first_error": self.first_error,
            **summary_ms(self.latencies),
        }


async def hammer(base_url: str, name: str, clients: int, seconds: float, warmup: int) -> Load:
    """``clients`` loops asking the query back to back for ``seconds`` (bounded)."""
    load = Load(name, clients)
    body = {"query": QUERIES[name], "variables": VARIABLES[name]}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def ask() -> float:
            began = time.perf_counter()
            response = await client.post("/graphql", json=body)
            elapsed = time.perf_counter() - began
            data = response.json()
            if response.status_code != 200 or data.get("errors"):
                raise RuntimeError(f"HTTP {response.status_code}: {str(data)[:300]}")
            if len(data["data"]["tasks"]["edges"]) != 50:
                raise RuntimeError("the query did not return 50 tasks")
            return elapsed

        for _ in range(warmup):
            await ask()
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < deadline:
                try:
                    load.latencies.append(await ask())
                except Exception as exc:
                    load.errors += 1
                    load.first_error = load.first_error or str(exc)
                    if load.errors > 100:
                        return

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        load.seconds = time.perf_counter() - began
    return load


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    loads: list[Load] = []
    with workdir(args.keep, "reads") as tmp:
        db_path = tmp / "cloudops.db"
        url = f"sqlite+aiosqlite:///{db_path}"
        db = Database(url)
        await migrate(db)
        await db.dispose()
        print(f"seeding {args.tasks:,} tasks ...", flush=True)
        began = time.perf_counter()
        counts = await asyncio.to_thread(seed, db_path, args.tasks, events=not args.no_events)
        seed_seconds = time.perf_counter() - began
        print(f"  {counts} in {seed_seconds:.1f}s", flush=True)
        server = spawn_server(
            "serve", bench_settings_env(url, tmp / "data", log_level=args.log_level), tmp
        )
        try:
            await wait_healthy(server)
            for name in args.queries:
                for clients in args.clients:
                    print(
                        f"query {name}: {clients} client(s) for {args.seconds:.0f}s ...",
                        flush=True,
                    )
                    loads.append(
                        await hammer(server.base_url, name, clients, args.seconds, args.warmup)
                    )
            peak_rss = server.peak_rss_mb()
        finally:
            server.stop()
    targets = [
        Target(
            f"{load.query} query p99 (ms), {args.tasks:,} tasks, {_clients(load.clients)}",
            load.as_dict()["p99_ms"],
            "<=",
            50.0,
        )
        for load in loads
    ]
    print_table(
        f"Task list with {counts['tasks']:,} tasks stored",
        ["query", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"],
        [
            (
                load.query,
                load.clients,
                len(load.latencies),
                load.rps,
                load.as_dict()["p50_ms"],
                load.as_dict()["p95_ms"],
                load.as_dict()["p99_ms"],
                load.as_dict()["max_ms"],
                load.errors,
            )
            for load in loads
        ],
    )
    print_targets(targets)
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seeded": counts,
        "seed_seconds": round(seed_seconds, 1),
        "server_peak_rss_mb": round(peak_rss, 1),
        "loads": [load.as_dict() for load in loads],
        "targets": [t.as_dict() for t in targets],
    }


def _clients(count: int) -> str:
    return "1 client" if count == 1 else f"{count} clients"


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("one or more client counts >= 1, comma separated")
    return counts


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reads",
        description="The dashboard's task-list query with many tasks stored (scenario 5). "
        "Writes bench/results/reads-<time>.json.",
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks stored (100000)")
    parser.add_argument(
        "--no-events", action="store_true", help="seed tasks without their event history"
    )
    parser.add_argument(
        "--clients",
        type=_counts,
        default=[1, 4],
        help="concurrent HTTP clients, one run per count (1,4)",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="per query and count (15)")
    parser.add_argument("--warmup", type=int, default=5, help="requests before measuring (5)")
    parser.add_argument(
        "--queries",
        type=lambda text: [q for q in text.split(",") if q],
        default=["issue", "dashboard"],
        help="issue,dashboard",
    )
    parser.add_argument("--log-level", default="WARNING", help="CLOUDOPS_LOG_LEVEL (WARNING)")
    parser.add_argument("--keep", action="store_true", help="keep the data file and logs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    for name in args.queries:
        if name not in QUERIES:
            parser.error(f"--queries: unknown query {name!r}")
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    result = await scenario(args)
    write_results("reads", result, args.results_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    asyncio.run(amain(parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
