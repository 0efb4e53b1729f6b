"""GET /artifacts/{id}: the bytes of an artifact, with its checksum in the headers."""

from __future__ import annotations

from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudops.auth import Authenticator
from cloudops.db.models import Artifact, Task
from cloudops.runtime import Runtime


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def download_artifact(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    authenticator: Authenticator = request.app.state.authenticator
    viewer = authenticator.viewer_for(request)
    if viewer is None:
        return _error(401, "sign in to download artifacts")
    artifact_id = request.path_params["artifact_id"]
    async with runtime.db.read() as session:
        artifact = await session.get(Artifact, artifact_id)
        task = await session.get(Task, artifact.task_id) if artifact else None
    if artifact is None or task is None or task.organization_id != viewer.organization_id:
        return _error(404, f"no artifact with id {artifact_id!r}")
    try:
        data = await runtime.services.artifacts.get(artifact.path)
    except FileNotFoundError:
        return _error(410, f"the bytes of artifact {artifact_id} are gone from storage")
    name = PurePosixPath(artifact.path).name
    media = "application/json" if name.endswith(".json") else "application/octet-stream"
    return Response(
        data,
        media_type=media,
        headers={
            "X-Checksum-SHA256": artifact.sha256,
            "ETag": f'"{artifact.sha256}"',
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, max-age=31536000, immutable",
        },
    )
