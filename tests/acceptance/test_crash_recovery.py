"""A server killed with SIGKILL mid-run loses nothing and does nothing twice.

Tasks are queued with a runtime that has no worker, a ``cloudops serve`` process starts
running them and is killed (SIGKILL) while some are RUNNING; a second server recovers the
orphans (attempt + 1) and finishes everything. Then the journal must show FIFO per entity,
no overlap per entity, gapless event sequences, and every effect exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from cloudops.domain import FINAL_STATUSES, ArtifactKind, EventKind, TaskStatus, TaskType
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.acceptance._support import Snapshot, data_dir, running_server, snapshot
from tests.conftest import make_environment, make_settings

DEPLOYS_PER_ENVIRONMENT = 4
RESTARTS_PER_WORKLOAD = 4
BACKUPS_PER_INSTANCE = 3
WORKLOADS = [("shop", "api"), ("shop", "worker")]
INSTANCES = ["orders-1", "billing-1"]
TOTAL = 2 * DEPLOYS_PER_ENVIRONMENT + 2 * RESTARTS_PER_WORKLOAD + 2 * BACKUPS_PER_INSTANCE

#: Where an attempt's run ends in the journal.
ATTEMPT_ENDS = {
    EventKind.COMPLETED,
    EventKind.RETRY_SCHEDULED,
    EventKind.FAILED,
    EventKind.CANCELLED,
}


async def queue_tasks(tmp: Path) -> list[str]:
    """Queue the mix on 6 entities, interleaved, with a runtime that runs nothing."""
    runtime = Runtime.build(make_settings(tmp), run_worker=False)
    await runtime.start()
    try:
        envs = [
            await make_environment(runtime, "prod"),
            await make_environment(runtime, "stage"),
        ]
        ids: list[str] = []
        for i in range(max(DEPLOYS_PER_ENVIRONMENT, RESTARTS_PER_WORKLOAD, BACKUPS_PER_INSTANCE)):
            results = []
            if i < DEPLOYS_PER_ENVIRONMENT:
                for env in envs:
                    results.append(
                        await runtime.tasks.deploy(
                            inputs.Deploy(env.id, f"1.{i}.0", image=f"shop:1.{i}.0")
                        )
                    )
            if i < RESTARTS_PER_WORKLOAD:
                for namespace, name in WORKLOADS:
                    restart = inputs.RestartWorkload(namespace, name)
                    results.append(await runtime.tasks.restart_workload(restart))
            if i < BACKUPS_PER_INSTANCE:
                for instance in INSTANCES:
                    results.append(
                        await runtime.tasks.backup_database(
                            inputs.BackupDatabase("POSTGRES", instance)
                        )
                    )
            for result in results:
                assert result.value is not None, result.user_errors
                assert result.value.status == TaskStatus.QUEUED
                ids.append(result.value.id)
    finally:
        await runtime.stop()
    return ids


def first_at(snap: Snapshot, task_id: str, kind: EventKind) -> datetime:
    for event in snap.events[task_id]:
        if event.kind == kind:
            return event.at
    raise AssertionError(f"task {task_id} has no {kind} event: {snap.kinds(task_id)}")


def run_intervals(snap: Snapshot, task_id: str) -> list[tuple[datetime, datetime]]:
    """(STARTED, end of that attempt) for every attempt the journal shows."""
    intervals: list[tuple[datetime, datetime]] = []
    started: datetime | None = None
    for event in snap.events[task_id]:
        if event.kind == EventKind.STARTED:
            assert started is None, f"task {task_id} STARTED twice without an end in between"
            started = event.at
        elif event.kind in ATTEMPT_ENDS and started is not None:
            intervals.append((started, event.at))
            started = None
    assert started is None, f"task {task_id} has an attempt that never ended"
    return intervals


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_completes_everything(tmp_path: Path) -> None:
    task_ids = asyncio.run(queue_tasks(tmp_path))
    assert len(task_ids) == TOTAL
    queued = snapshot(tmp_path)
    assert len(queued.tasks) == TOTAL
    assert {t.status for t in queued.tasks.values()} == {TaskStatus.QUEUED}

    # -- first server: killed while tasks run ---------------------------------------------
    with running_server(
        tmp_path, "serve-1", CLOUDOPS_STEP_DELAY="0.2", CLOUDOPS_WORKER_CONCURRENCY="8"
    ) as server:
        server.wait_tasks(
            lambda counts: counts[TaskStatus.COMPLETED] >= 3 and counts[TaskStatus.RUNNING] >= 1,
            timeout=20.0,
            what="at least 3 tasks COMPLETED and at least 1 RUNNING",
        )
        server.kill()
        assert server.proc.returncode != 0

    at_kill = snapshot(tmp_path)
    running_at_kill = {t.id for t in at_kill.with_status(TaskStatus.RUNNING)}
    completed_at_kill = {t.id for t in at_kill.with_status(TaskStatus.COMPLETED)}
    assert running_at_kill, "no task was RUNNING when the server was killed"
    assert len(completed_at_kill) >= 3, f"only {len(completed_at_kill)} completed before kill"
    assert len(completed_at_kill) < TOTAL, "everything finished before the kill"
    for task_id in running_at_kill:
        assert at_kill.tasks[task_id].attempt == 1

    # -- second server: recovers the orphans and finishes everything ----------------------
    with running_server(
        tmp_path, "serve-2", CLOUDOPS_STEP_DELAY="0.02", CLOUDOPS_WORKER_CONCURRENCY="8"
    ) as server:
        server.wait_tasks(
            lambda counts: sum(counts[status] for status in FINAL_STATUSES) == TOTAL,
            timeout=30.0,
            what="every task final",
        )
        server.terminate()

    final = snapshot(tmp_path)
    assert set(final.tasks) == set(task_ids)

    # Every task COMPLETED.
    not_completed = {
        t.id: (t.status, t.error) for t in final.tasks.values() if t.status != TaskStatus.COMPLETED
    }
    assert not not_completed, f"tasks not COMPLETED: {not_completed}"

    # The orphans are attempt 2 after a RETRY_SCHEDULED saying the worker died; no other
    # task was retried.
    for task_id, task in final.tasks.items():
        retries = [e for e in final.events[task_id] if e.kind == EventKind.RETRY_SCHEDULED]
        if task_id in running_at_kill:
            assert task.attempt == 2, f"orphan {task_id} ended at attempt {task.attempt}"
            assert len(retries) == 1, f"orphan {task_id}: {final.kinds(task_id)}"
            assert "worker died" in (retries[0].message or ""), retries[0].message
        else:
            assert task.attempt == 1, f"task {task_id} retried: {final.kinds(task_id)}"
            assert not retries, f"task {task_id} retried: {[e.message for e in retries]}"

    # Per task, event sequences are 1..n with no gap, and last_sequence is n.
    for task_id, task in final.tasks.items():
        sequences = [e.sequence for e in final.events[task_id]]
        assert sequences == list(range(1, len(sequences) + 1)), f"{task_id}: {sequences}"
        assert task.last_sequence == len(sequences)
        assert final.events[task_id][-1].kind == EventKind.COMPLETED

    # FIFO per entity and never two RUNNING at once per entity.
    by_entity: dict[str, list[str]] = defaultdict(list)
    for task in sorted(final.tasks.values(), key=lambda t: t.queue_seq):
        by_entity[task.entity_id].append(task.id)
    assert len(by_entity) == 6, sorted(by_entity)
    for entity, ordered in by_entity.items():
        for previous, current in itertools.pairwise(ordered):
            done = first_at(final, previous, EventKind.COMPLETED)
            began = first_at(final, current, EventKind.STARTED)
            assert began >= done, (
                f"{entity}: task {current} started at {began} before task {previous} "
                f"(earlier in the queue) completed at {done}"
            )
        intervals = sorted(iv for task_id in ordered for iv in run_intervals(final, task_id))
        for (start_a, end_a), (start_b, _end_b) in itertools.pairwise(intervals):
            assert start_b >= end_a, (
                f"{entity}: a run started at {start_b} while another ran from {start_a} to {end_a}"
            )

    # No step effect twice: one rollout per restart task.
    restarts: dict[tuple[str, str], int] = defaultdict(int)
    for task in final.tasks.values():
        if task.type == TaskType.RESTART_WORKLOAD:
            restarts[(task.input["namespace"], task.input["name"])] += 1
    assert set(restarts) == set(WORKLOADS)
    for key, count in restarts.items():
        workload = final.workloads.get(key)
        assert workload is not None, f"no simulated workload {key}"
        assert workload.generation == 1 + count, (
            f"workload {key} rolled out {workload.generation - 1} times for {count} restart tasks"
        )

    # Exactly one artifact per deploy and per backup, none for restarts; bytes match.
    by_task: dict[str, list[str]] = defaultdict(list)
    for artifact in final.artifacts:
        by_task[artifact.task_id].append(artifact.kind)
    expected_kind = {
        TaskType.DEPLOYMENT: [ArtifactKind.DEPLOYMENT_PLAN],
        TaskType.DB_BACKUP: [ArtifactKind.DB_BACKUP],
        TaskType.RESTART_WORKLOAD: [],
    }
    for task in final.tasks.values():
        assert by_task.get(task.id, []) == expected_kind[TaskType(task.type)], (
            f"{task.type} task {task.id} has artifacts {by_task.get(task.id, [])}"
        )
    assert len(final.artifacts) == 2 * DEPLOYS_PER_ENVIRONMENT + 2 * BACKUPS_PER_INSTANCE
    root = data_dir(tmp_path)
    for artifact in final.artifacts:
        stored = root / artifact.path
        assert stored.is_file(), f"artifact file {stored} is missing"
        content = stored.read_bytes()
        assert hashlib.sha256(content).hexdigest() == artifact.sha256, stored
        assert len(content) == artifact.size_bytes, stored
