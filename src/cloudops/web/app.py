"""The ASGI application. The runtime (database, bus, worker) lives in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cloudops import __version__
from cloudops.db.models import Task
from cloudops.domain import TaskStatus
from cloudops.runtime import Runtime
from cloudops.settings import Settings


async def healthz(request: Request) -> JSONResponse:
    """Liveness for load balancers: 200 when the database answers, 503 otherwise."""
    runtime: Runtime = request.app.state.runtime
    database = await runtime.db.ping()
    counts: dict[str, int] = {}
    if database:
        async with runtime.db.read() as session:
            rows = await session.execute(
                select(Task.status, func.count())
                .where(Task.status.in_([TaskStatus.QUEUED.value, TaskStatus.RUNNING.value]))
                .group_by(Task.status)
            )
            counts = {status: count for status, count in rows.tuples()}
    body = {
        "status": "ok" if database else "degraded",
        "version": __version__,
        "database": database,
        "bus": runtime.bus.name,
        "broadcast": runtime.hub.backend_name,
        "queuedTasks": counts.get(TaskStatus.QUEUED.value, 0),
        "runningTasks": counts.get(TaskStatus.RUNNING.value, 0),
    }
    return JSONResponse(body, status_code=200 if database else 503)


def create_app(settings: Settings, *, run_worker: bool = True) -> Starlette:
    runtime = Runtime.build(settings, run_worker=run_worker)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(routes=[Route("/healthz", healthz)], lifespan=lifespan)
    app.state.runtime = runtime
    return app
