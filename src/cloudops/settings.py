"""One validated settings object, read from ``CLOUDOPS_*`` variables and ``.env``.

A bad value must stop the start with one line naming the variable, so that an operator
never has to read a pydantic traceback to find a typo.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusKind(StrEnum):
    MEMORY = "memory"
    POSTGRES = "postgres"


class AuthMode(StrEnum):
    DEMO = "demo"
    TOKEN = "token"
    OIDC = "oidc"


class NotificationMode(StrEnum):
    LOG = "log"
    DELIVER = "deliver"
    OFF = "off"


class SettingsError(Exception):
    """A setting has a bad value; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOUDOPS_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite+aiosqlite:///data/cloudops.db"
    broadcast_url: str = "memory://"
    bus: BusKind = BusKind.MEMORY
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 5056
    worker_concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    step_delay: Annotated[float, Field(ge=0, le=3600)] = 1.0
    auth_mode: AuthMode = AuthMode.DEMO
    #: Base of the exponential retry backoff in seconds (x2 per attempt, with jitter).
    retry_base_delay: Annotated[float, Field(ge=0, le=3600)] = 1.0
    #: Seconds a running step may take to finish after SIGTERM before it is interrupted.
    shutdown_grace: Annotated[float, Field(ge=0, le=3600)] = 10.0
    #: How often the sandbox reaper looks for expired sandboxes, in seconds.
    reaper_interval: Annotated[float, Field(gt=0, le=86400)] = 5.0
    log_level: str = "INFO"
    #: PostgreSQL bus: how long a worker's claim on an entity lasts without a heartbeat
    #: (renewed every third of it), and how often idle workers look for work anyway.
    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    bus_poll_interval: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: Seconds between the hub's heartbeats through the broadcast backend; a backend that
    #: misses three is treated as lost (subscribers are told, the hub reconnects).
    broadcast_heartbeat: Annotated[float, Field(gt=0, le=60)] = 1.0
    #: Database connection pool size per process (PostgreSQL).
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    #: Accept the legacy ``graphql-ws`` WebSocket subprotocol besides graphql-transport-ws.
    ws_legacy_protocol: bool = False
    #: Seconds a WebSocket client has to send connection_init before it is closed (4408).
    ws_init_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    ws_max_subscriptions: Annotated[int, Field(ge=1, le=1000)] = 50
    #: permessage-deflate on WebSockets. Off by default: compressing every event for every
    #: subscriber was a fifth of the fan-out's CPU, for messages of a few hundred bytes.
    ws_compression: bool = False
    #: Origins allowed to open a WebSocket from a browser (comma separated); same-origin
    #: pages are always allowed.
    allowed_origins: str = ""
    #: Largest GraphQL request body accepted, in bytes.
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    #: Events a subscriber may fall behind before its stream is ended (it can resume).
    subscriber_buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    #: Query hardening.
    max_query_depth: Annotated[int, Field(ge=2, le=100)] = 12
    max_aliases: Annotated[int, Field(ge=1, le=1000)] = 30
    max_tokens: Annotated[int, Field(ge=100, le=100_000)] = 5000
    #: When a task of a project with a Teams webhook or e-mail recipients ends: ``log``
    #: prints the notice (the embedded default), ``deliver`` sends it, ``off`` neither.
    notifications: NotificationMode = NotificationMode.LOG
    #: SMTP server for e-mail notices in deliver mode: smtp://[user[:password]@]host[:port]
    #: (STARTTLS when offered) or smtps://... (TLS, port 465 by default).
    smtp_url: str | None = None
    smtp_from: str = "cloudops@localhost"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("broadcast_url")
    @classmethod
    def _known_broadcast(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://", "postgres://")):
            raise ValueError("must start with memory://, redis:// or postgres://")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_server(cls, value: str | None) -> str | None:
        if value is not None:
            from cloudops.integrations.notifier import SmtpServer

            SmtpServer.parse(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _bus_needs_postgres(self) -> Settings:
        if self.bus is BusKind.POSTGRES and self.is_sqlite:
            raise ValueError(
                "CLOUDOPS_BUS=postgres needs CLOUDOPS_DATABASE_URL=postgresql+asyncpg://..."
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a rule across settings: the message names them
            raise SettingsError(str(first["msg"]).removeprefix("Value error, ")) from None
        name = "CLOUDOPS_" + "_".join(str(part) for part in first["loc"]).upper()
        raise SettingsError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
