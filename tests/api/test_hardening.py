"""Hardening of the HTTP endpoint: query limits, body size, GET, error masking, GraphiQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from gql import gql
from gql.transport.exceptions import TransportQueryError
from sqlalchemy import func, select, text

from cloudops.db.models import Environment, Project, Task, TaskEvent
from cloudops.events.records import EventRecord
from cloudops.graphql.types import TaskEvent as GraphQLTaskEvent
from cloudops.services import inputs
from tests.api.conftest import LiveServer, op, project_and_environment

ServerFactory = Callable[..., Any]


async def row_counts(live: LiveServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with live.runtime.db.read() as session:
        for model in (Project, Environment, Task, TaskEvent):
            counts[model.__tablename__] = int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
    return counts


def nested_query(depth: int) -> str:
    """A query whose leaf field is ``depth`` levels below projects -> edges -> node."""
    inner = "id"
    for level in reversed(range(depth)):
        inner = f"environments {{ {inner} }}" if level % 2 == 0 else f"project {{ {inner} }}"
    return f"{{ projects {{ edges {{ node {{ {inner} }} }} }} }}"


def error_messages(body: dict[str, Any]) -> list[str]:
    return [e["message"] for e in body.get("errors") or []]


# -- query limits ------------------------------------------------------------------------


async def test_query_deeper_than_max_query_depth_is_refused(server: LiveServer) -> None:
    await project_and_environment(server)
    shallow = await server.execute(nested_query(4))
    assert "errors" not in shallow, shallow
    assert shallow["data"]["projects"]["edges"], "the shallow query must really resolve"

    body = await server.execute(nested_query(20))
    assert body.get("data") is None, body
    messages = error_messages(body)
    assert any("depth" in m.lower() for m in messages), messages


async def test_max_query_depth_setting_is_honoured(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory(max_query_depth=3)
    ok = await live.execute("{ projects { edges { node { id } } } }")
    assert "errors" not in ok, ok
    body = await live.execute("{ projects { edges { node { environments { id } } } } }")
    assert body.get("data") is None, body
    assert any("depth" in m.lower() for m in error_messages(body)), body


async def test_more_aliases_than_max_aliases_are_refused(server: LiveServer) -> None:
    allowed = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(30)) + " }"
    body = await server.execute(allowed)
    assert "errors" not in body, body
    assert len(body["data"]) == 30

    too_many = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(31)) + " }"
    body = await server.execute(too_many)
    assert body.get("data") is None, body
    assert any("alias" in m.lower() for m in error_messages(body)), body


async def test_aliased_mutations_over_the_limit_write_nothing(server: LiveServer) -> None:
    before = await row_counts(server)
    many = (
        "mutation { "
        + " ".join(
            f'p{i}: createProject(input: {{name: "p{i}"}}) {{ project {{ id }} }}'
            for i in range(31)
        )
        + " }"
    )
    body = await server.execute(many)
    assert body.get("data") is None, body
    assert any("alias" in m.lower() for m in error_messages(body)), body
    assert await row_counts(server) == before


async def test_query_over_max_tokens_is_refused(server: LiveServer) -> None:
    huge = "{ " + " ".join("viewer { id name role }" for _ in range(1200)) + " }"
    body = await server.execute(huge)
    assert body.get("data") is None, body
    messages = error_messages(body)
    assert any("token" in m.lower() for m in messages), messages


async def test_limits_follow_the_settings(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory(max_aliases=2, max_tokens=100)
    assert "errors" not in await live.execute("{ a: viewer { id } b: viewer { id } }")
    three = await live.execute("{ a: viewer { id } b: viewer { id } c: viewer { id } }")
    assert any("alias" in m.lower() for m in error_messages(three)), three
    long = "{ " + " ".join("viewer { id }" for _ in range(30)) + " }"
    body = await live.execute(long)
    assert any("token" in m.lower() for m in error_messages(body)), body


async def test_limits_hold_for_a_document_sent_again(server: LiveServer) -> None:
    """Parse and validation results are cached per document text: a refused document is
    refused every time, with the same reason, and a syntax error is reported every time."""
    deep = nested_query(20)
    aliases = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(31)) + " }"
    for _ in range(3):
        body = await server.execute(deep)
        assert body.get("data") is None and any("depth" in m.lower() for m in error_messages(body))
        body = await server.execute(aliases)
        assert body.get("data") is None and any("alias" in m.lower() for m in error_messages(body))
        body = await server.execute("{ viewer { id ")
        assert any("syntax error" in m.lower() for m in error_messages(body)), body
        assert "errors" not in await server.execute("{ viewer { id } }")


# -- body size -----------------------------------------------------------------------------


async def test_body_over_max_body_bytes_is_413_and_writes_nothing(server: LiveServer) -> None:
    limit = server.runtime.settings.max_body_bytes
    assert limit == 1024 * 1024
    document = 'mutation { createProject(input: {name: "too-big"}) { project { id } } }'
    body = json.dumps({"query": document + " " * limit}).encode()
    assert len(body) > limit
    before = await row_counts(server)
    async with server.http() as http:
        response = await http.post(
            "/graphql", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert str(limit) in response.text
    assert await row_counts(server) == before


async def test_streamed_body_without_length_over_the_limit_is_413(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory(max_body_bytes=4096)
    document = 'mutation { createProject(input: {name: "streamed"}) { project { id } } }'
    payload = json.dumps({"query": document + " " * 10_000}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 1024):
            yield payload[start : start + 1024]

    before = await row_counts(live)
    async with live.http() as http:
        response = await http.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        small = await http.post(
            "/graphql",
            json={"query": 'mutation { createProject(input: {name: "fits"}) { project { id } } }'},
        )
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert small.status_code == 200, small.text
    after = await row_counts(live)
    assert after == dict(before, projects=before["projects"] + 1), "only the small one wrote"


# -- GET --------------------------------------------------------------------------------------


async def test_mutation_over_get_is_refused_and_writes_nothing(server: LiveServer) -> None:
    before = await row_counts(server)
    async with server.http() as http:
        query = await http.get("/graphql", params={"query": "{ viewer { role } }"})
        mutation = await http.get(
            "/graphql",
            params={
                "query": 'mutation { createProject(input: {name: "via-get"}) { project { id } } }'
            },
        )
    assert query.status_code == 200 and query.json()["data"]["viewer"]["role"] == "ADMIN"
    assert mutation.status_code in (400, 405), (mutation.status_code, mutation.text)
    assert "mutation" in mutation.text.lower(), mutation.text
    assert await row_counts(server) == before


# -- masking unexpected errors -----------------------------------------------------------------


async def test_unexpected_server_error_is_masked(server_factory: ServerFactory) -> None:
    live: LiveServer = await server_factory()
    await project_and_environment(live)
    async with live.runtime.db.write() as session:
        await session.execute(text("ALTER TABLE projects RENAME TO projects_gone"))

    body = await live.execute("{ projects { totalCount edges { node { id name } } } }")
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert error["message"].startswith("Unexpected error (id "), error
    leaked = json.dumps(body).lower()
    for secret in ("sqlite", "traceback", "projects_gone", "no such table", "operationalerror"):
        assert secret not in leaked, f"the response leaks {secret!r}: {body}"
    error_id = error["extensions"]["errorId"]
    assert re.fullmatch(r"[0-9a-f]{6,}", error_id), error_id
    assert error_id in error["message"]

    # An expected error on the same server is not masked.
    refused = await live.execute('{ projects(after: "not-a-cursor") { totalCount } }')
    assert "after" in refused["errors"][0]["message"], refused


SUBSCRIBE_EVENTS = gql(
    "subscription($taskId: ID, $after: Int) "
    "{ taskEvents(taskId: $taskId, afterSequence: $after) { taskId sequence kind at } }"
)


def assert_masked(error: dict[str, Any], *secrets: str) -> None:
    assert error["message"].startswith("Unexpected error (id "), error
    assert error.get("extensions", {}).get("code") == "INTERNAL", error
    leaked = json.dumps(error).lower()
    for secret in ("traceback", *secrets):
        assert secret not in leaked, f"the error leaks {secret!r}: {error}"


async def test_unexpected_error_ending_a_subscription_is_masked(
    server_factory: ServerFactory,
) -> None:
    live: LiveServer = await server_factory()
    async with live.runtime.db.write() as session:
        await session.execute(text("ALTER TABLE tasks RENAME TO tasks_gone"))

    with pytest.raises(TransportQueryError) as raised:
        async with live.ws_client() as session:
            async for _ in session.subscribe(op(SUBSCRIBE_EVENTS, taskId="any", after=0)):
                pass
    assert raised.value.errors
    assert_masked(raised.value.errors[0], "sqlite", "tasks_gone", "no such table")


async def test_unexpected_error_in_a_live_event_is_masked(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field that fails while an event is rendered reaches the subscriber masked."""

    from_record = GraphQLTaskEvent.from_record

    def broken_view(record: EventRecord) -> GraphQLTaskEvent:
        view = from_record(record)
        return dataclasses.replace(view, at="not a datetime")  # type: ignore[arg-type]

    # Where every path (the live outlet's and Strawberry's) gets an event's API object.
    monkeypatch.setattr(GraphQLTaskEvent, "from_record", broken_view)
    _, env_id = await project_and_environment(server)

    async def first_event() -> None:
        async with server.ws_client() as session:
            async for _ in session.subscribe(op(SUBSCRIBE_EVENTS)):
                return

    with pytest.raises(TransportQueryError) as raised:
        async with asyncio.timeout(30):
            watcher = asyncio.create_task(first_event())
            await asyncio.sleep(0.5)  # subscribed before the event is published
            await server.runtime.tasks.deploy(inputs.Deploy(env_id, "1"))
            await watcher
    assert raised.value.errors
    assert_masked(raised.value.errors[0], "isoformat", "attributeerror", "not a datetime")


# -- GraphiQL -------------------------------------------------------------------------------------


async def test_graphiql_is_served_to_browsers(server: LiveServer) -> None:
    async with server.http() as http:
        response = await http.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower() and "graphiql" in response.text.lower()
