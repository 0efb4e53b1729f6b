"""Unexpected exceptions reach the client as "Unexpected error (id …)"; the id is in the log.

Errors raised on purpose (GraphQL validation, permission, limits, bad arguments) are
GraphQLErrors without an unexpected original exception, and pass unmasked.
"""

from __future__ import annotations

import logging
import uuid

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

log = logging.getLogger(__name__)


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError | PermissionError)


class MaskUnexpectedErrors(MaskErrors):
    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    def _process_result(self, result: object) -> None:
        # Every subscription event passes here; the base class's isinstance against a
        # runtime-checkable Protocol cost more than the rest of a delivery's bookkeeping.
        if getattr(result, "errors", None):
            super()._process_result(result)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "unexpected error in a GraphQL operation",
            exc_info=error.original_error,
            extra={"action": "graphql_error", "error_id": error_id, "path": error.path},
        )
        masked = super().anonymise_error(error)
        masked.message = f"Unexpected error (id {error_id}); the server log has the details."
        masked.extensions = {"code": "INTERNAL", "errorId": error_id}
        return masked
