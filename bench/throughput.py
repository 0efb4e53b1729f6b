"""Scenario 1 (and 2): how many operations per second the control plane takes.

N tasks over M entities are submitted, in one of two layouts, and run to their final event
with STEP_DELAY=0; the clock runs from the first submission to the last task's
``finished_at``. ``interleaved`` submits round robin over the entities; ``backlog`` submits
all tasks of entity 1, then entity 2, ...: there a finished task must wake the next one of
its entity at once, or the queue stalls. Every run is then checked from its stored events
(all tasks COMPLETED, sequences 1..n, per entity started in submission order and one at a
time); a run that fails the check is reported as such, whatever its speed.

Backends: ``embedded`` (SQLite file, in-process bus, memory broadcast, the worker in the same
process) and ``postgres`` (PostgreSQL database and bus, Redis broadcast, 1..k
``python -m bench.worker`` processes). Submission goes through the service layer
(``TaskService``, in this process) or through GraphQL over HTTP to a ``python -m
bench.serve`` process (``cloudops serve``, with ``--no-worker`` on postgres).

The headline task is the bench's one-step task (bench.handlers); ``deployment`` runs the
real DEPLOYMENT handler (4 steps, logs, a plan artifact) for the realistic figure. The
baselines of scenario 2 (bench.baselines) run in the same invocation and each of our
figures is printed as a ratio to the matching baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, func, select

from bench._common import (
    LAYOUTS,
    REDIS_URL,
    RESTART_MUTATION,
    RESULTS_DIR,
    MigratedTemplate,
    RunCheck,
    Target,
    csv_ints,
    csv_list,
    graphql,
    layout_order,
    partition,
    pg_unavailable,
    pg_version,
    print_table,
    print_targets,
    redis_unavailable,
    redis_version,
    running_stack,
    verify_run,
    wait_all_final,
    workdir,
    write_results,
)
from bench.baselines import (
    SKIPPED_PROCRASTINATE,
    BaselineResult,
    SubmittedAlone,
    asyncio_fifo,
    procrastinate_installed,
    procrastinate_run,
    procrastinate_submit_alone,
)
from bench.handlers import install
from cloudops.cli import event_loop_factory
from cloudops.db.engine import Database
from cloudops.db.models import Task
from cloudops.domain import TaskStatus
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.settings import Settings

SKIPPED_ASYNCIO = (
    "skipped: baseline (a) makes the writes per task that an embedded run of the same"
    " invocation measured; add --backends embedded"
)

ONE_STEP = "onestep"
DEPLOYMENT = "deployment"
TASK_KINDS = (ONE_STEP, DEPLOYMENT)

DEPLOY = """mutation($input: DeployInput!) {
  deploy(input: $input) { task { id } userErrors { message code } } }"""
CREATE_PROJECT = """mutation($input: CreateProjectInput!) {
  createProject(input: $input) { project { id } userErrors { message } } }"""
CREATE_ENVIRONMENT = """mutation($input: CreateEnvironmentInput!) {
  createEnvironment(input: $input) { environment { id } userErrors { message } } }"""


@dataclass
class Run:
    backend: str
    via: str
    task: str
    layout: str
    workers: int
    tasks: int
    entities: int
    seconds: float = math.nan
    submit_seconds: float = math.nan
    writes_per_task: float | None = None
    commits_per_task: float | None = None
    check: RunCheck = field(default_factory=RunCheck)
    error: str | None = None

    @property
    def label(self) -> str:
        procs = f"{self.workers}w" if self.backend == "postgres" else "in-process"
        return f"{self.backend}/{self.via}/{self.task}/{self.layout}/{procs}"

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds and self.seconds > 0 else math.nan

    @property
    def tasks_per_s(self) -> float:
        return self.rate(self.tasks) if self.check.ok else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "backend": self.backend,
            "via": self.via,
            "task": self.task,
            "layout": self.layout,
            "worker_processes": self.workers,
            "tasks": self.tasks,
            "entities": self.entities,
            "seconds": round(self.seconds, 3),
            "submit_seconds": round(self.submit_seconds, 3),
            "tasks_per_s": round(self.rate(self.tasks), 1),
            "steps_per_s": round(self.rate(self.check.steps), 1),
            "events_per_s": round(self.rate(self.check.events), 1),
            "writes_per_task": self.writes_per_task,
            "commits_per_task": self.commits_per_task,
            "events_per_task": round(self.check.events / self.tasks, 2) if self.tasks else None,
            "check": self.check.as_dict(),
            "error": self.error,
        }


@dataclass
class Options:
    task: str
    tasks: int
    entities: int
    layouts: list[str]
    backends: list[str]
    vias: list[str]
    workers: list[int]
    baselines: list[str]
    worker_concurrency: int
    clients: int
    redis_url: str
    synchronous_commit: str | None
    log_level: str
    profile: bool
    submitters: int
    submit_alone: bool
    keep: bool
    timeout: float
    results_dir: Path
    template: MigratedTemplate = field(default_factory=MigratedTemplate)

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(self).items()
            if k != "template"
        }


# -- the two ways in ------------------------------------------------------------------------


def entity_keys(run: Run, environment_ids: list[str] | None) -> list[str]:
    """What the mutations name per entity: a workload name, or an environment id."""
    if run.task == ONE_STEP:
        return [f"w{i:04d}" for i in range(run.entities)]
    assert environment_ids is not None
    return environment_ids


def entity_id(run: Run, key: str) -> str:
    return f"k8s:bench/{key}" if run.task == ONE_STEP else key


async def setup_service(runtime: Runtime, run: Run) -> list[str] | None:
    if run.task == ONE_STEP:
        return None
    project = await runtime.projects.create_project(inputs.CreateProject(name="bench"))
    assert project.value is not None, project.user_errors
    ids = []
    for i in range(run.entities):
        env = await runtime.projects.create_environment(
            inputs.CreateEnvironment(project.value.id, f"env-{i:04d}", "DEV")
        )
        assert env.value is not None, env.user_errors
        ids.append(env.value.id)
    return ids


async def submit_service(
    runtime: Runtime, run: Run, keys: list[str], clients: int
) -> dict[str, list[str]]:
    submitted: dict[str, list[str]] = defaultdict(list)

    async def client(part: list[tuple[int, int]]) -> None:
        for position, index in part:
            key = keys[index]
            if run.task == ONE_STEP:
                result = await runtime.tasks.restart_workload(inputs.RestartWorkload("bench", key))
            else:
                result = await runtime.tasks.deploy(inputs.Deploy(key, f"1.0.{position}"))
            assert result.value is not None, result.user_errors
            submitted[entity_id(run, key)].append(result.value.id)

    order = layout_order(run.layout, run.tasks, run.entities)
    await asyncio.gather(*(client(part) for part in partition(order, clients)))
    return submitted


async def setup_graphql(base_url: str, run: Run) -> list[str] | None:
    if run.task == ONE_STEP:
        return None
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        data = await graphql(client, CREATE_PROJECT, {"input": {"name": "bench"}})
        project_id = data["createProject"]["project"]["id"]
        ids = []
        for i in range(run.entities):
            data = await graphql(
                client,
                CREATE_ENVIRONMENT,
                {"input": {"projectId": project_id, "name": f"env-{i:04d}", "type": "DEV"}},
            )
            ids.append(data["createEnvironment"]["environment"]["id"])
    return ids


async def submit_graphql(
    base_url: str, run: Run, keys: list[str], clients: int
) -> dict[str, list[str]]:
    submitted: dict[str, list[str]] = defaultdict(list)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:

        async def client(part: list[tuple[int, int]]) -> None:
            for position, index in part:
                key = keys[index]
                if run.task == ONE_STEP:
                    data = await graphql(
                        http, RESTART_MUTATION, {"input": {"namespace": "bench", "name": key}}
                    )
                    payload = data["restartWorkload"]
                else:
                    data = await graphql(
                        http,
                        DEPLOY,
                        {"input": {"environmentId": key, "version": f"1.0.{position}"}},
                    )
                    payload = data["deploy"]
                assert payload["task"] is not None, payload["userErrors"]
                submitted[entity_id(run, key)].append(payload["task"]["id"])

        order = layout_order(run.layout, run.tasks, run.entities)
        await asyncio.gather(*(client(part) for part in partition(order, clients)))
    return submitted


# -- measuring ------------------------------------------------------------------------------


class CommitCounter:
    """Counts a database's write transactions: the journal's writes (what a caller waits
    for to be durable) and the commits that made them durable (several one-trip writes
    may share one: a group commit). A session's transaction is one of each; one-trip
    writes pass no engine events and are counted by the database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session_commits = 0
        self._before = (db.one_trip_writes, db.one_trip_commits)
        self._engine = db.engine.sync_engine
        event.listen(self._engine, "commit", self._on_commit)

    @property
    def writes(self) -> int:
        return self._session_commits + self._db.one_trip_writes - self._before[0]

    @property
    def commits(self) -> int:
        return self._session_commits + self._db.one_trip_commits - self._before[1]

    def _on_commit(self, _conn: Any) -> None:
        self._session_commits += 1

    def close(self) -> None:
        event.remove(self._engine, "commit", self._on_commit)


