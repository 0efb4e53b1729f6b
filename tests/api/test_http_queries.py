"""Every Query field of the contract, read over HTTP through the gql client.

Tasks are made by the real mutations and run by the real worker; what the queries return is
checked against what was asked for and against the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from gql import gql
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select

from cloudops.db.models import Artifact as ArtifactRow
from cloudops.db.models import Task as TaskRow
from tests.api.conftest import LiveServer, op, project_and_environment
from tests.conftest import wait_final

ServerFactory = Callable[..., Any]
UNKNOWN_ID = "00000000-0000-4000-8000-00000000dead"

TASK_FIELDS = """
fragment TaskFields on Task {
  id type status entityId correlationId idempotencyKey attempt maxAttempts runAfter progress
  input metadata error deadLettered queuePosition createdAt updatedAt startedAt finishedAt
  steps { index name status progress message startedAt finishedAt }
  project { id name }
  environment { id name }
  artifacts { id kind path sizeBytes sha256 createdAt url taskId }
}
"""

HEALTH = gql("""{ health { status version database bus broadcast broadcastConnected
  queuedTasks runningTasks } }""")
VIEWER = gql("{ viewer { id name role } }")
CREATE_PROJECT = gql("""
mutation($name: String!) { createProject(input: {name: $name}) {
  project { id name createdAt } userErrors { field message code } } }""")
PROJECTS = gql("""
query($first: Int, $after: String) { projects(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id name } } } }""")
PROJECTS_DEFAULT = gql("{ projects { totalCount edges { node { name } } } }")
PROJECT = gql("""
query($id: ID!) { project(id: $id) {
  id name description teamsWebhookUrl emailRecipients createdAt
  environments { id name type project { id } }
  tasks(first: 10) { totalCount edges { node { id type } } }
  failed: tasks(filter: {status: [FAILED]}) { totalCount edges { node { id status } } }
} }""")
ENVIRONMENT = gql("""
query($id: ID!, $first: Int, $after: String) { environment(id: $id) {
  id name type ttlMinutes expiresAt expired currentVersion createdAt
  project { id name }
  tasks(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id status entityId } } }
} }""")
TASKS = gql("""
query($first: Int, $after: String, $filter: TaskFilter) {
  tasks(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id type status } } } }""")
TASK = gql(
    """
query($id: ID!) { task(id: $id) { ...TaskFields } }"""
    + TASK_FIELDS
)
TASK_EVENTS = gql("""
query($id: ID!, $after: Int, $first: Int) { task(id: $id) {
  all: events { sequence kind status progress taskId entityId type message at
                step { index name status } artifact { id kind } }
  page: events(afterSequence: $after, first: $first) { sequence kind }
} }""")
QUEUE = gql("""
query($entity: String!) { tasks(filter: {entityId: $entity}) {
  edges { node { id status queuePosition } } } }""")
TASK_POSITION = gql("query($id: ID!) { task(id: $id) { id status queuePosition } }")
ARTIFACT = gql("""
query($id: ID!) { artifact(id: $id) { id kind path sizeBytes sha256 createdAt url taskId } }""")
DEPLOY = gql("""
mutation($env: ID!, $version: String!, $metadata: JSON, $correlationId: String,
         $key: String) {
  deploy(input: {environmentId: $env, version: $version, metadata: $metadata,
                 correlationId: $correlationId, idempotencyKey: $key}) {
    task { id status } userErrors { field message code } } }""")
BACKUP = gql("""
mutation($instance: String!) { backupDatabase(input: {engine: POSTGRES, instanceId: $instance}) {
  task { id status entityId } userErrors { field message code } } }""")
RESTART = gql("""
mutation($ns: String!, $name: String!) { restartWorkload(input: {namespace: $ns, name: $name}) {
  task { id status entityId } userErrors { field message code } } }""")
CANCEL = gql(
    "mutation($id: ID!) { cancelTask(id: $id) { task { id status } userErrors { code } } }"
)

ALWAYS_FAIL_APPLY = {"simulate": {"failStep": "apply"}}
#: Dead-letters on the first attempt (no retries), to keep listing tests fast.
FAIL_AT_ONCE = {"simulate": {"failStep": "validate", "permanent": True}}


def parse_time(value: str) -> datetime:
    """The contract's DateTime: ISO-8601 in UTC with an explicit offset."""
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, f"DateTime {value!r} has no explicit offset"
    assert moment.utcoffset() == UTC.utcoffset(None), f"DateTime {value!r} is not UTC"
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


