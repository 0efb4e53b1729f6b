"""Production mode: PostgreSQL restarts mid-run and every process reconnects by itself.

One API process and two worker processes run tasks on PostgreSQL with the shared session
bus. While tasks run, the cluster is restarted (``pg_ctlcluster ... restart``, fast mode:
every connection is cut). No process is restarted by the test: each must reconnect on its
own, the workers must pick their work up again (an attempt cut off by the restart is taken
over after its lease expires and runs again as attempt + 1), every task must end
COMPLETED with the journal intact (gapless, FIFO, one run at a time per entity, effects
once), and /healthz must answer 200 again. PostgreSQL is started again in ``finally``
whatever happens.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudops.domain import FINAL_STATUSES, EventKind, TaskStatus
from tests.acceptance._production import (
    HealthMonitor,
    Mix,
    cluster,
    cluster_settings,
    effect_problems,
    ensure_pg_running,
    journal_problems,
    listen_connections,
    log_excerpts,
    log_times,
    migrate_and_submit,
    pg_ctl,
    postmaster_started,
    production_database,
    report,
    snapshot,
    wait_healthy,
    wait_pg_ready,
    wait_tasks,
)

LEASE_SECONDS = 3.0
WORKERS = 2
MIX = Mix(workloads=10, environments=10, per_entity=10)
#: How long /healthz may take to answer 200 again once PostgreSQL accepts connections.
HEALTH_RECOVERY = 30.0


@pytest.mark.slow
def test_postgres_restart_mid_run(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    began = time.monotonic()
    with production_database() as url:
        try:
            task_ids = migrate_and_submit(url, tmp_path, MIX)

            with cluster(url, tmp_path, **cluster_settings(LEASE_SECONDS, 0.02)) as group:
                api = group.api()
                with HealthMonitor(api.healthz) as health:
                    mark = time.monotonic()
                    for i in range(WORKERS):
                        group.worker(f"worker-{i}")
                    fifth = MIX.total // 5
                    wait_tasks(
                        url,
                        group,
                        lambda counts: (
                            counts[TaskStatus.COMPLETED] >= fifth
                            and counts[TaskStatus.RUNNING] >= 1
                        ),
                        timeout=120.0,
                        what=f"at least {fifth} tasks COMPLETED and one RUNNING",
                    )

                    # -- restart PostgreSQL under the running processes ----------------
                    restart_began = time.time()
                    restarted_at = datetime.now(UTC)
                    done = pg_ctl("restart")
                    assert done.returncode == 0, (
                        f"pg_ctlcluster restart exited {done.returncode}: "
                        f"{done.stdout.decode()}{done.stderr.decode()}"
                    )
                    wait_pg_ready()
                    pg_back = postmaster_started()
                    assert pg_back > restarted_at, (pg_back, restarted_at)
                    timings["pg_restart"] = time.time() - restart_began

                    # /healthz comes back to 200 without touching the API process.
                    mark_health = time.monotonic()
                    wait_healthy(api, HEALTH_RECOVERY)
                    timings["healthz_back"] = time.monotonic() - mark_health

                    # -- every task finishes, with no process restarted ----------------
                    try:
                        counts = wait_tasks(
                            url,
                            group,
                            lambda counts: sum(counts[s] for s in FINAL_STATUSES) == MIX.total,
                            timeout=180.0,
                            what=f"all {MIX.total} tasks final after the restart",
                            stall=30.0,
                        )
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}\n{group.stop_and_report()}") from None
                    timings["run"] = time.monotonic() - mark
                    listeners = listen_connections(url)
                    failures_before = health.failures(until=restart_began)
                    samples_after = [a for at, a in health.samples if at >= restart_began]

                exits = {p.name: p.terminate() for p in group.procs}
                logs = {p.name: p.log_text() for p in group.procs}
            final = snapshot(url)
        finally:
            ensure_pg_running()

    timings["total"] = time.monotonic() - began
    retried = {t.id: t.attempt for t in final.tasks.values() if t.attempt > 1}
    print(f"\n{MIX.total} tasks on {MIX.entities} entities; timings (s): {timings}")
    print(f"final statuses: {dict(counts)}; tasks retried after the restart: {len(retried)}")
    print(f"/healthz answers from the restart on: {samples_after[:12]}")

    assert set(final.tasks) == set(task_ids)
    problems = journal_problems(final) + effect_problems(final, tmp_path / "data")

    # Retries happened only because of the restart: none before it.
    for task_id in retried:
        early = [
            e
            for e in final.events[task_id]
            if e.kind == EventKind.RETRY_SCHEDULED and e.at < restarted_at
        ]
        if early:
            problems.append(f"task {task_id} was retried before the restart: {early}")

    # Every worker process reconnected by itself: each claimed and started tasks after
    # PostgreSQL was back, and each has its bus listener (LISTEN) connected again.
    for name, text in logs.items():
        if not name.startswith("worker"):
            continue
        started = log_times(text, "task_started")
        if not any(at > pg_back for at in started):
            last = max(started).isoformat() if started else "never"
            problems.append(
                f"{name} started no task after PostgreSQL was back at {pg_back.isoformat()} "
                f"(its last task_started: {last}); it stayed up but stopped taking work"
            )
    if listeners != WORKERS:
        problems.append(
            f"{listeners} LISTEN connections after the restart, expected one per worker "
            f"({WORKERS}): a bus listener did not reconnect"
        )

    if failures_before:
        problems.append(f"/healthz failed before the restart: {failures_before[:5]}")
    for name, (code, took) in exits.items():
        if code != 0:
            problems.append(f"{name} exited {code} after SIGTERM ({took:.1f}s)")

    if problems:
        exit_codes = {name: code for name, (code, _took) in exits.items()}
        raise AssertionError(
            f"{report(problems)}\nprocess logs in {tmp_path}:\n{log_excerpts(logs, exit_codes)}"
        )
