"""Every Mutation of the contract over HTTP: payloads, the tasks they queue, and idempotency.

Each task made here is followed to its final state through the real worker; tests that need
a task to stay QUEUED or RUNNING use a server with a long step delay and cancel what they
started, so nothing waits for the delay.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gql import gql
from sqlalchemy import func, select

from cloudops.db.models import Environment as EnvironmentRow
from cloudops.db.models import Project as ProjectRow
from cloudops.db.models import SimulatedWorkload
from cloudops.db.models import Task as TaskRow
from tests.api.conftest import LiveServer, op, project_and_environment
from tests.conftest import events_of, wait_final

ServerFactory = Callable[..., Any]
UNKNOWN_ID = "00000000-0000-4000-8000-00000000f00d"

PAYLOAD = """
  task {
    id type status entityId correlationId idempotencyKey attempt maxAttempts progress
    input metadata error deadLettered queuePosition createdAt finishedAt
    steps { index name status }
    project { id }
    environment { id name type ttlMinutes expiresAt expired project { id } }
  }
  userErrors { field message code }
  deduplicated
"""
CREATE_PROJECT = gql("""
mutation($input: CreateProjectInput!) { createProject(input: $input) {
  project { id name description teamsWebhookUrl emailRecipients createdAt environments { id } }
  userErrors { field message code } } }""")
CREATE_ENVIRONMENT = gql("""
mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) {
  environment { id name type ttlMinutes expiresAt expired currentVersion createdAt
                project { id } tasks { totalCount } }
  userErrors { field message code } } }""")
DEPLOY = gql(f"mutation($input: DeployInput!) {{ deploy(input: $input) {{ {PAYLOAD} }} }}")
BACKUP = gql(
    f"mutation($input: BackupDatabaseInput!) {{ backupDatabase(input: $input) {{ {PAYLOAD} }} }}"
)
RESTORE = gql(
    f"mutation($input: RestoreDatabaseInput!) {{ restoreDatabase(input: $input) {{ {PAYLOAD} }} }}"
)
RESTART = gql(
    f"mutation($input: RestartWorkloadInput!) {{ restartWorkload(input: $input) {{ {PAYLOAD} }} }}"
)
SANDBOX = gql(
    f"mutation($input: CreateSandboxInput!) {{ createSandbox(input: $input) {{ {PAYLOAD} }} }}"
)
CANCEL = gql(f"mutation($id: ID!) {{ cancelTask(id: $id) {{ {PAYLOAD} }} }}")
RETRY = gql(f"mutation($id: ID!) {{ retryTask(id: $id) {{ {PAYLOAD} }} }}")
TASK = gql("""
query($id: ID!) { task(id: $id) {
  id status attempt deadLettered error progress idempotencyKey finishedAt
  steps { name status }
  artifacts { id kind path sha256 sizeBytes }
  environment { id currentVersion }
} }""")
ENVIRONMENT = gql("""
query($id: ID!) { environment(id: $id) {
  id name type ttlMinutes expiresAt expired currentVersion project { id environments { id } } } }""")

FAIL_FIRST_STEP = {"simulate": {"failStep": "validate"}}


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, f"DateTime {value!r} has no explicit offset"
    return moment


async def wait_status(live: LiveServer, task_id: str, wanted: str, timeout: float = 10.0) -> None:
    """Wait (woken by the event hub, bounded) until a task has the wanted status."""

    async def current() -> str | None:
        async with live.runtime.db.read() as session:
            row = await session.get(TaskRow, task_id)
            return row.status if row is not None else None

    async with live.runtime.hub.subscribe(lambda e: e.task_id == task_id) as sub:
        async with asyncio.timeout(timeout):
            if await current() == wanted:
                return
            async for event in sub:
                if event.status == wanted or await current() == wanted:
                    return


async def run(live: LiveServer, document: Any, **variables: Any) -> dict[str, Any]:
    async with live.client() as session:
        result: dict[str, Any] = await session.execute(op(document, **variables))
    return result


async def submit(live: LiveServer, document: Any, name: str, **variables: Any) -> dict[str, Any]:
    """Run a task mutation that must succeed; returns its task."""
    payload = (await run(live, document, **variables))[name]
    assert payload["userErrors"] == [], payload
    assert payload["deduplicated"] is False, payload
    task: dict[str, Any] = payload["task"]
    assert task["attempt"] == 1 and task["deadLettered"] is False, task
    assert task["error"] is None, task
    return task


async def task_rows_with_key(live: LiveServer, key: str) -> int:
    async with live.runtime.db.read() as session:
        count = await session.scalar(
            select(func.count()).select_from(TaskRow).where(TaskRow.idempotency_key == key)
        )
    return int(count or 0)


async def task_count(live: LiveServer) -> int:
    async with live.runtime.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(TaskRow)) or 0)


# -- projects and environments ------------------------------------------------------------------


async def test_create_project_returns_and_stores_it(server: LiveServer) -> None:
    payload = (
        await run(
            server,
            CREATE_PROJECT,
            input={
                "name": "checkout",
                "description": "the checkout service",
                "teamsWebhookUrl": "https://example.test/hooks/1",
                "emailRecipients": ["ops@example.test", "dev@example.test"],
            },
        )
    )["createProject"]
    assert payload["userErrors"] == []
    project = payload["project"]
    assert project["name"] == "checkout"
    assert project["description"] == "the checkout service"
    assert project["teamsWebhookUrl"] == "https://example.test/hooks/1"
    assert project["emailRecipients"] == ["ops@example.test", "dev@example.test"]
    assert project["environments"] == []
    parse_time(project["createdAt"])
    async with server.runtime.db.read() as session:
        row = await session.get(ProjectRow, project["id"])
    assert row is not None and row.name == "checkout"

    minimal = (await run(server, CREATE_PROJECT, input={"name": "billing"}))["createProject"]
    assert minimal["userErrors"] == []
    assert minimal["project"]["description"] is None
    assert minimal["project"]["teamsWebhookUrl"] is None
    assert minimal["project"]["emailRecipients"] == []


async def test_create_environment_returns_and_stores_it(server: LiveServer) -> None:
    project = (await run(server, CREATE_PROJECT, input={"name": "shop"}))["createProject"]
    project_id = project["project"]["id"]
    made = []
    for name, env_type in [("dev", "DEV"), ("stage", "STAGE"), ("prod", "PROD")]:
        payload = (
            await run(
                server,
                CREATE_ENVIRONMENT,
                input={"projectId": project_id, "name": name, "type": env_type},
            )
        )["createEnvironment"]
        assert payload["userErrors"] == [], payload
        env = payload["environment"]
        assert (env["name"], env["type"]) == (name, env_type)
        assert env["project"] == {"id": project_id}
        assert env["ttlMinutes"] is None and env["expiresAt"] is None
        assert env["expired"] is False and env["currentVersion"] is None
        assert env["tasks"] == {"totalCount": 0}
        parse_time(env["createdAt"])
        made.append(env["id"])
    listed = (await run(server, ENVIRONMENT, id=made[0]))["environment"]["project"]
    assert [e["id"] for e in listed["environments"]] == made
    async with server.runtime.db.read() as session:
        rows = [await session.get(EnvironmentRow, env_id) for env_id in made]
    assert [r.project_id for r in rows if r is not None] == [project_id] * 3


# -- the five task types -------------------------------------------------------------------------


async def test_deploy_queues_a_task_that_completes(server: LiveServer) -> None:
    project_id, env_id = await project_and_environment(server)
    task = await submit(
        server,
        DEPLOY,
        "deploy",
        input={
            "environmentId": env_id,
            "version": "2.4.1",
            "image": "registry.example/shop:2.4.1",
            "correlationId": "release-2.4.1",
            "metadata": {"ticket": "OPS-7"},
        },
    )
    assert task["type"] == "DEPLOYMENT"
    assert task["entityId"] == env_id
    assert task["correlationId"] == "release-2.4.1"
    assert task["idempotencyKey"] is None
    assert task["metadata"] == {"ticket": "OPS-7"}
    assert task["input"] == {
        "environmentId": env_id,
        "version": "2.4.1",
        "image": "registry.example/shop:2.4.1",
    }
    assert task["project"] == {"id": project_id}
    assert task["environment"]["id"] == env_id
    assert [s["name"] for s in task["steps"]] == ["validate", "plan", "apply", "verify"]

    [done] = await wait_final(server.runtime, [task["id"]])
    assert done.status == "COMPLETED", done.error
    final = (await run(server, TASK, id=task["id"]))["task"]
    assert final["progress"] == 1.0
    assert final["environment"] == {"id": env_id, "currentVersion": "2.4.1"}
    assert [a["kind"] for a in final["artifacts"]] == ["deployment_plan"]
    events = await events_of(server.runtime, task["id"])
    assert events[0].kind == "QUEUED" and events[-1].kind == "COMPLETED"


async def test_backup_then_restore_a_real_sqlite_instance(server: LiveServer) -> None:
    data_dir: Path = server.runtime.settings.data_dir
    instance = data_dir / "instances" / "sqlite" / "inventory.db"
    instance.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(instance) as conn:
        conn.execute("CREATE TABLE items (name TEXT)")
        conn.execute("INSERT INTO items VALUES ('before backup')")
    conn.close()

    backup = await submit(
        server, BACKUP, "backupDatabase", input={"engine": "SQLITE", "instanceId": "inventory"}
    )
    assert backup["type"] == "DB_BACKUP"
    assert backup["entityId"] == "db:sqlite:inventory"
    assert backup["project"] is None and backup["environment"] is None
    [done] = await wait_final(server.runtime, [backup["id"]])
    assert done.status == "COMPLETED", done.error
    [artifact] = (await run(server, TASK, id=backup["id"]))["task"]["artifacts"]
    assert artifact["kind"] == "db_backup"
    assert artifact["path"].startswith("backups/sqlite/inventory/"), artifact

    with sqlite3.connect(instance) as conn:
        conn.execute("INSERT INTO items VALUES ('after backup')")
    conn.close()

    restore = await submit(
        server,
        RESTORE,
        "restoreDatabase",
        input={"engine": "SQLITE", "instanceId": "inventory", "artifactId": artifact["id"]},
    )
    assert restore["type"] == "DB_RESTORE"
    assert restore["entityId"] == "db:sqlite:inventory"
    assert restore["input"]["artifactId"] == artifact["id"]
    [restored] = await wait_final(server.runtime, [restore["id"]])
    assert restored.status == "COMPLETED", restored.error
    with sqlite3.connect(instance) as conn:
        rows = conn.execute("SELECT name FROM items").fetchall()
    conn.close()
    assert rows == [("before backup",)], "the restore must bring back the backed-up content"


async def test_backup_and_restore_of_a_simulated_instance(server: LiveServer) -> None:
    backup = await submit(
        server, BACKUP, "backupDatabase", input={"engine": "POSTGRES", "instanceId": "orders-1"}
    )
    assert backup["entityId"] == "db:postgres:orders-1"
    assert [s["name"] for s in backup["steps"]] == [
        "prepare",
        "stream to storage",
        "verify checksum",
    ]
    await wait_final(server.runtime, [backup["id"]])
    [artifact] = (await run(server, TASK, id=backup["id"]))["task"]["artifacts"]
    restore = await submit(
        server,
        RESTORE,
        "restoreDatabase",
        input={"engine": "POSTGRES", "instanceId": "orders-1", "artifactId": artifact["id"]},
    )
    assert restore["entityId"] == "db:postgres:orders-1"
    [done] = await wait_final(server.runtime, [restore["id"]])
    assert done.status == "COMPLETED", done.error


async def test_restart_workload_rolls_it_out(server: LiveServer) -> None:
    task = await submit(
        server, RESTART, "restartWorkload", input={"namespace": "shop", "name": "api-v2"}
    )
    assert task["type"] == "RESTART_WORKLOAD"
    assert task["entityId"] == "k8s:shop/api-v2"
    assert task["input"] == {"namespace": "shop", "name": "api-v2"}
    [done] = await wait_final(server.runtime, [task["id"]])
    assert done.status == "COMPLETED", done.error
    async with server.runtime.db.read() as session:
        workload = await session.get(SimulatedWorkload, ("shop", "api-v2"))
    assert workload is not None and workload.restarted_at, "the restart must reach the cluster"


async def test_create_sandbox_makes_an_expiring_environment_at_once(server: LiveServer) -> None:
    project_id, _ = await project_and_environment(server)
    before = datetime.now(UTC)
    task = await submit(
        server,
        SANDBOX,
        "createSandbox",
        input={"projectId": project_id, "name": "pr-123", "ttlMinutes": 90},
    )
    after = datetime.now(UTC)
    env = task["environment"]
    assert task["type"] == "SANDBOX"
    assert task["entityId"] == env["id"], "a sandbox task's entityId is its environment's id"
    assert task["project"] == {"id": project_id}
    assert (env["name"], env["type"], env["ttlMinutes"]) == ("pr-123", "SANDBOX", 90)
    assert env["expired"] is False
    assert env["project"] == {"id": project_id}
    expires = parse_time(env["expiresAt"])
    slack = timedelta(seconds=2)
    ttl = timedelta(minutes=90)
    assert before + ttl - slack <= expires <= after + ttl + slack, (before, expires, after)
    assert task["input"]["ttlMinutes"] == 90 and task["input"]["name"] == "pr-123"

    visible = (await run(server, ENVIRONMENT, id=env["id"]))["environment"]
    assert visible["type"] == "SANDBOX"
    assert env["id"] in [e["id"] for e in visible["project"]["environments"]]
    [done] = await wait_final(server.runtime, [task["id"]])
    assert done.status == "COMPLETED", done.error


# -- cancel and retry ------------------------------------------------------------------------------


async def test_cancel_a_queued_and_a_running_task(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory(step_delay=5)
    _, env_id = await project_and_environment(live)
    running = await submit(live, DEPLOY, "deploy", input={"environmentId": env_id, "version": "1"})
    queued = await submit(live, DEPLOY, "deploy", input={"environmentId": env_id, "version": "2"})
    await wait_status(live, running["id"], "RUNNING")

    payload = (await run(live, CANCEL, id=queued["id"]))["cancelTask"]
    assert payload["userErrors"] == [], payload
    cancelled = payload["task"]
    assert cancelled["status"] == "CANCELLED", "a QUEUED task is cancelled at once"
    assert cancelled["queuePosition"] is None
    assert cancelled["finishedAt"] is not None
    assert {s["status"] for s in cancelled["steps"]} == {"SKIPPED"}, cancelled["steps"]

    payload = (await run(live, CANCEL, id=running["id"]))["cancelTask"]
    assert payload["userErrors"] == [], payload
    assert payload["task"]["status"] in ("RUNNING", "CANCELLED"), payload
    stopped, dropped = await wait_final(live.runtime, [running["id"], queued["id"]], timeout=10)
    assert {stopped.status, dropped.status} == {"CANCELLED"}
    events = await events_of(live.runtime, running["id"])
    assert events[-1].kind == "CANCELLED"
    task = (await run(live, TASK, id=running["id"]))["task"]
    assert "COMPLETED" not in {s["status"] for s in task["steps"][1:]}, task["steps"]
    assert task["environment"]["currentVersion"] is None

    again = (await run(live, CANCEL, id=running["id"]))["cancelTask"]
    assert again["task"] is None
    assert [(e["field"], e["code"]) for e in again["userErrors"]] == [(["id"], "NOT_CANCELLABLE")]
    unknown = (await run(live, CANCEL, id=UNKNOWN_ID))["cancelTask"]
    assert [(e["field"], e["code"]) for e in unknown["userErrors"]] == [(["id"], "NOT_FOUND")]


async def test_final_tasks_are_not_cancellable_and_completed_ones_not_retryable(
    server: LiveServer,
) -> None:
    task = await submit(server, RESTART, "restartWorkload", input={"namespace": "a", "name": "b"})
    [done] = await wait_final(server.runtime, [task["id"]])
    assert done.status == "COMPLETED"
    cancel = (await run(server, CANCEL, id=task["id"]))["cancelTask"]
    assert cancel["task"] is None
    assert [(e["field"], e["code"]) for e in cancel["userErrors"]] == [(["id"], "NOT_CANCELLABLE")]
    retry = (await run(server, RETRY, id=task["id"]))["retryTask"]
    assert retry["task"] is None
    assert [(e["field"], e["code"]) for e in retry["userErrors"]] == [(["id"], "NOT_RETRYABLE")]
    unknown = (await run(server, RETRY, id=UNKNOWN_ID))["retryTask"]
    assert [(e["field"], e["code"]) for e in unknown["userErrors"]] == [(["id"], "NOT_FOUND")]
    async with server.runtime.db.read() as session:
        row = await session.get(TaskRow, task["id"])
    assert row is not None and row.status == "COMPLETED" and row.attempt == 1


async def test_retry_requeues_dead_lettered_and_cancelled_tasks(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(step_delay=5)
    _, env_id = await project_and_environment(live)
    failing = await submit(
        live,
        DEPLOY,
        "deploy",
        input={"environmentId": env_id, "version": "bad", "metadata": FAIL_FIRST_STEP},
    )
    [dead] = await wait_final(live.runtime, [failing["id"]])
    assert (dead.status, dead.dead_lettered, dead.attempt) == ("FAILED", True, 3)

    busy = await submit(live, DEPLOY, "deploy", input={"environmentId": env_id, "version": "ok"})
    await wait_status(live, busy["id"], "RUNNING")
    later = await submit(live, DEPLOY, "deploy", input={"environmentId": env_id, "version": "x"})
    assert (await run(live, CANCEL, id=later["id"]))["cancelTask"]["task"]["status"] == "CANCELLED"

    payload = (await run(live, RETRY, id=failing["id"]))["retryTask"]
    assert payload["userErrors"] == [], payload
    retried = payload["task"]
    assert retried["id"] == failing["id"]
    assert retried["status"] == "QUEUED"
    assert retried["attempt"] == 1
    assert retried["deadLettered"] is False
    assert retried["error"] is None
    assert retried["progress"] == 0.0
    assert retried["finishedAt"] is None
    assert {s["status"] for s in retried["steps"]} == {"PENDING"}, "a fresh plan"
    assert retried["queuePosition"] == 0

    payload = (await run(live, RETRY, id=later["id"]))["retryTask"]
    assert payload["userErrors"] == [], payload
    assert (payload["task"]["status"], payload["task"]["attempt"]) == ("QUEUED", 1)
    assert payload["task"]["queuePosition"] == 1, "a retried task goes to the back of its queue"

    running = (await run(live, RETRY, id=busy["id"]))["retryTask"]
    assert running["task"] is None
    assert [(e["field"], e["code"]) for e in running["userErrors"]] == [(["id"], "NOT_RETRYABLE")]
    queued = (await run(live, RETRY, id=later["id"]))["retryTask"]
    assert [(e["field"], e["code"]) for e in queued["userErrors"]] == [(["id"], "NOT_RETRYABLE")]

    for task_id in (later["id"], busy["id"]):
        assert (await run(live, CANCEL, id=task_id))["cancelTask"]["userErrors"] == []
    final = {t.id: t for t in await wait_final(live.runtime, [failing["id"], busy["id"]])}
    again = final[failing["id"]]
    assert (again.status, again.dead_lettered, again.attempt) == ("FAILED", True, 3)
    assert final[busy["id"]].status == "CANCELLED"
    events = await events_of(live.runtime, failing["id"])
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    kinds = [e.kind for e in events]
    assert kinds.count("QUEUED") == 2 and kinds.count("FAILED") == 2, kinds
    assert kinds.index("QUEUED", 1) > kinds.index("FAILED"), "re-queued after it failed"


# -- idempotency ----------------------------------------------------------------------------------


async def test_same_idempotency_key_and_input_returns_the_same_task(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    deploy_input = {"environmentId": env_id, "version": "5.0", "idempotencyKey": "release-5"}
    first = (await run(server, DEPLOY, input=deploy_input))["deploy"]
    second = (await run(server, DEPLOY, input=deploy_input))["deploy"]
    assert first["userErrors"] == [] and second["userErrors"] == []
    assert first["deduplicated"] is False
    assert second["deduplicated"] is True
    assert second["task"]["id"] == first["task"]["id"]
    assert second["task"]["idempotencyKey"] == "release-5"
    await wait_final(server.runtime, [first["task"]["id"]])
    third = (await run(server, DEPLOY, input=deploy_input))["deploy"]
    assert (third["task"]["id"], third["deduplicated"]) == (first["task"]["id"], True)
    assert third["task"]["status"] == "COMPLETED", "a finished task is returned, not re-run"
    assert await task_rows_with_key(server, "release-5") == 1


async def test_same_idempotency_key_with_other_input_is_refused(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    original = (
        await run(
            server,
            DEPLOY,
            input={"environmentId": env_id, "version": "5.0", "idempotencyKey": "release-5"},
        )
    )["deploy"]
    assert original["userErrors"] == []
    others: list[tuple[str, Any, str, dict[str, Any]]] = [
        ("other-version", DEPLOY, "deploy", {"environmentId": env_id, "version": "5.1"}),
        (
            "other-metadata",
            DEPLOY,
            "deploy",
            {"environmentId": env_id, "version": "5.0", "metadata": {"note": "changed"}},
        ),
        ("other-mutation", RESTART, "restartWorkload", {"namespace": "shop", "name": "api"}),
    ]
    for case, document, name, other_input in others:
        before = await task_count(server)
        variables = {**other_input, "idempotencyKey": "release-5"}
        payload = (await run(server, document, input=variables))[name]
        assert payload["task"] is None, case
        assert payload["deduplicated"] is False, case
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
            (["input", "idempotencyKey"], "IDEMPOTENCY_KEY_REUSED")
        ], (case, payload)
        assert await task_count(server) == before, f"{case}: a refused request made a task"
    await wait_final(server.runtime, [original["task"]["id"]])


HEADER_DEPLOY = """
mutation($env: ID!) {
  deploy(input: {environmentId: $env, version: "7.0"}) {
    task { id idempotencyKey } userErrors { field code } deduplicated } }"""
HEADER_TWO = """
mutation($env: ID!) {
  a: deploy(input: {environmentId: $env, version: "7.0"}) {
    task { id idempotencyKey } userErrors { field code } deduplicated }
  b: restartWorkload(input: {namespace: "shop", name: "api"}) {
    task { id idempotencyKey } userErrors { field code } deduplicated } }"""
HEADER_WITH_PROJECT = """
mutation($env: ID!) {
  createProject(input: {name: "side-project"}) { project { id } userErrors { code } }
  deploy(input: {environmentId: $env, version: "7.1"}) {
    task { id idempotencyKey } userErrors { field code } deduplicated } }"""


async def test_idempotency_key_header_keys_a_single_task_mutation(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    headers = {"Idempotency-Key": "header-key-1"}
    first = await server.execute(HEADER_DEPLOY, {"env": env_id}, headers)
    second = await server.execute(HEADER_DEPLOY, {"env": env_id}, headers)
    assert "errors" not in first and "errors" not in second, (first, second)
    one, two = first["data"]["deploy"], second["data"]["deploy"]
    assert one["userErrors"] == [] and two["userErrors"] == []
    assert one["task"]["idempotencyKey"] == "header-key-1"
    assert (one["deduplicated"], two["deduplicated"]) == (False, True)
    assert two["task"]["id"] == one["task"]["id"]
    assert await task_rows_with_key(server, "header-key-1") == 1

    # One task mutation beside a project mutation still counts as exactly one.
    mixed = await server.execute(
        HEADER_WITH_PROJECT, {"env": env_id}, {"Idempotency-Key": "header-key-2"}
    )
    assert mixed["data"]["deploy"]["task"]["idempotencyKey"] == "header-key-2", mixed
    await wait_final(server.runtime, [one["task"]["id"], mixed["data"]["deploy"]["task"]["id"]])


async def test_idempotency_key_header_is_ignored_for_two_task_mutations(
    server: LiveServer,
) -> None:
    _, env_id = await project_and_environment(server)
    headers = {"Idempotency-Key": "header-key-3"}
    seen: set[str] = set()
    for _ in range(2):
        body = await server.execute(HEADER_TWO, {"env": env_id}, headers)
        assert "errors" not in body, body
        for alias in ("a", "b"):
            payload = body["data"][alias]
            assert payload["userErrors"] == [], payload
            assert payload["deduplicated"] is False
            assert payload["task"]["idempotencyKey"] is None
            seen.add(payload["task"]["id"])
    assert len(seen) == 4, "every task mutation of both requests made its own task"
    assert await task_rows_with_key(server, "header-key-3") == 0
    await wait_final(server.runtime, sorted(seen))


def _deploy_field(alias: str, version: str, directive: str = "") -> str:
    return (
        f'{alias}: deploy(input: {{environmentId: $env, version: "{version}"}}) {directive} '
        "{ task { id idempotencyKey } userErrors { field code } deduplicated }"
    )


@pytest.mark.parametrize(
    "document,keyed,unkeyed",
    [
        (
            "mutation($env: ID!) { ...Release } fragment Release on Mutation { "
            + _deploy_field("a", "8.0")
            + " }",
            ["a"],
            [],
        ),
        (
            "mutation($env: ID!) { "
            + _deploy_field("a", "8.0", "@skip(if: true)")
            + " "
            + _deploy_field("b", "8.1")
            + " }",
            ["b"],
            [],
        ),
        (
            "mutation($env: ID!) { "
            + _deploy_field("a", "8.0")
            + " ... on Mutation { "
            + _deploy_field("b", "8.1")
            + " } }",
            [],
            ["a", "b"],
        ),
    ],
    ids=["one-mutation-in-a-fragment", "one-runs-one-skipped", "two-one-in-inline-fragment"],
)
async def test_idempotency_key_header_counts_the_task_mutations_that_run(
    server: LiveServer, document: str, keyed: list[str], unkeyed: list[str]
) -> None:
    """The header keys a request that RUNS exactly one task mutation, however the document
    spells it (fragments, @skip); with two task mutations it is ignored."""
    _, env_id = await project_and_environment(server)
    body = await server.execute(document, {"env": env_id}, {"Idempotency-Key": "header-key-4"})
    assert "errors" not in body, body
    task_ids = []
    for alias in keyed + unkeyed:
        payload = body["data"][alias]
        assert payload["userErrors"] == [], f"{alias}: {payload} (header applied wrongly?)"
        task_ids.append(payload["task"]["id"])
        expected = "header-key-4" if alias in keyed else None
        assert payload["task"]["idempotencyKey"] == expected, (
            f"{alias}: idempotencyKey {payload['task']['idempotencyKey']!r}, expected "
            f"{expected!r} for a request running {len(keyed) + len(unkeyed)} task mutation(s)"
        )
    await wait_final(server.runtime, task_ids)
