"""The ASGI application. The runtime (database, bus, worker) lives in the app's lifespan."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from cloudops import __version__
from cloudops.auth import Authenticator
from cloudops.runtime import Runtime
from cloudops.settings import Settings
from cloudops.web.artifacts import download_artifact
from cloudops.web.graphql_view import CloudOpsGraphQL
from cloudops.web.limits import BodySizeLimit


def frontend_dist() -> Path:
    """The built dashboard: ``CLOUDOPS_FRONTEND_DIST``, or ``frontend/dist`` of this checkout."""
    configured = os.environ.get("CLOUDOPS_FRONTEND_DIST")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "frontend" / "dist"


NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CloudOps</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto">
<h1>CloudOps control plane</h1>
<p>The API is up, but the dashboard has not been built yet.</p>
<p>Build it with <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>
(or start the server with <code>./scripts/serve</code>, which builds it), then reload.</p>
<p>The API is at <a href="/graphql">/graphql</a>; health at <a href="/healthz">/healthz</a>.</p>
</body></html>
"""


class SinglePageFiles(StaticFiles):
    """Static files with the single-page-app fallback: a path that names no file and has no
    extension (a client route such as ``/tasks/<id>``) gets ``index.html``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or "." in PurePosixPath(path).name:
                raise
            response = await super().get_response("index.html", scope)
        # Hashed bundles never change; the pages that name them must always be revalidated.
        immutable = path.startswith("assets/") and response.status_code == 200
        response.headers["Cache-Control"] = (
            "public, max-age=31536000, immutable" if immutable else "no-cache"
        )
        return response


class Frontend:
    """The dashboard at ``/``. Looked up on each request, so a build made while the server
    runs is served at once; without a build, ``/`` says how to make one."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self._files: SinglePageFiles | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (self.dist / "index.html").is_file():
            if self._files is None:
                self._files = SinglePageFiles(directory=self.dist, html=True)
            await self._files(scope, receive, send)
            return
        self._files = None
        if scope["type"] != "http":  # a WebSocket to anything but /graphql: refused
            await send({"type": "websocket.close", "code": 1008})
            return
        response: Response
        if scope["path"] == "/":
            response = HTMLResponse(NOT_BUILT)
        else:
            response = JSONResponse({"error": "not found"}, status_code=404)
        await response(scope, receive, send)


async def healthz(request: Request) -> JSONResponse:
    """Liveness for load balancers: 200 when the database answers, 503 otherwise. A
    broadcast backend that is down makes the status degraded but keeps the 200: every API
    process shares it, and without it they all still take mutations and answer queries
    (only live events pause), so taking them out of the balancer would help nobody."""
    runtime: Runtime = request.app.state.runtime
    checked = await runtime.dependencies()
    body = {
        "status": checked.status,
        "version": __version__,
        "database": checked.database,
        "bus": runtime.bus.name,
        "broadcast": runtime.hub.backend_name,
        "broadcast_connected": checked.broadcast_connected,
    }
    return JSONResponse(body, status_code=200 if checked.database else 503)


def create_app(
    settings: Settings, *, run_worker: bool = True, frontend: Path | None = None
) -> Starlette:
    """``frontend`` is the built dashboard (``frontend/dist`` by default): served at ``/``
    after the API routes, with its GraphiQL page answering browsers at ``/graphql``."""
    runtime = Runtime.build(settings, run_worker=run_worker)
    authenticator = Authenticator(settings)
    dist = frontend if frontend is not None else frontend_dist()
    graphql = CloudOpsGraphQL(runtime, authenticator, graphiql_page=dist / "graphiql.html")
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
            # Last: the dashboard (and its client routes) takes whatever the API did not.
            Mount("/", app=Frontend(dist)),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.authenticator = authenticator
    return app
