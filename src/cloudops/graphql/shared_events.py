"""Subscription events resolved once per distinct operation, not once per subscriber.

A thousand dashboards on the live feed ask the same question of the same event. Running
graphql-core's execution of the selection for each of them was most of the fan-out's CPU
(scenario 4 of ``bench/``). Here every subscriber of an event gets the same ``TaskEvent``
object, and the executor keeps the result of executing an operation on that event under
a key of everything that can change it: the operation's text with its fragments, the
coerced variables, and the viewer's organization and role. A result with errors is never
shared; each subscriber still gets its own ``next`` message (ids differ), only the work
behind it is done once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Hashable
from contextvars import ContextVar
from inspect import isawaitable, iscoroutine
from typing import Any, Generic, TypeVar

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLObjectType,
    InlineFragmentNode,
    NamedTypeNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    print_ast,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

from cloudops.events.records import EventRecord
from cloudops.graphql.errors import masked_errors
from cloudops.graphql.types import TaskEvent

#: Events recently delivered; a subscriber further behind than this gets a fresh
#: conversion (correct, only slower), so the bound is about memory, not correctness.
CACHE_SIZE = 4096


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Recent(Generic[K, V]):
    """A bounded map that forgets the oldest entry first (events are delivered in the
    order they were published, so oldest-first is least-recently-used here)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        items = self._items
        items[key] = value
        if len(items) > self._size:
            del items[next(iter(items))]


_VIEWS: _Recent[str, TaskEvent] = _Recent(CACHE_SIZE)
_RESULTS: _Recent[tuple[str, Hashable], ExecutionResult] = _Recent(CACHE_SIZE * 4)


#: (event id, operation key) -> the whole ``next`` payload, encoded: what the live feed
#: writes to each of an event's subscribers of one operation (see next_payload).
_PAYLOADS: _Recent[tuple[str, Hashable], bytes] = _Recent(CACHE_SIZE)

#: id(data) -> (data, its JSON); the data is held so that its id is not reused meanwhile.
_ENCODED: _Recent[int, tuple[Any, str]] = _Recent(CACHE_SIZE * 4)
_COMPACT: dict[str, Any] = {"separators": (",", ":")}


def shared_json(data: object) -> str | None:
    """The JSON of a shared event result, encoded once; None for any other data."""
    entry = _ENCODED.get(id(data))
    return entry[1] if entry is not None and entry[0] is data else None


def next_message_prefix(operation_id: str) -> str:
    """A graphql-transport-ws ``next`` message up to its payload, which (as JSON) and a
    closing brace complete it: how a shared payload is spliced into each subscriber's
    message without encoding the result again."""
    return f'{{"id":{json.dumps(operation_id)},"type":"next","payload":'


def subscription_executor() -> SharedEventExecutor | None:
    """The executor of the subscription being set up in this task (graphql-core builds it
    just before it calls the subscription's resolver, in the operation's own task): what
    renders that subscriber's events when they bypass the per-event pipeline."""
    return _SUBSCRIBING.get()