@contextlib.contextmanager
def profiled(enabled: bool, label: str, results_dir: Path) -> Iterator[None]:
    """pyinstrument over the whole event loop thread (all tasks, not one coroutine)."""
    if not enabled:
        yield
        return
    from pyinstrument import Profiler

    from bench._common import utc_stamp

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        results_dir.mkdir(parents=True, exist_ok=True)
        stem = results_dir / f"profile-{label.replace('/', '-')}-{utc_stamp()}"
        Path(f"{stem}.txt").write_text(profiler.output_text(unicode=False, color=False))
        Path(f"{stem}.html").write_text(profiler.output_html())
        print(f"profile written to {stem}.txt / .html")


async def measure(
    run: Run,
    db: Database,
    submit: Any,
    opts: Options,
    commits: CommitCounter | None = None,
) -> None:
    """Submit, wait for every task to be final, check the stored events, fill ``run``."""
    began = datetime.now(UTC)
    started = time.perf_counter()
    with profiled(
        opts.profile and run.backend == "embedded" and run.via == "service",
        run.label,
        opts.results_dir,
    ):
        submitted = await submit()
        run.submit_seconds = time.perf_counter() - started
        await wait_all_final(db, run.tasks, opts.timeout, poll=0.05)
    if commits is not None:
        run.writes_per_task = round(commits.writes / run.tasks, 2)
        run.commits_per_task = round(commits.commits / run.tasks, 2)
    run.check = await verify_run(db, submitted)
    end = run.check.last_finished_at
    run.seconds = (end - began).total_seconds() if end else time.perf_counter() - started


