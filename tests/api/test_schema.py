"""The exported schema: fresh, a superset of the contract, and cheap to query in lists."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from graphql import build_schema, find_breaking_changes, find_dangerous_changes
from sqlalchemy import event
from strawberry.printer import print_schema

from cloudops.graphql.schema import build_schema as build_strawberry_schema
from cloudops.services import inputs
from cloudops.settings import Settings
from tests.api.conftest import LiveServer, project_and_environment
from tests.conftest import wait_final

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT.parent / "shared" / "api-contract.graphql"


def exported() -> str:
    return print_schema(build_strawberry_schema(Settings(_env_file=None))) + "\n"


def test_schema_graphql_is_not_stale() -> None:
    on_disk = (ROOT / "schema.graphql").read_text()
    assert on_disk == exported(), (
        "schema.graphql is stale: run `cloudops export-schema -o schema.graphql`"
    )


def test_export_schema_command_prints_the_served_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudops.cli", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == exported()


def test_schema_is_a_superset_of_the_contract() -> None:
    contract = build_schema(CONTRACT.read_text())
    ours = build_schema(exported())
    assert [c.description for c in find_breaking_changes(contract, ours)] == []
    assert [c.description for c in find_dangerous_changes(contract, ours)] == []


TASK_LIST = """
query { tasks(first: 50) { totalCount edges { node {
  id status steps { name status } project { id name } environment { id name currentVersion }
  artifacts { id path sha256 } queuePosition } } } }
"""


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> LiveServer:
    """These tests count one request's database work; a task's notice, read in the
    background after the task ends, would be counted with it."""
    live: LiveServer = await server_factory(notifications="off")
    return live


async def count_engine_events(live: LiveServer, query: str, name: str) -> int:
    """How often the engine event ``name`` fires while the server answers ``query``
    (``before_cursor_execute``: statements; ``checkout``: pool connections taken)."""
    fired: list[object] = []

    def record(*args: Any) -> None:
        fired.append(args)

    sync_engine = live.runtime.db.engine.sync_engine
    event.listen(sync_engine, name, record)
    try:
        body = await live.execute(query)
    finally:
        event.remove(sync_engine, name, record)
    assert "errors" not in body, body
    return len(fired)


async def count_statements(live: LiveServer, query: str) -> int:
    return await count_engine_events(live, query, "before_cursor_execute")


async def count_checkouts(live: LiveServer, query: str) -> int:
    return await count_engine_events(live, query, "checkout")


async def test_nested_fields_of_a_task_list_cost_a_constant_number_of_queries(
    server: LiveServer,
) -> None:
    _, env_id = await project_and_environment(server)
    ids = []
    for i in range(5):
        result = await server.runtime.tasks.deploy(inputs.Deploy(env_id, f"v{i}"))
        assert result.value is not None
        ids.append(result.value.id)
    await wait_final(server.runtime, ids)
    few = await count_statements(server, TASK_LIST)
    for i in range(5, 50):
        result = await server.runtime.tasks.deploy(inputs.Deploy(env_id, f"v{i}"))
        assert result.value is not None
        ids.append(result.value.id)
    await wait_final(server.runtime, ids)
    many = await count_statements(server, TASK_LIST)
    assert many == few, f"{few} statements for 5 tasks but {many} for 50"
    assert many <= 12


RELATIONS = "project { id name } environment { id name } artifacts { id kind taskId }"
LIST_WITH_FRAGMENTS = f"""
query {{ tasks(first: 10) {{ edges {{ ...Edge }} }} }}
fragment Edge on TaskEdge {{ node {{ id ... on Task {{ ...Relations }} }} }}
fragment Relations on Task {{ {RELATIONS} }}
"""


async def test_a_task_list_and_a_single_task_show_the_same_relations(
    server: LiveServer,
) -> None:
    """A page reads its tasks' relations with the page (found through fragments too); a
    single task reads them through DataLoaders. Both must agree, task by task."""
    ids = []
    for name in ("shop", "blog"):
        _, env_id = await project_and_environment(server, name)
        for version in ("v1", "v2"):
            result = await server.runtime.tasks.deploy(inputs.Deploy(env_id, version))
            assert result.value is not None
            ids.append(result.value.id)
    await wait_final(server.runtime, ids)

    listed = await server.execute(LIST_WITH_FRAGMENTS)
    assert "errors" not in listed, listed
    nodes = {edge["node"]["id"]: edge["node"] for edge in listed["data"]["tasks"]["edges"]}
    assert set(nodes) == set(ids)
    for task_id in ids:
        single = await server.execute(f'query {{ task(id: "{task_id}") {{ id {RELATIONS} }} }}')
        assert single["data"]["task"] == nodes[task_id]
        assert [a["taskId"] for a in nodes[task_id]["artifacts"]] == [task_id]
    assert {n["project"]["name"] for n in nodes.values()} == {"shop", "blog"}
    assert len({n["environment"]["id"] for n in nodes.values()}) == 2

    # One connection for the page and its relations, with or without fragments; the
    # DataLoaders would take one more per relation.
    plain = f"query {{ tasks(first: 10) {{ edges {{ node {{ id {RELATIONS} }} }} }} }}"
    assert await count_checkouts(server, LIST_WITH_FRAGMENTS) == 1
    assert await count_checkouts(server, plain) == 1
