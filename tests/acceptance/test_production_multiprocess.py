"""Production mode: one API process and three worker processes share PostgreSQL; one worker
is killed with SIGKILL mid-run.

Tasks over 50 entities (restarts of 25 workloads, deploys to 25 environments) are queued
through the service layer; the workers take them from the PostgreSQL session bus. One
worker is killed while it runs tasks. Its leases expire after CLOUDOPS_LEASE_SECONDS and
the survivors take its entities over, running each orphan again as attempt 2. Then the
journal must show every task COMPLETED, gapless event sequences, FIFO and one run at a
time per entity, every effect exactly once, and the API must have answered /healthz
throughout.

2,000 tasks (40 per entity), as the issue asks; on this 2-core machine the run takes about
two minutes. ``PRODUCTION_TASKS_PER_ENTITY`` scales it (e.g. 8 for a quick local run).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudops.domain import FINAL_STATUSES, EventKind, TaskStatus
from tests.acceptance._production import (
    HealthMonitor,
    Mix,
    cluster,
    cluster_settings,
    effect_problems,
    journal_problems,
    log_excerpts,
    migrate_and_submit,
    production_database,
    report,
    running_held_by,
    snapshot,
    status_counts,
    wait_tasks,
)

LEASE_SECONDS = 3.0
#: How late after the kill the survivors may take an orphan over: the lease, plus slack
#: for the poll interval and a loaded machine.
TAKEOVER_SLACK = 5.0
WORKERS = 3
MIX = Mix(
    workloads=25,
    environments=25,
    per_entity=int(os.environ.get("PRODUCTION_TASKS_PER_ENTITY", "40")),
)


@pytest.mark.slow
def test_three_workers_one_killed(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    began = time.monotonic()
    with production_database() as url:
        mark = time.monotonic()
        task_ids = migrate_and_submit(url, tmp_path, MIX)
        timings["submit"] = time.monotonic() - mark

        with cluster(url, tmp_path, **cluster_settings(LEASE_SECONDS, 0.005)) as group:
            api = group.api()
            with HealthMonitor(api.healthz) as health:
                mark = time.monotonic()
                workers = [group.worker(f"worker-{i}") for i in range(WORKERS)]
                victim = workers[0]

                # -- kill one worker while it runs tasks ------------------------------
                quarter = MIX.total // 4
                wait_tasks(
                    url,
                    group,
                    lambda counts: counts[TaskStatus.COMPLETED] >= quarter,
                    timeout=240.0,
                    what=f"at least {quarter} tasks COMPLETED",
                )
                deadline = time.monotonic() + 30.0
                while not running_held_by(url, victim.pid):
                    assert time.monotonic() < deadline, (
                        f"{victim.name} (pid {victim.pid}) never held a RUNNING task\n"
                        f"{group.tails()}"
                    )
                    time.sleep(0.05)
                killed_at = datetime.now(UTC)
                victim.kill()
                # The victim can write nothing more, and nobody takes its entities over
                # before its leases expire: what it held RUNNING now is what it left.
                orphans = running_held_by(url, victim.pid)
                assert orphans, (
                    f"{victim.name} held no RUNNING task when it was killed (it held one a "
                    f"moment before); rerun"
                )
                at_kill = status_counts(url)
                assert at_kill[TaskStatus.COMPLETED] < MIX.total, "everything finished first"

                # -- the survivors finish everything ----------------------------------
                try:
                    wait_tasks(
                        url,
                        group,
                        lambda counts: sum(counts[s] for s in FINAL_STATUSES) == MIX.total,
                        timeout=max(240.0, MIX.total * 0.5),
                        what=f"all {MIX.total} tasks final after the kill",
                        expected_dead=[victim],
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{group.stop_and_report()}") from None
                timings["run"] = time.monotonic() - mark
                health_samples = len(health.samples)
                health_failures = health.failures()

            # -- SIGTERM the rest: they exit 0 ----------------------------------------
            exits = {p.name: p.terminate() for p in [*workers[1:], api]}
            logs = {p.name: p.log_text() for p in group.procs}

        final = snapshot(url)

    timings["total"] = time.monotonic() - began
    print(f"\n{MIX.total} tasks on {MIX.entities} entities; timings (s): {timings}")
    print(f"orphans of {victim.name}: {len(orphans)}; task statuses at kill: {dict(at_kill)}")

    assert set(final.tasks) == set(task_ids)
    problems = journal_problems(final) + effect_problems(final, tmp_path / "data")

    # The victim's orphans ran again as attempt 2 after a takeover within lease + slack
    # of the kill; no other task was retried (the survivors never lost a lease).
    window_end = killed_at + timedelta(seconds=LEASE_SECONDS + TAKEOVER_SLACK)
    for task_id, task in final.tasks.items():
        lost = final.lost_lease_events(task_id)
        retries = [e for e in final.events[task_id] if e.kind == EventKind.RETRY_SCHEDULED]
        if task_id in orphans:
            if task.attempt != 2 or len(lost) != 1 or len(retries) != 1:
                problems.append(
                    f"orphan {task_id} of the killed worker: attempt {task.attempt}, retries "
                    f"{[e.message for e in retries]}"
                )
        elif retries:
            problems.append(
                f"task {task_id} (not RUNNING on the killed worker) was retried: attempt "
                f"{task.attempt}, {[(e.at.isoformat(), e.message) for e in retries]}"
            )
        for event in lost:
            if task.attempt != 2:
                problems.append(
                    f"task {task_id} lost its lease but ended at attempt {task.attempt}"
                )
            if not killed_at <= event.at <= window_end:
                problems.append(
                    f"task {task_id}: '{event.message}' at {event.at.isoformat()}, not within "
                    f"{LEASE_SECONDS + TAKEOVER_SLACK:.0f}s of the kill at {killed_at.isoformat()}"
                )

    # The workers ran on the loop `cloudops serve` gets from uvicorn (cli.event_loop_factory).
    for worker in workers[1:]:
        if "worker running on the uvloop event loop" not in logs[worker.name]:
            problems.append(f"{worker.name} did not run on uvloop")

    # The API answered /healthz with 200 all along.
    assert health_samples > 10, f"only {health_samples} /healthz samples"
    if health_failures:
        problems.append(f"/healthz failed {len(health_failures)} times: {health_failures[:5]}")

    for name, (code, took) in exits.items():
        if code != 0:
            problems.append(f"{name} exited {code} after SIGTERM ({took:.1f}s)")

    if problems:
        exit_codes = {name: code for name, (code, _took) in exits.items()}
        raise AssertionError(
            f"{report(problems)}\nprocess logs in {tmp_path}:\n{log_excerpts(logs, exit_codes)}"
        )
