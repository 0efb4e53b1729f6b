"""Parsing of operation texts, cached (validation is cached by Strawberry's ValidationCache).

Strawberry's ParserCache lets a syntax error escape from its hook, outside the place where
Strawberry turns it into the protocol's answer: over WebSocket the connection then hangs
instead of closing with 4400. Here a text that does not parse is left to Strawberry's own
parse, which reports it as usual; only documents that parse are cached.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import ParserCache


class CachedParse(ParserCache):
    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except GraphQLError:
            context.graphql_document = None  # parsed again, and reported, by Strawberry
        yield
