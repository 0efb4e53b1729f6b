"""The ASGI application. The runtime (database, bus, worker) lives in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from cloudops import __version__
from cloudops.auth import Authenticator
from cloudops.runtime import Runtime
from cloudops.settings import Settings
from cloudops.web.artifacts import download_artifact
from cloudops.web.graphql_view import CloudOpsGraphQL
from cloudops.web.limits import BodySizeLimit


async def healthz(request: Request) -> JSONResponse:
    """Liveness for load balancers: 200 when the database answers, 503 otherwise."""
    runtime: Runtime = request.app.state.runtime
    database = await runtime.db.ping()
    body = {
        "status": "ok" if database else "degraded",
        "version": __version__,
        "database": database,
        "bus": runtime.bus.name,
        "broadcast": runtime.hub.backend_name,
    }
    return JSONResponse(body, status_code=200 if database else 503)


def create_app(settings: Settings, *, run_worker: bool = True) -> Starlette:
    runtime = Runtime.build(settings, run_worker=run_worker)
    authenticator = Authenticator(settings)
    graphql = CloudOpsGraphQL(runtime, authenticator)
    limited_graphql = BodySizeLimit(graphql, settings.max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/graphql", limited_graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/artifacts/{artifact_id}", download_artifact),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.authenticator = authenticator
    return app
