"""The service layer: input rules, idempotency (invariant 5), nothing written on bad input (6)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from cloudops.db.models import Environment, Project, Task, TaskEvent
from cloudops.runtime import Runtime
from cloudops.services import inputs
from tests.conftest import make_environment, make_project, wait_final

LONG = "x" * 300


async def counts(runtime: Runtime) -> tuple[int, ...]:
    async with runtime.db.read() as session:
        return tuple(
            [
                await session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Project, Environment, Task, TaskEvent)
            ]
        )


BAD_TASK_INPUTS: list[tuple[str, Any, list[str]]] = [
    ("deploy", lambda env: inputs.Deploy(env, ""), ["input", "version"]),
    ("deploy", lambda env: inputs.Deploy(env, "1.0 beta"), ["input", "version"]),
    ("deploy", lambda env: inputs.Deploy(env, "v" * 129), ["input", "version"]),
    ("deploy", lambda env: inputs.Deploy("no-such-env", "1"), ["input", "environmentId"]),
    (
        "deploy",
        lambda env: inputs.Deploy(env, "1", options=inputs.TaskOptions(idempotency_key="")),
        ["input", "idempotencyKey"],
    ),
    (
        "deploy",
        lambda env: inputs.Deploy(env, "1", options=inputs.TaskOptions(metadata=[1])),
        ["input", "metadata"],
    ),
    (
        "deploy",
        lambda env: inputs.Deploy(
            env, "1", options=inputs.TaskOptions(metadata={"blob": "y" * 17000})
        ),
        ["input", "metadata"],
    ),
    ("backup_database", lambda env: inputs.BackupDatabase("ORACLE", "db1"), ["input", "engine"]),
    (
        "backup_database",
        lambda env: inputs.BackupDatabase("POSTGRES", "a/b"),
        ["input", "instanceId"],
    ),
    (
        "backup_database",
        lambda env: inputs.BackupDatabase("POSTGRES", "'; DROP TABLE tasks;--"),
        ["input", "instanceId"],
    ),
    (
        "restore_database",
        lambda env: inputs.RestoreDatabase("POSTGRES", "db1", "nope"),
        ["input", "artifactId"],
    ),
    (
        "restart_workload",
        lambda env: inputs.RestartWorkload("Default", "web"),
        ["input", "namespace"],
    ),
    ("restart_workload", lambda env: inputs.RestartWorkload("default", "-web"), ["input", "name"]),
    (
        "restart_workload",
        lambda env: inputs.RestartWorkload("default", "w" * 64),
        ["input", "name"],
    ),
    (
        "create_sandbox",
        lambda env: inputs.CreateSandbox("no-such-project", "pr-1", 60),
        ["input", "projectId"],
    ),
    ("create_sandbox", lambda env: inputs.CreateSandbox("p", "pr-1", 0), ["input", "ttlMinutes"]),
    (
        "create_sandbox",
        lambda env: inputs.CreateSandbox("p", "pr-1", 10081),
        ["input", "ttlMinutes"],
    ),
    ("create_sandbox", lambda env: inputs.CreateSandbox("p", "PR_1", 60), ["input", "name"]),
]


@pytest.mark.parametrize(("method", "build", "field"), BAD_TASK_INPUTS)
async def test_invariant_6_bad_input_is_refused_and_writes_nothing(
    runtime: Runtime, method: str, build: Any, field: list[str]
) -> None:
    env = await make_environment(runtime)
    before = await counts(runtime)
    result = await getattr(runtime.tasks, method)(build(env.id))
    assert result.value is None
    assert result.user_errors, "bad input was accepted"
    assert result.user_errors[0].field == field
    assert result.user_errors[0].message
    assert await counts(runtime) == before


@pytest.mark.parametrize(
    ("data", "field", "code"),
    [
        (inputs.CreateProject(name=""), ["input", "name"], "INVALID_INPUT"),
        (inputs.CreateProject(name="   "), ["input", "name"], "INVALID_INPUT"),
        (inputs.CreateProject(name=LONG), ["input", "name"], "INVALID_INPUT"),
        (
            inputs.CreateProject(name="ok", teams_webhook_url="http://x"),
            ["input", "teamsWebhookUrl"],
            "INVALID_INPUT",
        ),
        (
            inputs.CreateProject(name="ok", email_recipients=["a@b.io", "nope"]),
            ["input", "emailRecipients", "1"],
            "INVALID_INPUT",
        ),
        (inputs.CreateProject(name="dup"), ["input", "name"], "CONFLICT"),
    ],
)
async def test_project_input_rules(
    runtime: Runtime, data: Any, field: list[str], code: str
) -> None:
    await make_project(runtime, "dup")
    before = await counts(runtime)
    result = await runtime.projects.create_project(data)
    assert [(e.field, e.code) for e in result.user_errors] == [(field, code)]
    assert await counts(runtime) == before


async def test_environment_rules(runtime: Runtime) -> None:
    project = await make_project(runtime)
    ok = await runtime.projects.create_environment(
        inputs.CreateEnvironment(project.id, "dev", "DEV")
    )
    assert ok.ok
    before = await counts(runtime)
    for data, field, code in [
        (inputs.CreateEnvironment(project.id, "dev", "DEV"), ["input", "name"], "CONFLICT"),
        (inputs.CreateEnvironment(project.id, "x", "QA"), ["input", "type"], "INVALID_INPUT"),
        (inputs.CreateEnvironment("missing", "x", "DEV"), ["input", "projectId"], "NOT_FOUND"),
    ]:
        result = await runtime.projects.create_environment(data)
        assert [(e.field, e.code) for e in result.user_errors] == [(field, code)]
    assert await counts(runtime) == before


async def test_invariant_5_same_key_same_input_returns_the_same_task(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    opts = inputs.TaskOptions(idempotency_key="release-42", metadata={"ticket": "OPS-1"})
    first = await runtime.tasks.deploy(inputs.Deploy(env.id, "4.2", options=opts))
    second = await runtime.tasks.deploy(inputs.Deploy(env.id, "4.2", options=opts))
    assert first.value is not None and second.value is not None
    assert second.deduplicated and not first.deduplicated
    assert second.value.id == first.value.id
    reused = await runtime.tasks.deploy(inputs.Deploy(env.id, "4.3", options=opts))
    assert [(e.field, e.code) for e in reused.user_errors] == [
        (["input", "idempotencyKey"], "IDEMPOTENCY_KEY_REUSED")
    ]
    async with runtime.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Task)) == 1


async def test_invariant_5_concurrent_requests_with_one_key_make_one_task(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    opts = inputs.TaskOptions(idempotency_key="race")
    results = await asyncio.gather(
        *[runtime.tasks.deploy(inputs.Deploy(env.id, "1", options=opts)) for _ in range(10)]
    )
    ids = {r.value.id for r in results if r.value is not None}
    assert len(ids) == 1
    assert sum(1 for r in results if not r.deduplicated) == 1
    async with runtime.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Task)) == 1
    await wait_final(runtime, list(ids))


async def test_entity_ids_follow_the_contract(runtime: Runtime) -> None:
    env = await make_environment(runtime)
    project = await make_project(runtime, "sbx")
    results = [
        await runtime.tasks.deploy(inputs.Deploy(env.id, "1")),
        await runtime.tasks.backup_database(inputs.BackupDatabase("POSTGRES", "orders-1")),
        await runtime.tasks.restart_workload(inputs.RestartWorkload("shop", "web")),
        await runtime.tasks.create_sandbox(inputs.CreateSandbox(project.id, "pr-7", 30)),
    ]
    tasks = [r.value for r in results]
    assert all(t is not None for t in tasks)
    assert [t.entity_id for t in tasks[:3]] == [  # type: ignore[union-attr]
        env.id,
        "db:postgres:orders-1",
        "k8s:shop/web",
    ]
    sandbox_task = tasks[3]
    assert sandbox_task is not None
    async with runtime.db.read() as session:
        sandbox = await session.get(Environment, sandbox_task.entity_id)
    assert sandbox is not None and sandbox.type == "SANDBOX" and sandbox.ttl_minutes == 30
    assert sandbox.expires_at is not None and not sandbox.expired
    await wait_final(runtime, [t.id for t in tasks if t is not None])
