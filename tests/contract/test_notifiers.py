"""Contract suite for the notifiers: each one reaches its own kind of destination, says
which notices it wants, and turns a destination that is down into NotificationFailed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from cloudops.integrations.notifier import (
    EmailNotifier,
    LogNotifier,
    Notice,
    NotificationFailed,
    Notifier,
    SmtpServer,
    TeamsWebhookNotifier,
)
from tests.notify_servers import SmtpSink, WebhookReceiver, closed_port, smtp_sink, webhook_receiver

NOTICE = Notice(
    task_id="t-1",
    task_type="DEPLOYMENT",
    status="FAILED",
    entity_id="env-1",
    attempt=3,
    project_name="shop",
    environment_name="prod",
    error="verify failed: health check timed out",
    finished_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    teams_webhook_url=None,
    email_recipients=(),
)


@dataclass
class Destination:
    """A notifier and a way to read what reached the destination it serves."""

    notifier: Notifier
    notice: Notice
    webhook: WebhookReceiver | None = None
    smtp: SmtpSink | None = None


@pytest.fixture(params=["log", "teams", "email"])
async def destination(request: pytest.FixtureRequest) -> AsyncIterator[Destination]:
    kind: str = request.param
    if kind == "log":
        yield Destination(LogNotifier(), replace(NOTICE, email_recipients=("ops@example.com",)))
    elif kind == "teams":
        async with webhook_receiver() as receiver:
            notifier = TeamsWebhookNotifier(timeout=5)
            try:
                yield Destination(
                    notifier, replace(NOTICE, teams_webhook_url=receiver.url), webhook=receiver
                )
            finally:
                await notifier.close()
    else:
        async with smtp_sink() as sink:
            notifier = EmailNotifier(SmtpServer.parse(sink.url), "cloudops@example.com", 5)
            yield Destination(
                notifier,
                replace(NOTICE, email_recipients=("ops@example.com", "dev@example.com")),
                smtp=sink,
            )


async def test_a_notice_reaches_its_destination(
    destination: Destination, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudops.integrations.notifier")
    notice = destination.notice
    assert destination.notifier.wants(notice)
    await destination.notifier.send(notice)
    if destination.webhook is not None:
        [post] = destination.webhook.posts
        assert post["summary"] == "[CloudOps] DEPLOYMENT FAILED on shop/prod"
        card = post["attachments"][0]
        assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
        facts = {f["title"]: f["value"] for f in card["content"]["body"][1]["facts"]}
        assert facts["Task"] == "t-1" and facts["Status"] == "FAILED"
        assert facts["Error"] == "verify failed: health check timed out"
    elif destination.smtp is not None:
        [(recipients, message)] = destination.smtp.messages
        assert recipients == ["ops@example.com", "dev@example.com"]
        assert message["Subject"] == "[CloudOps] DEPLOYMENT FAILED on shop/prod"
        assert message["From"] == "cloudops@example.com"
        body = message.get_payload(decode=True)
        assert isinstance(body, bytes) and b"Task t-1 (DEPLOYMENT) is FAILED." in body
    else:
        [record] = [r for r in caplog.records if r.getMessage().startswith("notification")]
        assert "[CloudOps] DEPLOYMENT FAILED on shop/prod" in record.getMessage()
        assert record.to == "ops@example.com"  # type: ignore[attr-defined]


async def test_a_notice_without_its_kind_of_destination_is_not_wanted(
    destination: Destination,
) -> None:
    assert not destination.notifier.wants(NOTICE), "a project with no destination at all"
    only_teams = replace(NOTICE, teams_webhook_url="https://example.invalid/hook")
    only_mail = replace(NOTICE, email_recipients=("ops@example.com",))
    wanted = (destination.notifier.wants(only_teams), destination.notifier.wants(only_mail))
    expected = {"log": (True, True), "teams": (True, False), "email": (False, True)}
    assert wanted == expected[destination.notifier.name]


@pytest.mark.parametrize("kind", ["teams", "email"])
async def test_a_destination_that_is_down_raises_notification_failed(kind: str) -> None:
    port = closed_port()
    notifier: Notifier
    if kind == "teams":
        notifier = TeamsWebhookNotifier(timeout=5)
        notice = replace(NOTICE, teams_webhook_url=f"http://127.0.0.1:{port}/hook")
    else:
        notifier = EmailNotifier(SmtpServer.parse(f"smtp://127.0.0.1:{port}"), "c@example.com", 5)
        notice = replace(NOTICE, email_recipients=("ops@example.com",))
    try:
        with pytest.raises(NotificationFailed):
            await notifier.send(notice)
    finally:
        await notifier.close()


async def test_a_webhook_that_answers_an_error_raises_notification_failed() -> None:
    async with webhook_receiver() as receiver:
        receiver.status = 500
        notifier = TeamsWebhookNotifier(timeout=5)
        try:
            with pytest.raises(NotificationFailed, match="HTTP 500"):
                await notifier.send(replace(NOTICE, teams_webhook_url=receiver.url))
        finally:
            await notifier.close()
    assert len(receiver.posts) == 1


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, None, None, False)),
        ("smtp://u%40x:p%3Aw@mail.example.com:587", ("mail.example.com", 587, "u@x", "p:w", False)),
        ("smtps://mail.example.com", ("mail.example.com", 465, None, None, True)),
    ],
)
def test_smtp_urls(url: str, parsed: tuple[object, ...]) -> None:
    server = SmtpServer.parse(url)
    assert (
        server.hostname,
        server.port,
        server.username,
        server.password,
        server.implicit_tls,
    ) == parsed


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "mail.example.com:25"])
def test_bad_smtp_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="smtp://host:port"):
        SmtpServer.parse(url)
