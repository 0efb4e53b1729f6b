"""Unexpected exceptions reach the client as "Unexpected error (id …)"; the id is in the log.

Errors raised on purpose (GraphQL validation, permission, limits, bad arguments) are
GraphQLErrors without an unexpected original exception, and pass unmasked.

Single results are masked by the schema extension below. Subscription results are masked
where they are made (the task-events resolver, the shared per-event executor), not by an
extension hook: Strawberry builds every extension's stream hook anew for every event and
every subscriber, and at a thousand subscribers that alone was a quarter of the server's
CPU.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

log = logging.getLogger(__name__)


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError | PermissionError)


def mask(error: GraphQLError) -> GraphQLError:
    """The client's view of an unexpected error: a message with an id, and that id in the
    log beside the exception."""
    error_id = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error in a GraphQL operation",
        exc_info=error.original_error,
        extra={"action": "graphql_error", "error_id": error_id, "path": error.path},
    )
    return GraphQLError(
        f"Unexpected error (id {error_id}); the server log has the details.",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={"code": "INTERNAL", "errorId": error_id},
    )


def masked_errors(errors: Sequence[GraphQLError]) -> list[GraphQLError]:
    return [mask(e) if is_unexpected(e) else e for e in errors]


def masked_exception(exc: Exception) -> GraphQLError:
    """What an unexpected exception escaping a subscription's stream ends it with."""
    return mask(GraphQLError(str(exc), original_error=exc))


class MaskUnexpectedErrors(MaskErrors):
    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    # Not a hook here: see the module's docstring. Restoring the base class's attribute
    # is how Strawberry sees that an extension has no hook for a stage.
    on_stream_result = SchemaExtension.on_stream_result  # type: ignore[assignment]

    def _process_result(self, result: object) -> None:
        # The base class's isinstance against a runtime-checkable Protocol is slow and
        # nearly every result has no error at all.
        if getattr(result, "errors", None):
            super()._process_result(result)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return mask(error)
