"""A project hears when its tasks end: through its Teams webhook and e-mail recipients in
deliver mode, in the log by default, and a destination that is down costs nothing else."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import update

from cloudops.db.models import Environment, Project
from cloudops.integrations.notifier import TeamsWebhookNotifier
from cloudops.runtime import Runtime
from cloudops.services import inputs
from cloudops.worker.notices import TaskNotices
from tests.conftest import wait_final
from tests.integration.test_worker import fail
from tests.notify_servers import (
    WebhookReceiver,
    closed_port,
    silent_server,
    smtp_sink,
    webhook_receiver,
)


async def project_with_destinations(
    runtime: Runtime, webhook_url: str | None, recipients: list[str]
) -> Environment:
    project = await runtime.projects.create_project(
        inputs.CreateProject(name="shop", email_recipients=recipients)
    )
    assert project.value is not None, project.user_errors
    if webhook_url is not None:
        # The API takes https:// webhooks only; the receiver here is plain HTTP on loopback.
        async with runtime.db.write() as session:
            await session.execute(
                update(Project)
                .where(Project.id == project.value.id)
                .values(teams_webhook_url=webhook_url)
            )
    env = await runtime.projects.create_environment(
        inputs.CreateEnvironment(project.value.id, "prod", "PROD")
    )
    assert env.value is not None, env.user_errors
    return env.value


async def run_to_the_end(runtime: Runtime, *results: Any) -> None:
    """Until the tasks are final and their notices sent: a stop lets the worker finish
    handing them over, then gives the notices under way the shutdown grace."""
    await wait_final(runtime, [r.value.id for r in results])
    await runtime.stop()


async def test_deliver_mode_posts_to_teams_and_mails_the_recipients(runtime_factory: Any) -> None:
    async with webhook_receiver() as receiver, smtp_sink() as sink:
        runtime: Runtime = await runtime_factory(notifications="deliver", smtp_url=sink.url)
        env = await project_with_destinations(runtime, receiver.url, ["ops@example.com"])
        good = await runtime.tasks.deploy(inputs.Deploy(env.id, "1.0"))
        bad = await runtime.tasks.deploy(inputs.Deploy(env.id, "bad", options=fail("verify")))
        elsewhere = await runtime.tasks.restart_workload(inputs.RestartWorkload("shop", "web"))
        await run_to_the_end(runtime, good, bad, elsewhere)

    cards = {
        post["attachments"][0]["content"]["body"][1]["facts"][0]["value"]: post
        for post in receiver.posts
    }
    assert set(cards) == {good.value.id, bad.value.id}, "a task without a project is not announced"
    assert cards[good.value.id]["summary"] == "[CloudOps] DEPLOYMENT COMPLETED on shop/prod"
    assert cards[bad.value.id]["summary"] == "[CloudOps] DEPLOYMENT FAILED on shop/prod"
    mails = {message["Subject"]: recipients for recipients, message in sink.messages}
    assert mails == {
        "[CloudOps] DEPLOYMENT COMPLETED on shop/prod": ["ops@example.com"],
        "[CloudOps] DEPLOYMENT FAILED on shop/prod": ["ops@example.com"],
    }


async def test_destinations_that_are_down_cost_a_warning_and_nothing_else(
    runtime_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cloudops.worker.notices")
    down = closed_port()
    runtime: Runtime = await runtime_factory(
        notifications="deliver", smtp_url=f"smtp://127.0.0.1:{down}"
    )
    env = await project_with_destinations(
        runtime, f"http://127.0.0.1:{down}/hook", ["ops@example.com"]
    )
    first = await runtime.tasks.deploy(inputs.Deploy(env.id, "1.0"))
    second = await runtime.tasks.deploy(inputs.Deploy(env.id, "1.1"))
    [done, also_done] = await wait_final(runtime, [first.value.id, second.value.id])
    assert (done.status, also_done.status) == ("COMPLETED", "COMPLETED")
    await run_to_the_end(runtime, first, second)
    failures = [r for r in caplog.records if getattr(r, "action", "") == "notification_failed"]
    assert {(r.task_id, r.notifier) for r in failures} == {  # type: ignore[attr-defined]
        (task_id, notifier)
        for task_id in (first.value.id, second.value.id)
        for notifier in ("teams", "email")
    }


async def one_deployment(runtime_factory: Any, **settings: Any) -> tuple[WebhookReceiver, str]:
    """One deployment of a project with a Teams webhook and a recipient, to its end."""
    async with webhook_receiver() as receiver:
        runtime: Runtime = await runtime_factory(**settings)
        env = await project_with_destinations(runtime, receiver.url, ["ops@example.com"])
        task = await runtime.tasks.deploy(inputs.Deploy(env.id, "1.0"))
        await run_to_the_end(runtime, task)
    return receiver, task.value.id


async def test_the_default_prints_notices_instead_of_sending_them(
    runtime_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudops.integrations.notifier")
    receiver, task_id = await one_deployment(runtime_factory)
    assert receiver.posts == []
    [printed] = [r for r in caplog.records if getattr(r, "action", "") == "notification_logged"]
    assert printed.task_id == task_id  # type: ignore[attr-defined]
    assert printed.to == "teams webhook, ops@example.com"  # type: ignore[attr-defined]


async def test_off_announces_nothing(
    runtime_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudops")
    receiver, _ = await one_deployment(runtime_factory, notifications="off")
    assert receiver.posts == []
    assert not [r for r in caplog.records if getattr(r, "action", "").startswith("notification")]


async def test_a_destination_that_never_answers_is_given_up_after_the_timeout(
    runtime_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cloudops.worker.notices")
    async with silent_server() as url:
        runtime: Runtime = await runtime_factory(notifications="off")
        env = await project_with_destinations(runtime, url, [])
        task = await runtime.tasks.deploy(inputs.Deploy(env.id, "1.0"))
        await wait_final(runtime, [task.value.id])
        notices = TaskNotices(runtime.db, [TeamsWebhookNotifier(timeout=30)], timeout=0.3)
        notices.task_ended(task.value.id, env.project_id)
        await notices.close(grace=10)  # returns once the notice has been given up
    [gave_up] = [r for r in caplog.records if getattr(r, "action", "") == "notification_failed"]
    assert gave_up.getMessage() == "notification not delivered: no answer within 0.3 s"
