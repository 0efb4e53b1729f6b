"""Which subscriptions the hub may render in its own turn: those whose selection never has
to be awaited (graphql/shared_events.py ``renders_synchronously``)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest
import strawberry
from graphql import parse

from cloudops.domain import EventKind, TaskStatus, TaskType
from cloudops.events.records import EventRecord
from cloudops.graphql.schema import build_schema
from cloudops.graphql.shared_events import SharedEventExecutor, event_view
from cloudops.settings import Settings


@strawberry.type
class Detail:
    plain: str

    @strawberry.field
    def computed(self) -> str:
        return self.plain.upper()

    @strawberry.field
    async def fetched(self) -> str:
        return self.plain


@strawberry.type
class Event:
    name: str
    detail: Detail


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def events(self) -> AsyncGenerator[Event, None]:
        yield Event(name="e", detail=Detail(plain="p"))


SMALL = strawberry.Schema(query=Query, subscription=Subscription)


def executor(schema: strawberry.Schema, document: str) -> SharedEventExecutor:
    built = SharedEventExecutor.build(schema._schema, parse(document))
    assert isinstance(built, SharedEventExecutor), built
    return built


@pytest.mark.parametrize(
    ("document", "synchronous"),
    [
        ("subscription { events { name } }", True),
        ("subscription { events { name detail { plain computed __typename } } }", True),
        ("subscription { events { detail { fetched } } }", False),
        ("subscription { events { ... on Event { detail { fetched } } } }", False),
        (
            "subscription { events { ...E } } fragment E on Event { detail { ...D } } "
            "fragment D on Detail { plain fetched }",
            False,
        ),
        (
            "subscription { events { ...E } } fragment E on Event { detail { plain } }",
            True,
        ),
    ],
)
def test_an_awaited_field_anywhere_in_the_selection_is_found(
    document: str, synchronous: bool
) -> None:
    assert executor(SMALL, document).renders_synchronously() is synchronous


def test_the_dashboards_live_feed_renders_synchronously() -> None:
    schema = build_schema(Settings(_env_file=None))
    document = """subscription { taskEvents { ...EventFields } }
    fragment EventFields on TaskEvent {
      id taskId sequence kind at status progress entityId type message
      step { index name status progress message startedAt finishedAt }
      artifact { id kind path sizeBytes sha256 createdAt url taskId } }"""
    assert executor(schema, document).renders_synchronously()


def test_subscribers_of_one_operation_get_one_encoded_payload_per_event() -> None:
    """The live feed writes the same bytes to every subscriber of an operation: made and
    encoded once per event, while another operation gets its own."""
    schema = build_schema(Settings(_env_file=None))
    feed = "subscription { taskEvents { id taskId sequence kind status } }"
    first, second = executor(schema, feed), executor(schema, feed)
    other = executor(schema, "subscription { taskEvents { sequence message } }")
    record = EventRecord(
        "event-1",
        "task-1",
        3,
        EventKind.LOG,
        datetime(2026, 11, 29, tzinfo=UTC),
        TaskStatus.RUNNING,
        0.5,
        "k8s:default/web",
        TaskType.RESTART_WORKLOAD,
        None,
        None,
        "hello",
        None,
    )
    view = event_view(record)

    payload = first.next_payload(view)
    assert json.loads(payload) == {
        "data": {
            "taskEvents": {
                "id": "event-1",
                "taskId": "task-1",
                "sequence": 3,
                "kind": "LOG",
                "status": "RUNNING",
            }
        }
    }
    assert second.next_payload(view) is payload, "shared, not made again"
    assert first.next_payload(view) is payload
    assert json.loads(other.next_payload(view)) == {
        "data": {"taskEvents": {"sequence": 3, "message": "hello"}}
    }
