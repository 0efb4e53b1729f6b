"""Operation documents: their limits (tokens, depth, aliases), and their parse and
validation cached by text.

One extension rather than Strawberry's four (MaxTokensLimiter, ParserCache,
AddValidationRules, ValidationCache): Strawberry consults every extension on every
subscription event, and at a thousand subscribers that bookkeeping was a fifth of the
server's CPU. Validating even ``{ __typename }`` cost about a millisecond, and clients
send the same few documents again and again.

A text that does not parse is left to Strawberry's own parse, which reports it the
protocol's way (Strawberry's ParserCache let the error escape from its hook: over
WebSocket the connection then hung instead of closing with 4400).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

from graphql import ASTValidationRule, GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

#: Distinct texts kept; bounded, so a stream of unique texts cannot grow memory.
CACHE_SIZE = 512

_parse = functools.lru_cache(maxsize=CACHE_SIZE)(parse)
_validate = functools.lru_cache(maxsize=CACHE_SIZE)(validate_document)


class DocumentLimits(SchemaExtension):
    def __init__(self, *, max_tokens: int, rules: Sequence[type[ASTValidationRule]]) -> None:
        # The rules are built once by the caller: a rule class made per request would
        # change the validation cache's key every time.
        self.max_tokens = max_tokens
        self.rules = tuple(rules)

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = context.validation_rules + self.rules
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = _parse(context.query, **context.parse_options)
        except GraphQLError:
            context.graphql_document = None  # parsed again, and reported, by Strawberry
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        context.pre_execution_errors = _validate(
            context.schema._schema, context.graphql_document, context.validation_rules
        )
        yield
