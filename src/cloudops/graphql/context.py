"""The per-request context: the runtime, the viewer, DataLoaders, request headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from cloudops.auth import Viewer
from cloudops.graphql.loaders import Loaders
from cloudops.runtime import Runtime


@dataclass
class Context:
    runtime: Runtime
    viewer: Viewer | None
    request: HTTPConnection
    response: Any = None
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.runtime.db)

    @property
    def idempotency_key_header(self) -> str | None:
        return self.request.headers.get("idempotency-key")