def _settings(database_url: str, data_dir: Path, opts: Options, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        step_delay=0.0,
        reaper_interval=3600.0,
        worker_concurrency=opts.worker_concurrency,
        shutdown_grace=5.0,
        log_level=opts.log_level,
        _env_file=None,
        **extra,
    )


@contextlib.asynccontextmanager
async def service_runtime(
    run: Run, opts: Options, database_url: str, tmp: Path
) -> AsyncIterator[tuple[Runtime, list[str]]]:
    """The service layer in this process, and the keys of its run's entities: with its
    worker on the embedded backend, as a submitter only (run_worker=False) beside worker
    processes on postgres."""
    embedded = run.backend == "embedded"
    extra: dict[str, Any] = {} if embedded else {"bus": "postgres", "broadcast_url": opts.redis_url}
    runtime = Runtime.build(
        _settings(database_url, tmp / "data", opts, **extra), run_worker=embedded
    )
    install(runtime.registry)
    await runtime.start()
    try:
        yield runtime, entity_keys(run, await setup_service(runtime, run))
    finally:
        await runtime.stop()


async def run_service_in_process(run: Run, opts: Options, database_url: str, tmp: Path) -> None:
    async with service_runtime(run, opts, database_url, tmp) as (runtime, keys):
        commits = CommitCounter(runtime.db) if run.backend == "embedded" else None
        try:
            await measure(
                run,
                runtime.db,
                lambda: submit_service(runtime, run, keys, opts.submitters),
                opts,
                commits,
            )
        finally:
            if commits is not None:
                commits.close()