async def deploy(live: LiveServer, env_id: str, version: str, **extra: Any) -> str:
    async with live.client() as session:
        result = await session.execute(op(DEPLOY, env=env_id, version=version, **extra))
    payload = result["deploy"]
    assert payload["userErrors"] == [], payload
    task_id: str = payload["task"]["id"]
    return task_id


async def create_projects(live: LiveServer, names: list[str]) -> list[str]:
    ids: list[str] = []
    async with live.client() as session:
        for name in names:
            result = await session.execute(op(CREATE_PROJECT, name=name))
            assert result["createProject"]["userErrors"] == [], result
            ids.append(result["createProject"]["project"]["id"])
    return ids


# -- health and viewer -----------------------------------------------------------------


async def test_health_is_ok_with_memory_backends_and_counts_tasks(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(step_delay=5)
    async with live.client() as session:
        idle = (await session.execute(HEALTH))["health"]
        assert idle["status"] == "ok"
        assert idle["database"] is True
        assert idle["bus"] == "memory"
        assert idle["broadcast"] == "memory"
        assert idle["broadcastConnected"] is True
        assert idle["version"], "health.version must not be empty"
        assert (idle["queuedTasks"], idle["runningTasks"]) == (0, 0)

        ids = []
        for _ in range(3):
            result = await session.execute(op(RESTART, ns="shop", name="api"))
            ids.append(result["restartWorkload"]["task"]["id"])
        await wait_status(live, ids[0], "RUNNING")
        busy = (await session.execute(HEALTH))["health"]
        assert (busy["queuedTasks"], busy["runningTasks"]) == (2, 1), busy

        for task_id in reversed(ids):
            await session.execute(op(CANCEL, id=task_id))
    await wait_final(live.runtime, ids)
    async with live.client() as session:
        done = (await session.execute(HEALTH))["health"]
    assert (done["queuedTasks"], done["runningTasks"]) == (0, 0), done


async def test_viewer_is_the_demo_admin(server: LiveServer) -> None:
    async with server.client() as session:
        viewer = (await session.execute(VIEWER))["viewer"]
    assert viewer["role"] == "ADMIN"
    assert viewer["id"] and viewer["name"]


# -- projects ----------------------------------------------------------------------------


async def test_projects_are_oldest_first_and_paginate_with_cursors(server: LiveServer) -> None:
    names = [f"project-{i}" for i in range(5)]
    ids = await create_projects(server, names)

    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    after: str | None = None
    async with server.client() as session:
        for _ in range(10):  # bounded walk: 3 pages expected
            page = (await session.execute(op(PROJECTS, first=2, after=after)))["projects"]
            assert page["totalCount"] == 5, page
            edges = page["edges"]
            seen += [e["node"]["id"] for e in edges]
            pages.append((len(edges), page["pageInfo"]["hasNextPage"]))
            assert page["pageInfo"]["endCursor"] == edges[-1]["cursor"], page
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert pages == [(2, True), (2, True), (1, False)]
        assert seen == ids, "projects must come oldest first, each exactly once"

        last_cursor = page["pageInfo"]["endCursor"]
        empty = (await session.execute(op(PROJECTS, first=2, after=last_cursor)))["projects"]
        assert empty["edges"] == []
        assert empty["pageInfo"] == {"hasNextPage": False, "endCursor": None}
        assert empty["totalCount"] == 5

        default = (await session.execute(PROJECTS_DEFAULT))["projects"]
        assert [e["node"]["name"] for e in default["edges"]] == names
        assert default["totalCount"] == 5


@pytest.mark.parametrize(
    ("query", "variables", "field"),
    [
        ("query($after: String) { projects(after: $after) { totalCount } }",
         {"after": "not-a-cursor"}, "after"),
        ("query($after: String) { tasks(after: $after) { totalCount } }",
         {"after": "not-a-cursor"}, "after"),
        ("query { tasks(first: 500) { totalCount } }", None, "first"),
        ("query { projects(first: -1) { totalCount } }", None, "first"),
    ],
)  # fmt: skip
async def test_lists_refuse_a_cursor_they_did_not_issue_or_a_page_too_large_before_reading(
    server: LiveServer, query: str, variables: dict[str, Any] | None, field: str
) -> None:
    """Refused before anything is read: a bad page does not start its totalCount, which
    runs on a connection of its own."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = server.runtime.db.engine.sync_engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", seen)
    try:
        body = await server.execute(query, variables)
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", seen)
    assert body.get("data") is None, body
    error = body["errors"][0]
    assert field in error["message"], error
    assert error.get("extensions", {}).get("code") == "INVALID_INPUT", error
    assert not [s for s in statements if "count(" in s.lower()], statements


async def test_project_by_id_with_environments_and_tasks(server: LiveServer) -> None:
    body = await server.execute(
        """mutation { createProject(input: {name: "shop", description: "the shop",
           teamsWebhookUrl: "https://example.test/hook", emailRecipients: ["ops@example.test"]})
           { project { id } userErrors { code } } }"""
    )
    project_id = body["data"]["createProject"]["project"]["id"]
    env_body = await server.execute(
        """mutation($p: ID!) { createEnvironment(input: {projectId: $p, name: "prod", type: PROD})
           { environment { id } userErrors { code } } }""",
        {"p": project_id},
    )
    env_id = env_body["data"]["createEnvironment"]["environment"]["id"]
    good = await deploy(server, env_id, "1.0")
    bad = await deploy(server, env_id, "1.1", metadata=FAIL_AT_ONCE)
    await wait_final(server.runtime, [good, bad])

    async with server.client() as session:
        project = (await session.execute(op(PROJECT, id=project_id)))["project"]
        missing = await session.execute(op(PROJECT, id=UNKNOWN_ID))
    assert missing == {"project": None}
    assert project["id"] == project_id
    assert project["name"] == "shop"
    assert project["description"] == "the shop"
    assert project["teamsWebhookUrl"] == "https://example.test/hook"
    assert project["emailRecipients"] == ["ops@example.test"]
    parse_time(project["createdAt"])
    assert project["environments"] == [
        {"id": env_id, "name": "prod", "type": "PROD", "project": {"id": project_id}}
    ]
    assert project["tasks"]["totalCount"] == 2
    assert [e["node"]["id"] for e in project["tasks"]["edges"]] == [bad, good], "newest first"
    assert project["failed"]["totalCount"] == 1
    assert project["failed"]["edges"] == [{"node": {"id": bad, "status": "FAILED"}}]


# -- environments --------------------------------------------------------------------------


async def test_environment_by_id_with_project_and_tasks(server: LiveServer) -> None:
    project_id, env_id = await project_and_environment(server)
    task_ids = [await deploy(server, env_id, f"1.{i}") for i in range(3)]
    await wait_final(server.runtime, task_ids)

    async with server.client() as session:
        env = (await session.execute(op(ENVIRONMENT, id=env_id, first=2)))["environment"]
        rest = (
            await session.execute(
                op(ENVIRONMENT, id=env_id, first=2, after=env["tasks"]["pageInfo"]["endCursor"])
            )
        )["environment"]["tasks"]
        missing = await session.execute(op(ENVIRONMENT, id=UNKNOWN_ID))
    assert missing == {"environment": None}
    assert env["id"] == env_id
    assert env["name"] == "prod"
    assert env["type"] == "PROD"
    assert env["ttlMinutes"] is None and env["expiresAt"] is None
    assert env["expired"] is False
    assert env["currentVersion"] == "1.2", "currentVersion is the last COMPLETED deployment"
    parse_time(env["createdAt"])
    assert env["project"] == {"id": project_id, "name": "shop"}
    tasks = env["tasks"]
    assert tasks["totalCount"] == 3
    assert tasks["pageInfo"]["hasNextPage"] is True
    assert rest["pageInfo"]["hasNextPage"] is False
    assert rest["totalCount"] == 3
    walked = [e["node"]["id"] for e in tasks["edges"] + rest["edges"]]
    assert walked == list(reversed(task_ids)), "environment tasks come newest first"
    assert all(e["node"]["entityId"] == env_id for e in tasks["edges"] + rest["edges"])


# -- tasks -----------------------------------------------------------------------------------


async def test_tasks_are_newest_first_and_filter_by_every_field(server: LiveServer) -> None:
    project_id, env_id = await project_and_environment(server)
    async with server.client() as session:
        deployed = await deploy(server, env_id, "1.0")
        backup = (await session.execute(op(BACKUP, instance="orders-1")))["backupDatabase"]
        restart = (await session.execute(op(RESTART, ns="shop", name="api")))["restartWorkload"]
    failed = await deploy(server, env_id, "2.0", metadata=FAIL_AT_ONCE)
    created = [deployed, backup["task"]["id"], restart["task"]["id"], failed]
    await wait_final(server.runtime, created)
    newest_first = list(reversed(created))

    async def ids(filter_: dict[str, Any] | None = None, first: int = 20) -> list[str]:
        async with server.client() as session:
            page = (await session.execute(op(TASKS, first=first, filter=filter_)))["tasks"]
        found = [e["node"]["id"] for e in page["edges"]]
        assert page["totalCount"] == len(found), (filter_, page)
        return found

    assert await ids() == newest_first
    assert await ids({"status": ["FAILED"]}) == [failed]
    assert await ids({"status": ["COMPLETED"]}) == [created[2], created[1], deployed]
    assert await ids({"status": ["QUEUED", "RUNNING"]}) == []
    assert await ids({"type": ["DEPLOYMENT"]}) == [failed, deployed]
    assert await ids({"type": ["DB_BACKUP", "RESTART_WORKLOAD"]}) == [created[2], created[1]]
    assert await ids({"entityId": env_id}) == [failed, deployed]
    assert await ids({"entityId": "db:postgres:orders-1"}) == [created[1]]
    assert await ids({"entityId": "k8s:shop/api"}) == [created[2]]
    assert await ids({"projectId": project_id}) == [failed, deployed]
    assert await ids({"projectId": UNKNOWN_ID}) == []
    assert await ids({"deadLettered": True}) == [failed]
    assert await ids({"deadLettered": False}) == [created[2], created[1], deployed]
    assert await ids({"type": ["DEPLOYMENT"], "status": ["COMPLETED"]}) == [deployed]

    # Pagination: walk newest first, two at a time.
    walked: list[str] = []
    flags: list[bool] = []
    after: str | None = None
    async with server.client() as session:
        for _ in range(5):
            page = (await session.execute(op(TASKS, first=2, after=after)))["tasks"]
            assert page["totalCount"] == 4
            walked += [e["node"]["id"] for e in page["edges"]]
            flags.append(page["pageInfo"]["hasNextPage"])
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
    assert flags == [True, False]
    assert walked == newest_first


async def test_total_count_is_counted_when_asked_for_also_through_fragments(
    server: LiveServer,
) -> None:
    _, env_id = await project_and_environment(server)
    created = [await deploy(server, env_id, f"1.{i}") for i in range(3)]
    await wait_final(server.runtime, created)
    body = await server.execute(
        """
        query {
          direct: tasks(first: 1) { totalCount }
          spread: tasks(first: 1) { ...Counted }
          inline: tasks(first: 1) { ... on TaskConnection { totalCount } }
          skipped: tasks(first: 1) { edges { node { id } } }
        }
        fragment Counted on TaskConnection { totalCount }
        """
    )
    data = body["data"]
    assert [data[k]["totalCount"] for k in ("direct", "spread", "inline")] == [3, 3, 3], body
    assert "totalCount" not in data["skipped"]


async def test_a_page_of_tasks_reads_the_json_columns_its_nodes_show_and_only_those(
    server: LiveServer,
) -> None:
    """steps, input and metadata are read with a page only if its nodes show them (by name,
    alias or fragment); each selection still gets exactly what a single task shows."""
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id, "4.1", metadata={"ticket": "OPS-4"})
    await wait_final(server.runtime, [task_id])
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM tasks" in statement:
            statements.append(statement)

    engine = server.runtime.db.engine.sync_engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", seen)
    try:
        body = await server.execute(
            """
            query {
              plain: tasks(first: 5) { edges { node { id status } } }
              shown: tasks(first: 5) { edges { node { id s: steps { name status } ...Input
                                                      ... on Task { metadata } } } }
            }
            fragment Input on Task { input }
            """
        )
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", seen)
    [plain] = body["data"]["plain"]["edges"]
    [shown] = body["data"]["shown"]["edges"]
    assert plain["node"] == {"id": task_id, "status": "COMPLETED"}
    assert shown["node"]["s"] == [
        {"name": name, "status": "COMPLETED"} for name in ("validate", "plan", "apply", "verify")
    ]
    assert shown["node"]["input"] == {"environmentId": env_id, "version": "4.1", "image": None}
    assert shown["node"]["metadata"] == {"ticket": "OPS-4"}
    pages = [s for s in statements if "LIMIT" in s.upper()]
    assert len(pages) == 2, statements
    columns = [
        {c for c in ("steps", "input", "metadata") if re.search(rf"\btasks\.{c}\b", s)}
        for s in pages
    ]
    assert sorted(columns, key=len) == [set(), {"steps", "input", "metadata"}], pages


async def test_task_by_id_has_steps_artifacts_project_and_environment(server: LiveServer) -> None:
    project_id, env_id = await project_and_environment(server)
    task_id = await deploy(
        server, env_id, "3.1", metadata={"ticket": "OPS-1"}, correlationId="corr-1", key="key-1"
    )
    await wait_final(server.runtime, [task_id])

    async with server.client() as session:
        task = (await session.execute(op(TASK, id=task_id)))["task"]
        missing = await session.execute(op(TASK, id=UNKNOWN_ID))
    assert missing == {"task": None}
    assert task["id"] == task_id
    assert task["type"] == "DEPLOYMENT"
    assert task["status"] == "COMPLETED"
    assert task["entityId"] == env_id
    assert task["correlationId"] == "corr-1"
    assert task["idempotencyKey"] == "key-1"
    assert (task["attempt"], task["maxAttempts"]) == (1, 3)
    assert task["progress"] == 1.0
    assert task["input"] == {"environmentId": env_id, "version": "3.1", "image": None}
    assert task["metadata"] == {"ticket": "OPS-1"}
    assert task["error"] is None
    assert task["deadLettered"] is False
    assert task["queuePosition"] is None, "queuePosition is null for a task that is not QUEUED"
    assert task["runAfter"] is None
    created, started, finished = (
        parse_time(task[k]) for k in ("createdAt", "startedAt", "finishedAt")
    )
    assert created <= started <= finished
    assert parse_time(task["updatedAt"]) >= created
    assert task["project"] == {"id": project_id, "name": "shop"}
    assert task["environment"] == {"id": env_id, "name": "prod"}

    steps = task["steps"]
    assert [s["name"] for s in steps] == ["validate", "plan", "apply", "verify"]
    assert [s["index"] for s in steps] == [0, 1, 2, 3]
    for step in steps:
        assert step["status"] == "COMPLETED", step
        assert step["progress"] == 1.0, step
        assert parse_time(step["startedAt"]) <= parse_time(step["finishedAt"])

    [artifact] = task["artifacts"]
    assert artifact["kind"] == "deployment_plan"
    assert artifact["path"] == f"artifacts/{task_id}/plan.json"
    assert artifact["url"] == f"/artifacts/{artifact['id']}"
    assert artifact["taskId"] == task_id
    assert artifact["sizeBytes"] > 0
    assert len(artifact["sha256"]) == 64 and int(artifact["sha256"], 16) >= 0
    async with server.runtime.db.read() as db:
        row = await db.get(ArtifactRow, artifact["id"])
    assert row is not None
    assert (row.sha256, row.size_bytes) == (artifact["sha256"], artifact["sizeBytes"])


ALIASED = gql("""query($id: ID!) { task(id: $id) {
  a: project { id } b: project { name } c: environment { id } d: environment { name }
  e: artifacts { kind } f: artifacts { id } g: queuePosition h: queuePosition
} }""")


async def test_a_relation_selected_twice_answers_both_selections(server: LiveServer) -> None:
    """A single task's relations are read on demand; two aliases of one field share it."""
    project_id, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id, "3.2")
    await wait_final(server.runtime, [task_id])
    async with server.client() as session:
        task = (await session.execute(op(ALIASED, id=task_id)))["task"]
    assert task["a"] == {"id": project_id} and task["b"] == {"name": "shop"}
    assert task["c"] == {"id": env_id} and task["d"] == {"name": "prod"}
    assert [a["kind"] for a in task["e"]] == ["deployment_plan"] and len(task["f"]) == 1
    assert task["g"] is None and task["h"] is None


