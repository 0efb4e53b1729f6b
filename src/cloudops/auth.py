"""Who is asking. The embedded default has one demo admin; token and OIDC modes plug in here."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from cloudops.db.models import DEFAULT_ORGANIZATION_ID
from cloudops.domain import Role
from cloudops.settings import AuthMode, Settings


@dataclass(frozen=True, slots=True)
class Viewer:
    id: str
    name: str
    role: Role
    organization_id: str = DEFAULT_ORGANIZATION_ID


DEMO_VIEWER = Viewer(id="demo", name="Demo admin", role=Role.ADMIN)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        if settings.auth_mode is not AuthMode.DEMO:
            raise NotImplementedError(
                f"CLOUDOPS_AUTH_MODE={settings.auth_mode.value} is not available yet; use demo"
            )
        self.mode = settings.auth_mode

    def viewer_for(self, connection: HTTPConnection) -> Viewer | None:
        """The viewer of an HTTP request or WebSocket; None means anonymous."""
        return DEMO_VIEWER