def event_view(record: EventRecord) -> TaskEvent:
    """The API object of a broadcast event, built once for all its subscribers."""
    view = _VIEWS.get(record.id)
    if view is None:
        view = TaskEvent.from_record(record)
        _VIEWS.put(record.id, view)
    return view


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, sharing per-event results of subscriptions between
    subscribers whose operations are the same; queries and mutations are untouched."""

    _event_key: Hashable | None = None

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        built = super().build(*args, **kwargs)
        if (
            isinstance(built, SharedEventExecutor)
            and built.operation.operation is OperationType.SUBSCRIPTION
        ):
            _SUBSCRIBING.set(built)
        return built

    def _subscription_key(self) -> Hashable | None:
        """What this subscription's per-event results are shared under (None for queries
        and mutations); made at the first event."""
        if self._event_key is None and self.operation.operation is OperationType.SUBSCRIPTION:
            self._event_key = self._operation_key()
        return self._event_key

    def build_per_event_executor(self, payload: Any) -> Any:
        key = self._subscription_key()
        if isinstance(payload, TaskEvent):
            cached = _RESULTS.get((str(payload.id), key))
            if cached is not None:
                return _Executed(cached)  # not even the copy of this executor
        return super().build_per_event_executor(payload)

    def execute_operation(self, serially: bool | None = None) -> Any:
        payload = self.root_value
        key = self._event_key
        if key is None or not isinstance(payload, TaskEvent):
            return super().execute_operation(serially)
        cache_key = (str(payload.id), key)
        result = super().execute_operation(serially)
        # Every TaskEvent field resolves synchronously; were one to become async, its
        # awaitable result would simply not be shared.
        if isawaitable(result):
            return _masked_when_done(result)
        if not isinstance(result, ExecutionResult):
            return result
        if result.errors:
            result.errors = masked_errors(result.errors)  # not shared: each gets its own id
        else:
            _RESULTS.put(cache_key, result)
            _ENCODED.put(id(result.data), (result.data, json.dumps(result.data, **_COMPACT)))
        return result

    def renders_synchronously(self) -> bool:
        """Whether no field this subscription selects below its root field has to be
        awaited (no async resolver, no field extension), so that its events can be
        rendered inside the hub's own turn (graphql/live_outlet.py)."""
        root = self.schema.subscription_type
        if root is None:
            return False
        for selection in self.operation.selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.name.value not in root.fields:
                return False
            below = selection.selection_set
            event_type = get_named_type(root.fields[selection.name.value].type)
            if below is not None and not self._synchronous(below, event_type):
                return False
        return True

    def _synchronous(self, selections: SelectionSetNode, parent: GraphQLNamedType | None) -> bool:
        if not isinstance(parent, GraphQLObjectType):
            return False  # an interface or a union: not worth guessing
        for selection in selections.selections:
            below: SelectionSetNode | None
            if isinstance(selection, FieldNode):
                field = parent.fields.get(selection.name.value)
                if field is None:
                    continue  # __typename
                definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
                if definition is not None and (definition.is_async or definition.extensions):
                    return False
                inner: GraphQLNamedType | None = get_named_type(field.type)
                below = selection.selection_set
            else:
                condition: NamedTypeNode | None
                if isinstance(selection, FragmentSpreadNode):
                    fragment = self.fragments[selection.name.value].definition
                    condition, below = fragment.type_condition, fragment.selection_set
                else:
                    assert isinstance(selection, InlineFragmentNode)
                    condition, below = selection.type_condition, selection.selection_set
                inner = parent if condition is None else self.schema.get_type(condition.name.value)
            if below is not None and not self._synchronous(below, inner):
                return False
        return True

    def next_payload(self, event: TaskEvent) -> bytes:
        """The ``next`` payload this subscription sends for ``event``, as UTF-8 JSON, to be
        written straight to its socket (graphql/live_outlet.py). Only for a subscription
        that renders synchronously. A shared result's payload is made and encoded once
        for all the event's subscribers of the same operation: per subscriber, this is
        one lookup."""
        key = self._subscription_key()
        if key is not None:
            made = _PAYLOADS.get((str(event.id), key))
            if made is not None:
                return made
        result = self.build_per_event_executor(event).execute_operation()
        if not isinstance(result, ExecutionResult):
            if iscoroutine(result):
                result.close()
            raise TypeError("next_payload: this subscription's result must be awaited")
        if not result.errors and not result.extensions and key is not None:
            shared = shared_json(result.data)
            if shared is not None:
                made = f'{{"data":{shared}}}'.encode()
                _PAYLOADS.put((str(event.id), key), made)
                return made
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            payload["extensions"] = result.extensions
        return json.dumps(payload, **_COMPACT).encode()

    def _operation_key(self) -> Hashable:
        text = print_ast(self.operation) + "".join(
            print_ast(fragment.definition) for _, fragment in sorted(self.fragments.items())
        )
        variables = json.dumps(self.variable_values, sort_keys=True, default=str)
        viewer = getattr(self.context_value, "viewer", None)
        who = None if viewer is None else (viewer.organization_id, viewer.role.value)
        return (text, variables, who)


async def _masked_when_done(pending: Awaitable[Any]) -> Any:
    result = await pending
    if isinstance(result, ExecutionResult) and result.errors:
        result.errors = masked_errors(result.errors)
    return result


_SUBSCRIBING: ContextVar[SharedEventExecutor | None] = ContextVar(
    "cloudops_subscription_executor", default=None
)


class _Executed:
    """What graphql-core asks of a per-event executor, for a result already computed."""

    __slots__ = ("result",)

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        return self.result