async def submit_alone(opts: Options, layout: str) -> SubmittedAlone:
    """Our runs' submissions (the service layer, one after another) on PostgreSQL with no
    worker process: the ceiling of the postgres runs' tasks/s."""
    run = Run("postgres", "service", opts.task, layout, 0, opts.tasks, opts.entities)
    with workdir(opts.keep, "submit-alone") as tmp:
        async with running_stack(
            "postgres",
            tmp,
            workers=0,
            api=False,
            log_level=opts.log_level,
            redis_url=opts.redis_url,
            synchronous_commit=opts.synchronous_commit,
            template=opts.template,
        ) as stack:
            async with service_runtime(run, opts, stack.database_url, tmp) as (runtime, keys):
                started = time.perf_counter()
                await submit_service(runtime, run, keys, opts.submitters)
                seconds = time.perf_counter() - started
            async with stack.db.read() as session:
                stored = await session.scalar(
                    select(func.count()).select_from(Task).where(Task.status == TaskStatus.QUEUED)
                )
    return SubmittedAlone("cloudops", layout, opts.tasks, seconds, int(stored or 0))


async def run_one(run: Run, opts: Options) -> None:
    with workdir(opts.keep, "throughput") as tmp:
        if run.backend == "embedded" and run.via == "service":
            await run_service_in_process(
                run, opts, f"sqlite+aiosqlite:///{tmp / 'cloudops.db'}", tmp
            )
            return
        async with running_stack(
            run.backend,
            tmp,
            workers=run.workers,
            api=run.via == "graphql",
            log_level=opts.log_level,
            worker_concurrency=opts.worker_concurrency,
            redis_url=opts.redis_url,
            synchronous_commit=opts.synchronous_commit,
            template=opts.template,
        ) as stack:
            if run.via == "service":
                await run_service_in_process(run, opts, stack.database_url, tmp)
                return
            keys = entity_keys(run, await setup_graphql(stack.base_url, run))
            await measure(
                run, stack.db, lambda: submit_graphql(stack.base_url, run, keys, opts.clients), opts
            )


# -- the whole scenario ----------------------------------------------------------------------


def plan_runs(opts: Options) -> list[Run]:
    runs: list[Run] = []
    for backend in opts.backends:
        for via in opts.vias:
            for workers in opts.workers if backend == "postgres" else [0]:
                for layout in opts.layouts:
                    runs.append(
                        Run(backend, via, opts.task, layout, workers, opts.tasks, opts.entities)
                    )
    return runs


