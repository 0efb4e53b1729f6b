"""Where a project hears that one of its tasks ended: the notifier interface and its three
implementations.

The embedded default prints each notice to the log instead of sending it (a laptop has no
mail server, and a demo should not post to a real channel); production sends it to the
project's Teams incoming webhook over HTTPS and to its e-mail recipients over SMTP. The
destinations belong to the project (``teamsWebhookUrl``, ``emailRecipients``); a notifier
only knows how to reach one kind of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx

log = logging.getLogger(__name__)


class NotificationFailed(Exception):
    """A destination did not take the notice (refused, unreachable, timed out)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A task reached a final state; what its project's people need to know about it."""

    task_id: str
    task_type: str
    status: str
    entity_id: str
    attempt: int
    project_name: str
    environment_name: str | None
    error: str | None
    finished_at: datetime | None
    teams_webhook_url: str | None
    email_recipients: tuple[str, ...]

    @property
    def subject(self) -> str:
        where = self.project_name
        if self.environment_name:
            where += f"/{self.environment_name}"
        return f"[CloudOps] {self.task_type} {self.status} on {where}"

    @property
    def text(self) -> str:
        lines = [
            f"Task {self.task_id} ({self.task_type}) is {self.status}.",
            f"Entity: {self.entity_id}; attempt {self.attempt}.",
        ]
        if self.finished_at is not None:
            lines.append(f"Finished at {self.finished_at.isoformat()}.")
        if self.error:
            lines.append(f"Error: {self.error}")
        return "\n".join(lines)


class Notifier(Protocol):
    name: str

    def wants(self, notice: Notice) -> bool:
        """Whether the notice's project has a destination of this notifier's kind."""

    async def send(self, notice: Notice) -> None:
        """Deliver the notice, or raise NotificationFailed."""

    async def close(self) -> None:
        """Release connections; called once at shutdown."""


class LogNotifier:
    """The embedded default: one log line per notice, naming its destinations; nothing sent."""

    name = "log"

    def wants(self, notice: Notice) -> bool:
        return notice.teams_webhook_url is not None or bool(notice.email_recipients)

    async def send(self, notice: Notice) -> None:
        destinations = ["teams webhook"] if notice.teams_webhook_url else []
        destinations += list(notice.email_recipients)
        log.info(
            "notification (printed, not sent: CLOUDOPS_NOTIFICATIONS=log): %s",
            notice.subject,
            extra={
                "action": "notification_logged",
                "task_id": notice.task_id,
                "status": notice.status,
                "to": ", ".join(destinations),
                "text": notice.text,
            },
        )

    async def close(self) -> None:
        return None


class TeamsWebhookNotifier:
    """Posts an Adaptive Card to the project's Teams incoming webhook (the Workflows
    "post to a channel when a webhook request is received" URL, or a legacy connector)."""

    name = "teams"

    def __init__(self, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    def wants(self, notice: Notice) -> bool:
        return notice.teams_webhook_url is not None

    async def send(self, notice: Notice) -> None:
        if notice.teams_webhook_url is None:
            return
        try:
            response = await self._client.post(notice.teams_webhook_url, json=_card(notice))
        except httpx.HTTPError as exc:
            raise NotificationFailed(f"teams webhook unreachable: {exc!r}") from exc
        if not response.is_success:
            raise NotificationFailed(
                f"teams webhook answered HTTP {response.status_code}: {response.text[:200]}"
            )

    async def close(self) -> None:
        await self._client.aclose()


def _card(notice: Notice) -> dict[str, Any]:
    facts = [
        {"title": "Task", "value": notice.task_id},
        {"title": "Type", "value": notice.task_type},
        {"title": "Status", "value": notice.status},
        {"title": "Entity", "value": notice.entity_id},
        {"title": "Attempt", "value": str(notice.attempt)},
    ]
    if notice.error:
        facts.append({"title": "Error", "value": notice.error})
    return {
        "type": "message",
        "summary": notice.subject,
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": notice.subject,
                            "weight": "Bolder",
                            "wrap": True,
                        },
                        {"type": "FactSet", "facts": facts},
                    ],
                },
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """``smtp://[user[:password]@]host[:port]`` (STARTTLS when the server offers it) or
    ``smtps://…`` (TLS from the first byte, port 465 by default)."""

    hostname: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("must look like smtp://host:port or smtps://user:password@host")
        implicit_tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if implicit_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit_tls,
        )


class EmailNotifier:
    """Sends the notice as a plain-text e-mail to the project's recipients."""

    name = "email"

    def __init__(self, server: SmtpServer, sender: str, timeout: float = 10.0) -> None:
        self._server = server
        self._sender = sender
        self._timeout = timeout

    def wants(self, notice: Notice) -> bool:
        return bool(notice.email_recipients)

    async def send(self, notice: Notice) -> None:
        if not notice.email_recipients:
            return
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = ", ".join(notice.email_recipients)
        message["Subject"] = notice.subject
        message.set_content(notice.text)
        server = self._server
        try:
            await aiosmtplib.send(
                message,
                hostname=server.hostname,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.implicit_tls,
                start_tls=None if not server.implicit_tls else False,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise NotificationFailed(f"smtp {server.hostname}:{server.port}: {exc!r}") from exc

    async def close(self) -> None:
        return None
