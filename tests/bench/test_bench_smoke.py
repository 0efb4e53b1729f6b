"""Each benchmark scenario, tiny, so the suite cannot rot: it must finish and its own
checks (FIFO per entity, sequences 1..n, every event delivered) must pass. No timing is
asserted: these machines are too small and too busy for that to mean anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from bench.baselines import procrastinate_installed
from sqlalchemy import select

from bench import fanout, latency, reads, throughput
from cloudops.db.engine import Database
from cloudops.db.migrate import migrate
from cloudops.db.models import Artifact, Environment, Project, Task, TaskEvent
from cloudops.domain import TaskStatus
from tests.pg import require_postgres
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def test_throughput_embedded(tmp_path: Path) -> None:
    opts = throughput.parse(
        [
            "--tasks", "20",
            "--entities", "4",
            "--backends", "embedded",
            "--via", "service",
            "--baselines", "asyncio",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    result = await throughput.amain(opts)
    assert len(result["runs"]) == 2  # both layouts
    for run in result["runs"]:
        assert run["error"] is None, run
        assert run["check"]["ok"] and run["check"]["fifo_ok"], run["check"]
        assert run["check"]["final"] == 20
    # Baseline (a) for each layout, making the writes per task our runs measured.
    assert len(result["baselines"]) == 2
    for baseline in result["baselines"]:
        assert baseline["check"]["ok"], baseline
        assert baseline["writes_per_task"] == round(result["runs"][0]["writes_per_task"]) == 3
    assert await asyncio.to_thread(lambda: list(tmp_path.glob("throughput-*.json")))


async def test_throughput_deployment_embedded(tmp_path: Path) -> None:
    opts = throughput.parse(
        [
            "--task", "deployment",
            "--tasks", "8",
            "--entities", "2",
            "--backends", "embedded",
            "--layouts", "backlog",
            "--baselines", "none",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    result = await throughput.amain(opts)
    (run,) = result["runs"]
    assert run["error"] is None and run["check"]["ok"], run
    assert run["check"]["steps_completed"] == 8 * 4


async def throughput_on_postgres(tmp_path: Path, *args: str) -> dict[str, Any]:
    """The throughput scenario on PostgreSQL with 1 worker, against a Redis of its own."""
    require_postgres()
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        opts = throughput.parse(
            [
                *args,
                "--backends", "postgres",
                "--workers", "1",
                "--baselines", "procrastinate",
                "--redis-url", redis.url,
                "--results-dir", str(tmp_path),
            ]
        )  # fmt: skip
        return await throughput.amain(opts)
    finally:
        redis.stop()


async def test_throughput_postgres(tmp_path: Path) -> None:
    result = await throughput_on_postgres(
        tmp_path, "--tasks", "20", "--entities", "4", "--via", "service,graphql",
        "--layouts", "backlog",
    )  # fmt: skip
    assert len(result["runs"]) == 2  # service layer, and GraphQL to serve --no-worker
    for run in result["runs"]:
        assert run["error"] is None, run
        assert run["check"]["ok"] and run["check"]["fifo_ok"], run["check"]
    if procrastinate_installed():
        (baseline,) = result["baselines"]
        assert baseline["check"]["ok"], baseline
    else:
        assert any("skipped" in note for note in result["notes"])


async def test_throughput_postgres_submitting_alone(tmp_path: Path) -> None:
    """The interleaved layout's ceiling: each system's submissions timed with no worker,
    every one of them found stored and waiting afterwards; from two submitters at once,
    each entity's still in order (the runs' FIFO checks)."""
    result = await throughput_on_postgres(
        tmp_path, "--tasks", "12", "--entities", "3", "--layouts", "interleaved",
        "--submitters", "2",
    )  # fmt: skip
    (run,) = result["runs"]
    assert run["error"] is None and run["check"]["ok"], run
    assert all(b["check"]["ok"] for b in result["baselines"]), result["baselines"]
    alone = {a["name"]: a for a in result["submitted_alone"]}
    assert alone["cloudops"]["ok"] and alone["cloudops"]["stored"] == 12, alone
    if procrastinate_installed():
        assert alone["procrastinate"]["ok"] and alone["procrastinate"]["stored"] == 12, alone
        (ceiling,) = result["ceilings"]
        assert ceiling["baseline"] == "procrastinate/interleaved/1w"
        assert ceiling["ceiling"] > 0


async def test_latency(tmp_path: Path) -> None:
    args = latency.parse(
        [
            "--samples", "5",
            "--load-samples", "3",
            "--load-warmup", "0.5",
            "--entities", "4",
            "--clients", "2",
            "--max-load-seconds", "60",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    result = await latency.amain(args)
    idle, loaded = result["phases"]
    assert idle["to_started"]["count"] == 5 and idle["to_completed"]["count"] == 5
    assert loaded["to_completed"]["count"] == 3


async def test_fanout(tmp_path: Path) -> None:
    args = fanout.parse(
        [
            "--subscribers", "5",
            "--tasks", "10",
            "--entities", "4",
            "--max-seconds", "60",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    result = await fanout.amain(args)
    (size,) = result["sizes"]
    assert size["every_event_to_every_subscriber"], size["problems"]
    assert size["stored_events"] == 10 * 5
    assert size["deliveries"] == 5 * size["stored_events"]


async def test_reads(tmp_path: Path) -> None:
    args = reads.parse(
        ["--tasks", "200", "--seconds", "0.5", "--warmup", "1", "--results-dir", str(tmp_path)]
    )
    result = await reads.amain(args)
    assert result["seeded"]["tasks"] == 200
    for load in result["loads"]:
        assert load["errors"] == 0 and load["requests"] > 0, load


async def test_reads_seed_matches_the_models(tmp_path: Path) -> None:
    """The seed writes rows with plain sqlite3; the models must read them back as the
    application's own writes (aware datetimes, JSON, the event history 1..n)."""
    path = tmp_path / "seed.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(db)
        reads.seed(path, 20)
        async with db.read() as session:
            tasks = (await session.execute(select(Task))).scalars().all()
            assert len(tasks) == 20
            assert {t.status for t in tasks} <= {TaskStatus.COMPLETED, TaskStatus.FAILED}
            for task in tasks:
                assert task.created_at.tzinfo is not None and task.finished_at is not None
                assert [s["name"] for s in task.steps] == list(reads.STEPS)
                events = (
                    (
                        await session.execute(
                            select(TaskEvent)
                            .where(TaskEvent.task_id == task.id)
                            .order_by(TaskEvent.sequence)
                        )
                    )
                    .scalars()
                    .all()
                )
                assert [e.sequence for e in events] == list(range(1, task.last_sequence + 1))
                assert events[-1].status == task.status
                assert await session.get(Environment, task.environment_id) is not None
            assert len((await session.execute(select(Project))).scalars().all()) == 10
            assert len((await session.execute(select(Artifact))).scalars().all()) == 20
    finally:
        await db.dispose()