async def scenario(opts: Options) -> dict[str, Any]:
    notes: list[str] = []
    if "postgres" in opts.backends or "procrastinate" in opts.baselines:
        reason = await pg_unavailable() or await redis_unavailable(opts.redis_url)
        if reason is not None:
            notes.append(f"postgres runs skipped: {reason}")
            print(f"skipped: {reason}")
            opts.backends = [b for b in opts.backends if b != "postgres"]
            opts.baselines = [b for b in opts.baselines if b != "procrastinate"]
    runs = plan_runs(opts)
    for run in runs:
        print(f"running {run.label} ({run.tasks} tasks, {run.entities} entities) ...", flush=True)
        try:
            await run_one(run, opts)
        except Exception as exc:  # report and go on: one broken run must not hide the rest
            run.error = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {run.error}")
            continue
        print(
            f"  {run.rate(run.tasks):,.0f} tasks/s in {run.seconds:.2f}s, "
            f"check {'ok' if run.check.ok else 'FAILED: ' + '; '.join(run.check.problems[:3])}"
        )

    baselines: list[BaselineResult] = []
    await opts.template.drop()
    # Baseline (a) makes as many writes per task as this invocation's embedded runs did.
    writes = next((r.writes_per_task for r in runs if r.writes_per_task), None)
    if "asyncio" in opts.baselines and writes is None:
        print(SKIPPED_ASYNCIO)
        notes.append(SKIPPED_ASYNCIO)
    elif "asyncio" in opts.baselines:
        assert writes is not None
        for layout in opts.layouts:
            print(f"running baseline asyncio+aiosqlite/{layout} ...", flush=True)
            with workdir(opts.keep, "baseline") as tmp:
                baselines.append(
                    await asyncio_fifo(
                        tmp / "baseline.db",
                        tasks=opts.tasks,
                        entities=opts.entities,
                        layout=layout,
                        writes_per_task=round(writes),
                        concurrency=opts.worker_concurrency,
                    )
                )
            print(f"  {baselines[-1].tasks_per_s:,.0f} tasks/s")
    if "procrastinate" in opts.baselines:
        if not procrastinate_installed():
            print(SKIPPED_PROCRASTINATE)
            notes.append(SKIPPED_PROCRASTINATE)
        else:
            for workers in opts.workers:
                for layout in opts.layouts:
                    print(f"running baseline procrastinate/{layout}/{workers}w ...", flush=True)
                    with workdir(opts.keep, "procrastinate") as tmp:
                        baselines.append(
                            await procrastinate_run(
                                tasks=opts.tasks,
                                entities=opts.entities,
                                layout=layout,
                                workers=workers,
                                concurrency=opts.worker_concurrency,
                                workdir=tmp,
                                synchronous_commit=opts.synchronous_commit,
                                within=opts.timeout,
                                submitters=opts.submitters,
                            )
                        )
                    print(f"  {baselines[-1].tasks_per_s:,.0f} tasks/s")

    alone: list[SubmittedAlone] = []
    if opts.submit_alone and "postgres" in opts.backends and "interleaved" in opts.layouts:
        print("running submissions alone, no worker (ours, then procrastinate's) ...", flush=True)
        alone.append(await submit_alone(opts, "interleaved"))
        if "procrastinate" in opts.baselines and procrastinate_installed():
            alone.append(
                await procrastinate_submit_alone(
                    tasks=opts.tasks,
                    entities=opts.entities,
                    layout="interleaved",
                    synchronous_commit=opts.synchronous_commit,
                    submitters=opts.submitters,
                )
            )
        await opts.template.drop()

    ratios, targets = compare(runs, baselines)
    ceilings = ceiling_ratios(alone, baselines)
    report(runs, baselines, ratios, targets, notes, alone, ceilings)
    return {
        "options": opts.as_dict(),
        "versions": {
            "postgresql": await pg_version() if "postgres" in opts.backends else None,
            "redis": await redis_version(opts.redis_url) if "postgres" in opts.backends else None,
        },
        "runs": [r.as_dict() for r in runs],
        "baselines": [b.as_dict() for b in baselines],
        "ratios": ratios,
        "submitted_alone": [a.as_dict() for a in alone],
        "ceilings": ceilings,
        "targets": [t.as_dict() for t in targets],
        "notes": notes,
    }


def compare(
    runs: list[Run], baselines: list[BaselineResult]
) -> tuple[list[dict[str, Any]], list[Target]]:
    ratios: list[dict[str, Any]] = []
    targets: list[Target] = []
    every_check = all(r.check.ok for r in runs if r.error is None) and all(
        b.check.ok for b in baselines
    )
    for run in runs:
        if run.via != "service" or run.error:
            continue
        for base in baselines:
            if base.layout != run.layout:
                continue
            if run.backend == "embedded" and base.name.startswith("asyncio"):
                goal = 0.4
            elif (
                run.backend == "postgres"
                and base.name == "procrastinate"
                and base.workers == run.workers
            ):
                goal = 2.0 if run.layout == "interleaved" else 10.0
            else:
                continue
            ratio = run.tasks_per_s / base.tasks_per_s if base.tasks_per_s else math.nan
            ratios.append(
                {
                    "ours": run.label,
                    "baseline": f"{base.name}/{base.layout}/{base.workers}w",
                    "ours_tasks_per_s": round(run.tasks_per_s, 1),
                    "baseline_tasks_per_s": round(base.tasks_per_s, 1),
                    "ratio": round(ratio, 3),
                    "goal": goal,
                }
            )
            targets.append(
                Target(f"{run.label} vs {base.name}", round(ratio, 3), ">=", goal, "x baseline")
            )
    targets.append(
        Target("FIFO + 1..n verified in every run", 1.0 if every_check else 0.0, ">=", 1.0)
    )
    return ratios, targets


