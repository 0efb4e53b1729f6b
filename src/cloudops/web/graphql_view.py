"""Strawberry's ASGI view, with our context, protocols and limits."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
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
from cloudops.graphql.live_outlet import LiveFeedHandler
from cloudops.graphql.schema import build_schema
from cloudops.graphql.shared_events import next_message_prefix, shared_json
from cloudops.runtime import Runtime


class CloudOpsGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = LiveFeedHandler

    def __init__(
        self,
        runtime: Runtime,
        authenticator: Authenticator,
        *,
        graphiql_page: Path | None = None,
    ) -> None:
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
        self.graphiql_page = graphiql_page

    async def render_graphql_ide(self, request: Request) -> Response:
        """Browsers asking for /graphql get our own GraphiQL build (bundled by the front end,
        so it works offline), not Strawberry's page, which loads its scripts from a CDN.
        Strawberry's page stays the fallback while the front end is not built."""
        page = self.graphiql_page
        if page is not None and page.is_file():
            return HTMLResponse(
                page.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"}
            )
        return await super().render_graphql_ide(request)

    def parse_json(self, data: str | bytes) -> Any:
        """Strawberry answers 500 for a body that is valid JSON but not an object, or not
        UTF-8; both are the client's mistake and get a 400 with the reason."""
        try:
            value = json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise HTTPException(400, "Unable to parse request body as UTF-8 JSON") from exc
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object (or a batch list)")
        return value

    def encode_json(self, data: object) -> str | bytes:
        """A subscription event's ``next`` message: the shared result's JSON, encoded once
        for all subscribers (graphql/shared_events.py), spliced after this one's id."""
        if isinstance(data, dict) and data.get("type") == "next":
            payload = data.get("payload")
            if isinstance(payload, dict) and len(payload) == 1 and "data" in payload:
                shared = shared_json(payload["data"])
                if shared is not None:
                    return f'{next_message_prefix(data["id"])}{{"data":{shared}}}}}'
        return super().encode_json(data)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context(
            runtime=self.runtime,
            viewer=self.authenticator.viewer_for(request),
            request=request,
            response=response,
        )
