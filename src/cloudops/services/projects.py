"""Projects and environments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloudops.db.engine import Database
from cloudops.db.models import DEFAULT_ORGANIZATION_ID, Environment, Project
from cloudops.db.types import utcnow
from cloudops.domain import EnvironmentType
from cloudops.services.inputs import CreateEnvironment, CreateProject
from cloudops.services.results import ErrorCode, Result, UserError
from cloudops.services.validation import (
    Checker,
    check_email_recipients,
    check_environment_type,
    check_webhook,
)


class ProjectService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_project(
        self, data: CreateProject, organization_id: str = DEFAULT_ORGANIZATION_ID
    ) -> Result[Project]:
        check = Checker()
        check.text("name", data.name, max_len=100)
        check.text("description", data.description, max_len=10_000, required=False)
        check_webhook(check, data.teams_webhook_url)
        check_email_recipients(check, data.email_recipients)
        if check.errors:
            return Result.refused(*check.errors)
        project = Project(
            organization_id=organization_id,
            name=data.name.strip(),
            description=data.description,
            teams_webhook_url=data.teams_webhook_url,
            email_recipients=list(data.email_recipients or []),
            created_at=utcnow(),
        )
        try:
            async with self.db.write() as session:
                clash = await session.scalar(
                    select(Project.id).where(
                        Project.organization_id == organization_id, Project.name == project.name
                    )
                )
                if clash is None:
                    session.add(project)
        except IntegrityError:
            clash = "concurrent"
        if clash is not None:
            return Result.refused(
                UserError(
                    ["input", "name"],
                    f"a project named {project.name!r} already exists",
                    ErrorCode.CONFLICT,
                )
            )
        return Result(project)

    async def create_environment(self, data: CreateEnvironment) -> Result[Environment]:
        check = Checker()
        check.text("name", data.name, max_len=100)
        check_environment_type(check, data.type)
        if not check.errors and data.type == EnvironmentType.SANDBOX:
            check.fail("type", "sandboxes are created with createSandbox, which sets their TTL")
        if check.errors:
            return Result.refused(*check.errors)
        env = Environment(
            project_id=data.project_id,
            name=data.name.strip(),
            type=data.type,
            expired=False,
            created_at=utcnow(),
        )
        return await add_environment(self.db, env)


async def add_environment(db: Database, env: Environment) -> Result[Environment]:
    try:
        async with db.write() as session:
            error = await environment_conflict(session, env)
            if error is None:
                session.add(env)
    except IntegrityError:
        error = UserError(
            ["input", "name"],
            f"an environment named {env.name!r} already exists",
            ErrorCode.CONFLICT,
        )
    return Result.refused(error) if error else Result(env)


async def environment_conflict(session: AsyncSession, env: Environment) -> UserError | None:
    if await session.get(Project, env.project_id) is None:
        return UserError(
            ["input", "projectId"], f"no project with id {env.project_id!r}", ErrorCode.NOT_FOUND
        )
    clash = await session.scalar(
        select(Environment.id).where(
            Environment.project_id == env.project_id, Environment.name == env.name
        )
    )
    if clash is not None:
        return UserError(
            ["input", "name"],
            f"an environment named {env.name!r} already exists in this project",
            ErrorCode.CONFLICT,
        )
    return None