def ceiling_ratios(
    alone: list[SubmittedAlone], baselines: list[BaselineResult]
) -> list[dict[str, Any]]:
    """The most our postgres runs' ratio to procrastinate could be in this run: a run's
    clock starts at its first submission, so our runs cannot beat our submitting alone;
    divided by procrastinate's whole runs (submissions and work) of the same layout."""
    ours = next((a for a in alone if a.name == "cloudops" and a.ok), None)
    if ours is None:
        return []
    return [
        {
            "ours_submitting_alone_tasks_per_s": round(ours.tasks_per_s, 1),
            "baseline": f"{base.name}/{base.layout}/{base.workers}w",
            "baseline_tasks_per_s": round(base.tasks_per_s, 1),
            "ceiling": round(ours.tasks_per_s / base.tasks_per_s, 3),
        }
        for base in baselines
        if base.name == "procrastinate" and base.layout == ours.layout and base.tasks_per_s
    ]


def _or_dash(value: float | None) -> float | str:
    return value if value is not None else "-"


def report(
    runs: list[Run],
    baselines: list[BaselineResult],
    ratios: list[dict[str, Any]],
    targets: list[Target],
    notes: list[str],
    alone: list[SubmittedAlone],
    ceilings: list[dict[str, Any]],
) -> None:
    print_table(
        "Throughput (STEP_DELAY=0; clock: first submit -> last finished_at)",
        [
            "run",
            "tasks",
            "s",
            "tasks/s",
            "steps/s",
            "events/s",
            "writes/task",
            "commits/task",
            "submit s",
            "check",
        ],
        [
            (
                r.label,
                r.tasks,
                r.seconds,
                r.rate(r.tasks),
                r.rate(r.check.steps),
                r.rate(r.check.events),
                _or_dash(r.writes_per_task),
                _or_dash(r.commits_per_task),
                r.submit_seconds,
                r.error or ("ok" if r.check.ok else "FAILED"),
            )
            for r in runs
        ],
    )
    if baselines:
        print_table(
            "Baselines",
            [
                "baseline",
                "layout",
                "workers",
                "tasks",
                "s",
                "tasks/s",
                "writes/task",
                "commits/task",
                "check",
            ],
            [
                (
                    b.name,
                    b.layout,
                    b.workers,
                    b.tasks,
                    b.seconds,
                    b.tasks_per_s,
                    _or_dash(b.writes_per_task),
                    _or_dash(b.commits_per_task),
                    "ok" if b.check.ok else "FAILED",
                )
                for b in baselines
            ],
        )
    if ratios:
        print_table(
            "Ours / baseline",
            ["ours", "baseline", "ours tasks/s", "baseline tasks/s", "ratio"],
            [
                (
                    r["ours"],
                    r["baseline"],
                    r["ours_tasks_per_s"],
                    r["baseline_tasks_per_s"],
                    r["ratio"],
                )
                for r in ratios
            ],
        )
    if alone:
        print_table(
            "Submitting alone (PostgreSQL, no worker; the runs' submitters)",
            ["system", "layout", "tasks", "s", "tasks/s", "stored"],
            [
                (a.name, a.layout, a.tasks, a.seconds, a.tasks_per_s, "ok" if a.ok else "FAILED")
                for a in alone
            ],
        )
    if ceilings:
        print_table(
            "Ceiling of the ratio: ours submitting alone / the baseline's whole run",
            ["baseline", "ours alone tasks/s", "baseline tasks/s", "ceiling"],
            [
                (
                    c["baseline"],
                    c["ours_submitting_alone_tasks_per_s"],
                    c["baseline_tasks_per_s"],
                    c["ceiling"],
                )
                for c in ceilings
            ],
        )
    print_targets(targets)
    for note in notes:
        print(f"note: {note}")
    for run in runs:
        if not run.check.ok and run.error is None:
            print(f"check failed for {run.label}: {run.check.problems[:5]}")


