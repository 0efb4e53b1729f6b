"""Strawberry's ASGI view, with our context, protocols and limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)

from cloudops.auth import Authenticator
from cloudops.graphql.context import Context
from cloudops.graphql.schema import build_schema
from cloudops.runtime import Runtime


class CloudOpsGraphQL(GraphQL[Context, None]):
    def __init__(self, runtime: Runtime, authenticator: Authenticator) -> None:
        settings = runtime.settings
        protocols = [GRAPHQL_TRANSPORT_WS_PROTOCOL]
        if settings.ws_legacy_protocol:
            protocols.append(GRAPHQL_WS_PROTOCOL)
        protocols += [GRAPHQL_SSE_PROTOCOL, MULTIPART_SUBSCRIPTION_PROTOCOL]
        origins = [o.strip() for o in settings.allowed_origins.split(",") if o.strip()]
        super().__init__(
            build_schema(settings),
            subscription_protocols=protocols,
            connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout),
            max_subscriptions_per_connection=settings.ws_max_subscriptions,
            allowed_origins=origins,
            keep_alive=True,
            keep_alive_interval=15,
        )
        self.runtime = runtime
        self.authenticator = authenticator

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context(
            runtime=self.runtime,
            viewer=self.authenticator.viewer_for(request),
            request=request,
            response=response,
        )
