"""Telling a project that one of its tasks ended, after the fact and off the worker's path.

The worker hands over the id of a task it has just finished (COMPLETED, dead-lettered
FAILED, or CANCELLED while running) and goes on; the notice is built from the stored task
and project and sent in a task of its own. A destination that is down costs a log line,
never a task's state or a worker's slot. A task the API cancelled while it was still
QUEUED is not announced: whoever cancelled it knows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cloudops.db.engine import Database
from cloudops.db.models import Environment, Project, Task
from cloudops.domain import TaskStatus
from cloudops.integrations.notifier import (
    EmailNotifier,
    LogNotifier,
    Notice,
    NotificationFailed,
    Notifier,
    SmtpServer,
    TeamsWebhookNotifier,
)
from cloudops.settings import NotificationMode, Settings

log = logging.getLogger(__name__)


def build_notifiers(settings: Settings) -> list[Notifier]:
    """``log`` prints every notice; ``deliver`` posts to Teams and, with an SMTP server
    configured, e-mails; ``off``: none."""
    if settings.notifications is NotificationMode.OFF:
        return []
    if settings.notifications is NotificationMode.LOG:
        return [LogNotifier()]
    notifiers: list[Notifier] = [TeamsWebhookNotifier()]
    if settings.smtp_url is not None:
        notifiers.append(EmailNotifier(SmtpServer.parse(settings.smtp_url), settings.smtp_from))
    else:
        log.warning(
            "CLOUDOPS_SMTP_URL is not set: e-mail notifications are not sent",
            extra={"action": "notifications_without_smtp"},
        )
    return notifiers


@dataclass(frozen=True, slots=True)
class _Destinations:
    project_name: str
    teams_webhook_url: str | None
    email_recipients: tuple[str, ...]


#: How long a project's destinations are remembered: most projects have none, and their
#: tasks then cost no read at all; a changed destination is used within this time.
DESTINATIONS_TTL = 60.0


class TaskNotices:
    def __init__(self, db: Database, notifiers: Sequence[Notifier], timeout: float = 30.0) -> None:
        self._db = db
        self._notifiers = list(notifiers)
        self._timeout = timeout
        self._sending: set[asyncio.Task[None]] = set()
        self._projects: dict[str, tuple[float, _Destinations | None]] = {}

    def task_ended(self, task_id: str, project_id: str) -> None:
        """Announce the task's final state to its project, in the background."""
        if not self._notifiers:
            return
        sending = asyncio.create_task(self._announce(task_id, project_id), name=f"notify-{task_id}")
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def close(self, grace: float) -> None:
        """Give notices under way ``grace`` seconds, then drop them and close the notifiers."""
        if self._sending:
            _, late = await asyncio.wait(set(self._sending), timeout=grace)
            for sending in late:
                sending.cancel()
            if late:
                await asyncio.wait(late)
        for notifier in self._notifiers:
            await notifier.close()

    async def _announce(self, task_id: str, project_id: str) -> None:
        try:
            notice = await self._notice(task_id, project_id)
        except Exception:
            log.warning(
                "could not read the task to announce it",
                exc_info=True,
                extra={"action": "notification_failed", "task_id": task_id},
            )
            return
        if notice is None:
            return
        for notifier in self._notifiers:
            if not notifier.wants(notice):
                continue
            try:
                async with asyncio.timeout(self._timeout):
                    await notifier.send(notice)
            except (NotificationFailed, TimeoutError) as exc:
                log.warning(
                    "notification not delivered: %s",
                    str(exc) or f"no answer within {self._timeout:g} s",
                    extra={
                        "action": "notification_failed",
                        "task_id": task_id,
                        "notifier": notifier.name,
                    },
                )
            except Exception:
                log.exception(
                    "notifier failed",
                    extra={
                        "action": "notification_failed",
                        "task_id": task_id,
                        "notifier": notifier.name,
                    },
                )

    async def _destinations(self, project_id: str) -> _Destinations | None:
        now = time.monotonic()
        known = self._projects.get(project_id)
        if known is not None and now - known[0] < DESTINATIONS_TTL:
            return known[1]
        async with self._db.read() as session:
            project = await session.get(Project, project_id)
        found = None
        if project is not None and (project.teams_webhook_url or project.email_recipients):
            found = _Destinations(
                project.name, project.teams_webhook_url, tuple(project.email_recipients or ())
            )
        if len(self._projects) >= 10_000:
            self._projects.clear()
        self._projects[project_id] = (now, found)
        return found

    async def _notice(self, task_id: str, project_id: str) -> Notice | None:
        """The notice for a finished task of a project with somewhere to send it; None
        for anything else (no destination, not final)."""
        destinations = await self._destinations(project_id)
        if destinations is None:
            return None
        async with self._db.read() as session:
            task = await session.get(Task, task_id)
            if task is None or not TaskStatus(task.status).is_final:
                return None
            environment = (
                await session.get(Environment, task.environment_id)
                if task.environment_id is not None
                else None
            )
        return Notice(
            task_id=task.id,
            task_type=task.type,
            status=task.status,
            entity_id=task.entity_id,
            attempt=task.attempt,
            project_name=destinations.project_name,
            environment_name=environment.name if environment is not None else None,
            error=task.error,
            finished_at=task.finished_at,
            teams_webhook_url=destinations.teams_webhook_url,
            email_recipients=destinations.email_recipients,
        )