DEFAULT_TASKS = 500
DEFAULT_ENTITIES = 50


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Throughput of the control plane (scenario 1) with its baselines "
        "(scenario 2). Prints tables and writes bench/results/throughput-<time>.json. "
        "The defaults finish in about 3 minutes on a 2-core machine; the issue's full size "
        "is --tasks 5000 --entities 100.",
    )
    parser.add_argument(
        "--task",
        choices=TASK_KINDS,
        default=ONE_STEP,
        help="onestep (the bench's one-step task, the headline) or deployment (real "
        "DEPLOYMENT handler, 4 steps) (onestep)",
    )
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks per run (500)")
    parser.add_argument("--entities", type=int, default=DEFAULT_ENTITIES, help="entities (50)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="interleaved,backlog")
    parser.add_argument("--backends", default="embedded,postgres", help="embedded,postgres")
    parser.add_argument(
        "--via",
        default="service",
        help="service (TaskService in this process) and/or graphql (HTTP to a server "
        "process) (service)",
    )
    parser.add_argument(
        "--workers", default="1,3", help="worker processes on postgres, comma separated (1,3)"
    )
    parser.add_argument(
        "--baselines",
        default="asyncio,procrastinate",
        help="asyncio (bare asyncio+aiosqlite), procrastinate, or none (both)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=8,
        help="CLOUDOPS_WORKER_CONCURRENCY, also the baselines' concurrency (8)",
    )
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent HTTP clients of graphql runs (8)"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"broadcast ({REDIS_URL})")
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default=None,
        help="synchronous_commit of the fresh PostgreSQL databases (default: the server's)",
    )
    parser.add_argument("--log-level", default="WARNING", help="CLOUDOPS_LOG_LEVEL (WARNING)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="pyinstrument the embedded service runs (bench/results/profile-*.txt/.html)",
    )
    parser.add_argument(
        "--submitters",
        type=int,
        default=1,
        help="concurrent submitters of the service runs, and of procrastinate's defers, "
        "each entity always from the same one (1: one after another, the headline)",
    )
    parser.add_argument(
        "--submit-alone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with postgres and the interleaved layout: also time the submissions alone, "
        "ours and procrastinate's, with no worker running -- the ceiling of the "
        "interleaved runs, which are bound by their one submitter (on)",
    )
    parser.add_argument("--keep", action="store_true", help="keep data files and process logs")
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, seconds (600)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    layouts = csv_list(args.layouts)
    for layout in layouts:
        if layout not in LAYOUTS:
            parser.error(f"--layouts: unknown layout {layout!r}")
    if args.submitters < 1:
        parser.error("--submitters: must be at least 1")
    return Options(
        task=args.task,
        tasks=args.tasks,
        entities=args.entities,
        layouts=layouts,
        backends=csv_list(args.backends),
        vias=csv_list(args.via),
        workers=csv_ints(args.workers),
        baselines=[b for b in csv_list(args.baselines) if b != "none"],
        worker_concurrency=args.worker_concurrency,
        clients=args.clients,
        redis_url=args.redis_url,
        synchronous_commit=args.synchronous_commit,
        log_level=args.log_level,
        profile=args.profile,
        submitters=args.submitters,
        submit_alone=args.submit_alone,
        keep=args.keep,
        timeout=args.timeout,
        results_dir=args.results_dir,
    )


async def amain(opts: Options) -> dict[str, Any]:
    result = await scenario(opts)
    write_results("throughput", result, opts.results_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    # On the loop a server process runs on: the service layer measured here is the one
    # that `cloudops serve` runs under uvicorn (uvloop), and the baselines run on it too.
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        result = runner.run(amain(opts))
    ok = all(r["error"] is None and r["check"]["ok"] for r in result["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
