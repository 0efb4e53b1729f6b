"""SIGTERM: the server stops taking work, interrupts what cannot finish within the grace
period, puts it back to QUEUED (same attempt), and exits 0; the next start finishes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudops.domain import FINAL_STATUSES, EventKind, TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.acceptance._support import running_server, snapshot
from tests.conftest import make_environment, make_settings

#: How long the server may take to exit after SIGTERM.
EXIT_TIMEOUT = 15.0


async def queue_tasks(tmp: Path) -> list[str]:
    """Two tasks on each of three entities, queued by a runtime that runs nothing."""
    runtime = Runtime.build(make_settings(tmp), run_worker=False)
    await runtime.start()
    try:
        env = await make_environment(runtime, "prod")
        ids: list[str] = []
        for i in range(2):
            for result in (
                await runtime.tasks.deploy(inputs.Deploy(env.id, f"2.{i}.0")),
                await runtime.tasks.restart_workload(inputs.RestartWorkload("shop", "api")),
                await runtime.tasks.backup_database(inputs.BackupDatabase("POSTGRES", "orders-1")),
            ):
                assert result.value is not None, result.user_errors
                ids.append(result.value.id)
    finally:
        await runtime.stop()
    return ids


@pytest.mark.slow
def test_sigterm_leaves_unfinished_tasks_queued(tmp_path: Path) -> None:
    task_ids = asyncio.run(queue_tasks(tmp_path))

    # A step takes 1.5 s; the grace is 0.2 s, so running steps cannot finish in it.
    with running_server(
        tmp_path,
        "serve-1",
        CLOUDOPS_STEP_DELAY="1.5",
        CLOUDOPS_SHUTDOWN_GRACE="0.2",
    ) as server:
        server.wait_tasks(
            lambda counts: counts[TaskStatus.RUNNING] >= 1, timeout=20.0, what="a task RUNNING"
        )
        exit_code, took = server.terminate(EXIT_TIMEOUT)
        sigterm_log = server.log_tail()

    after_stop = snapshot(tmp_path)
    assert set(after_stop.tasks) == set(task_ids)
    running = [t.id for t in after_stop.with_status(TaskStatus.RUNNING)]
    assert not running, f"tasks left RUNNING after a graceful shutdown: {running}"

    interrupted: list[str] = []
    for task_id, task in after_stop.tasks.items():
        events = after_stop.events[task_id]
        assert task.attempt == 1, f"task {task_id} at attempt {task.attempt} after shutdown"
        if not any(e.kind == EventKind.STARTED for e in events):
            assert task.status == TaskStatus.QUEUED
            continue
        interrupted.append(task_id)
        last = events[-1]
        assert task.status == TaskStatus.QUEUED, (
            f"interrupted task {task_id} is {task.status}: {after_stop.kinds(task_id)}"
        )
        assert last.kind == EventKind.RETRY_SCHEDULED, after_stop.kinds(task_id)
        assert "worker shut down" in (last.message or ""), last.message
        assert last.status == TaskStatus.QUEUED
        assert task.run_after is None
    assert interrupted, "no task had started before SIGTERM"

    # The next start resumes them (same attempt) and finishes everything.
    with running_server(tmp_path, "serve-2", CLOUDOPS_STEP_DELAY="0") as server:
        server.wait_tasks(
            lambda counts: sum(counts[status] for status in FINAL_STATUSES) == len(task_ids),
            timeout=20.0,
            what="every task final",
        )
        server.terminate(EXIT_TIMEOUT)

    final = snapshot(tmp_path)
    for task_id, task in final.tasks.items():
        assert task.status == TaskStatus.COMPLETED, (task_id, task.status, task.error)
        assert task.attempt == 1, f"task {task_id} finished at attempt {task.attempt}"
        sequences = [e.sequence for e in final.events[task_id]]
        assert sequences == list(range(1, len(sequences) + 1)), f"{task_id}: {sequences}"
    for task_id in interrupted:
        started = [e for e in final.events[task_id] if e.kind == EventKind.STARTED]
        assert len(started) == 2, f"interrupted task {task_id}: {final.kinds(task_id)}"
        assert all(e.message == "attempt 1 of 3" for e in started), [e.message for e in started]

    # Checked last so that the state checks above report too when the exit code is wrong.
    assert exit_code == 0, (
        f"cloudops serve exited with {exit_code} (negative: killed by that signal) "
        f"{took:.1f}s after SIGTERM; expected 0. Log tail:\n{sigterm_log}"
    )
