"""SIGKILL in the middle of a flood: every acknowledged submission is stored.

On the embedded default, writes that arrive together share one SQLite transaction (a
group commit: ``db/one_trip.py``), and a mutation answers only once the transaction with
its task has committed. Eight GraphQL clients submit restarts as fast as the server takes
them while its worker runs them (no step delay), and the server is killed with SIGKILL
mid-stream: each task the server acknowledged must be in the database with its history
whole (1..n, nothing half-written), and a second server finishes all of them in queue
order per workload.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from cloudops.domain import FINAL_STATUSES, EventKind, TaskStatus
from tests.acceptance._support import Server, running_server, snapshot

RESTART = """mutation($input: RestartWorkloadInput!) {
  restartWorkload(input: $input) { task { id } userErrors { message } } }"""
WORKLOADS = [("shop", f"api-{i}") for i in range(4)]
CLIENTS = 8
#: Acknowledgements before the kill: enough that writes are in flight together.
KILL_AFTER = 120


async def flood(server: Server) -> list[str]:
    """Submit from CLIENTS clients until KILL_AFTER acknowledgements, then SIGKILL the
    server while they go on; the acknowledged task ids."""
    acknowledged: list[str] = []
    graphql = f"http://127.0.0.1:{server.port}/graphql"
    killed = asyncio.Event()

    async def client(number: int, http: httpx.AsyncClient) -> None:
        for n in itertools.count(number):
            namespace, name = WORKLOADS[n % len(WORKLOADS)]
            body = {
                "query": RESTART,
                "variables": {"input": {"namespace": namespace, "name": name}},
            }
            try:
                response = await http.post(graphql, json=body)
            except httpx.TransportError:
                assert killed.is_set(), "the server went away before it was killed"
                return
            payload = response.json()["data"]["restartWorkload"]
            assert payload["userErrors"] == [], payload
            acknowledged.append(payload["task"]["id"])
            if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                killed.set()
                server.kill()

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(client(number, http) for number in range(CLIENTS)))
    return acknowledged


@pytest.mark.slow
def test_sigkill_during_a_flood_keeps_every_acknowledged_submission(tmp_path: Path) -> None:
    with running_server(
        tmp_path, "serve-1", CLOUDOPS_STEP_DELAY="0", CLOUDOPS_WORKER_CONCURRENCY="8"
    ) as server:
        acknowledged = asyncio.run(flood(server))
        server.proc.wait(timeout=10)
        assert server.proc.returncode != 0

    at_kill = snapshot(tmp_path)
    missing = [task_id for task_id in acknowledged if task_id not in at_kill.tasks]
    assert not missing, f"{len(missing)} acknowledged submissions were lost: {missing[:5]}"
    for task_id, task in at_kill.tasks.items():
        events = at_kill.events[task_id]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1)), task_id
        assert task.last_sequence == len(events), task_id
        assert events[0].kind == EventKind.QUEUED
        assert events[-1].status == task.status, (task_id, at_kill.kinds(task_id))

    with running_server(
        tmp_path, "serve-2", CLOUDOPS_STEP_DELAY="0", CLOUDOPS_WORKER_CONCURRENCY="8"
    ) as server:
        server.wait_tasks(
            lambda counts: sum(counts[s] for s in FINAL_STATUSES) == len(at_kill.tasks),
            timeout=60.0,
            what="every stored task final",
        )
        server.terminate()

    final = snapshot(tmp_path)
    assert set(final.tasks) == set(at_kill.tasks)
    assert {t.status for t in final.tasks.values()} == {TaskStatus.COMPLETED}
    by_entity: dict[str, list[str]] = defaultdict(list)
    for task in sorted(final.tasks.values(), key=lambda t: t.queue_seq):
        by_entity[task.entity_id].append(task.id)
    for entity, ordered in by_entity.items():
        for previous, current in itertools.pairwise(ordered):
            done = max(e.at for e in final.events[previous] if e.kind == EventKind.COMPLETED)
            began = min(e.at for e in final.events[current] if e.kind == EventKind.STARTED)
            assert began >= done, f"{entity}: {current} started before {previous} completed"