async def test_failed_task_reports_error_attempts_and_failed_step(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id, "9.9", metadata=ALWAYS_FAIL_APPLY)
    await wait_final(server.runtime, [task_id])
    async with server.client() as session:
        task = (await session.execute(op(TASK, id=task_id)))["task"]
    assert task["status"] == "FAILED"
    assert task["deadLettered"] is True
    assert task["attempt"] == task["maxAttempts"] == 3
    assert task["error"] and "apply" in task["error"], task["error"]
    by_name = {s["name"]: s["status"] for s in task["steps"]}
    assert by_name["apply"] == "FAILED", task["steps"]
    assert by_name["verify"] != "COMPLETED", task["steps"]
    assert task["progress"] < 1.0
    assert parse_time(task["finishedAt"]) >= parse_time(task["createdAt"])


async def test_task_events_are_numbered_and_page_with_after_sequence(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id, "1.0")
    await wait_final(server.runtime, [task_id])
    async with server.client() as session:
        task = (await session.execute(op(TASK_EVENTS, id=task_id, after=2, first=3)))["task"]
        tail = (await session.execute(op(TASK_EVENTS, id=task_id, after=1000, first=3)))["task"]
    events = task["all"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "QUEUED" and events[0]["status"] == "QUEUED"
    assert events[-1]["kind"] == "COMPLETED" and events[-1]["status"] == "COMPLETED"
    assert events[-1]["progress"] == 1.0
    assert {e["taskId"] for e in events} == {task_id}
    assert {e["entityId"] for e in events} == {env_id}
    assert {e["type"] for e in events} == {"DEPLOYMENT"}
    stamps = [parse_time(e["at"]) for e in events]
    assert stamps == sorted(stamps), "events are oldest first"
    kinds = [e["kind"] for e in events]
    assert kinds.count("STEP_COMPLETED") == 4
    artifact_events = [e for e in events if e["kind"] == "ARTIFACT"]
    assert len(artifact_events) == 1 and artifact_events[0]["artifact"]["kind"] == (
        "deployment_plan"
    )
    for event in events:
        if event["kind"].startswith("STEP_"):
            assert event["step"] is not None and event["step"]["name"], event
    assert [e["sequence"] for e in task["page"]] == [3, 4, 5]
    assert [e["kind"] for e in task["page"]] == kinds[2:5]
    assert tail["page"] == []


async def test_queue_position_counts_the_tasks_ahead_on_the_same_entity(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(step_delay=5)
    async with live.client() as session:
        ids = []
        for _ in range(3):
            result = await session.execute(op(RESTART, ns="shop", name="web"))
            ids.append(result["restartWorkload"]["task"]["id"])
        other = (await session.execute(op(RESTART, ns="shop", name="other")))["restartWorkload"]
        await wait_status(live, ids[0], "RUNNING")
        await wait_status(live, other["task"]["id"], "RUNNING")

        listed = (await session.execute(op(QUEUE, entity="k8s:shop/web")))["tasks"]["edges"]
        assert [e["node"] for e in listed] == [
            {"id": ids[2], "status": "QUEUED", "queuePosition": 1},
            {"id": ids[1], "status": "QUEUED", "queuePosition": 0},
            {"id": ids[0], "status": "RUNNING", "queuePosition": None},
        ]
        single = [(await session.execute(op(TASK_POSITION, id=i)))["task"] for i in ids]
        assert [t["queuePosition"] for t in single] == [None, 0, 1]

        # Cancelling the next one moves the last one up.
        await session.execute(op(CANCEL, id=ids[1]))
        moved = (await session.execute(op(TASK_POSITION, id=ids[2])))["task"]
        assert moved == {"id": ids[2], "status": "QUEUED", "queuePosition": 0}

        for task_id in [ids[2], ids[0], other["task"]["id"]]:
            await session.execute(op(CANCEL, id=task_id))
    await wait_final(live.runtime, [*ids, other["task"]["id"]])


async def test_task_without_project_has_null_project_and_environment(server: LiveServer) -> None:
    async with server.client() as session:
        result = await session.execute(op(BACKUP, instance="orders-2"))
        task_id = result["backupDatabase"]["task"]["id"]
        await wait_final(server.runtime, [task_id])
        task = (await session.execute(op(TASK, id=task_id)))["task"]
    assert task["entityId"] == "db:postgres:orders-2"
    assert task["project"] is None and task["environment"] is None
    assert task["status"] == "COMPLETED"
    [artifact] = task["artifacts"]
    assert artifact["kind"] == "db_backup"
    assert artifact["path"].startswith("backups/postgres/orders-2/"), artifact


# -- artifacts ---------------------------------------------------------------------------------


async def test_artifact_by_id_and_its_bytes_over_http(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    task_id = await deploy(server, env_id, "1.0")
    async with server.client() as session:
        backup = (await session.execute(op(BACKUP, instance="orders-3")))["backupDatabase"]
    await wait_final(server.runtime, [task_id, backup["task"]["id"]])
    async with server.runtime.db.read() as db:
        rows = list((await db.execute(select(ArtifactRow))).scalars())
    assert {r.task_id for r in rows} == {task_id, backup["task"]["id"]}

    async with server.client() as session, server.http() as http:
        for row in rows:
            artifact = (await session.execute(op(ARTIFACT, id=row.id)))["artifact"]
            assert artifact["id"] == row.id
            assert artifact["taskId"] == row.task_id
            assert artifact["kind"] == row.kind
            assert artifact["path"] == row.path
            assert artifact["sizeBytes"] == row.size_bytes
            assert artifact["sha256"] == row.sha256
            parse_time(artifact["createdAt"])

            response = await http.get(artifact["url"])
            assert response.status_code == 200, response.text
            digest = hashlib.sha256(response.content).hexdigest()
            assert response.headers["X-Checksum-SHA256"] == artifact["sha256"]
            assert digest == artifact["sha256"], "downloaded bytes do not match the sha256"
            assert len(response.content) == artifact["sizeBytes"]

        assert await session.execute(op(ARTIFACT, id=UNKNOWN_ID)) == {"artifact": None}
        gone = await http.get(f"/artifacts/{UNKNOWN_ID}")
        assert gone.status_code == 404, gone.text
