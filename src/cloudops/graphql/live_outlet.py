"""Live task events written to a subscriber's socket in the hub's own turn of the loop.

Through Strawberry, each event reaches each subscriber via a queue, a task wake-up, three
async generators, the extension hooks and an awaited ASGI send: with a thousand
subscribers that was most of the server's CPU, and the p99 delivery latency grew with
it (bench scenario 4). A graphql-transport-ws subscription on the live feed (taskEvents
without taskId: nothing to replay, no end of its own) instead hands the hub an outlet:
the hub calls it for each matching event, it renders the event with the subscription's
own executor (results shared per operation, graphql/shared_events.py) and writes the
``next`` frame at once. What the protocol says stays with Strawberry: the subscribe, the
error or complete that ends it, the client's complete (after which the outlet writes
nothing). Other protocols (SSE, graphql-ws) and servers without a frame writer keep the
ordinary path, as does a subscription selecting a field that must be awaited.
"""

from __future__ import annotations

from collections import deque
from contextvars import ContextVar
from typing import Any, Protocol, cast

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types import Info

from cloudops.events.records import EventRecord
from cloudops.graphql.context import Context
from cloudops.graphql.shared_events import (
    SharedEventExecutor,
    event_view,
    next_message_prefix,
    subscription_executor,
)

#: The ASGI scope extension carrying a server's FrameWriter (web/websocket_protocol.py).
FRAME_WRITER = "cloudops.frame_writer"


class FrameWriter(Protocol):
    def write_texts(self, texts: list[bytes]) -> list[int] | None:
        """Send text frames (UTF-8) now, in one write; their sizes in bytes, or None when
        the socket is closing."""

    def unsent_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel (the peer is behind by that)."""


def frame_writer(scope: Any) -> FrameWriter | None:
    extension = (scope.get("extensions") or {}).get(FRAME_WRITER)
    return cast(FrameWriter, extension["writer"]) if extension else None


_Handler = BaseGraphQLTransportWSHandler[Context, None]
_RUNNING: ContextVar[tuple[_Handler, Operation[Context, None]] | None] = ContextVar(
    "cloudops_ws_operation", default=None
)


class LiveFeedHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler; each operation's task knows which
    operation it runs, so that a subscription can be given an outlet."""

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        _RUNNING.set((self, operation))  # this task's context only
        await super().run_operation(operation)


class LiveOutlet:
    """The hub's direct delivery (events/hub.py ``DirectDelivery``) for one operation."""

    def __init__(
        self,
        handler: _Handler,
        operation: Operation[Context, None],
        executor: SharedEventExecutor,
        frames: FrameWriter,
    ) -> None:
        self._handler = handler
        self._operation = operation
        self._executor = executor
        self._frames = frames
        self._prefix = next_message_prefix(operation.id).encode()
        self._written = 0  # bytes of this operation's frames written so far
        self._frame_ends: deque[int] = deque()  # where each frame not yet sent ends

    def __call__(self, records: list[EventRecord]) -> int:
        operation = self._operation
        if operation.completed or self._handler.operations.get(operation.id) is not operation:
            return 0  # the client completed it; its task's cancellation unsubscribes it
        prefix, render = self._prefix, self._executor.next_payload
        frames = [b"".join((prefix, render(event_view(record)), b"}")) for record in records]
        sizes = self._frames.write_texts(frames)
        if sizes is None:
            return 0  # the socket is closing; the handler ends the operation
        ends = self._frame_ends
        for size in sizes:
            self._written += size
            ends.append(self._written)
        # Other operations' frames on this socket count as ours: never fewer than true.
        taken = self._written - self._frames.unsent_bytes()
        while ends and ends[0] <= taken:
            ends.popleft()
        return len(ends)


def live_outlet(info: Info[Context, None]) -> LiveOutlet | None:
    """An outlet for the subscription being resolved, if its connection can take one."""
    running = _RUNNING.get()
    executor = subscription_executor()
    frames = frame_writer(info.context.request.scope)
    if running is None or executor is None or frames is None:
        return None
    if not executor.renders_synchronously():
        return None  # its events are awaited on the ordinary path
    handler, operation = running
    return LiveOutlet(handler, operation, executor, frames)
