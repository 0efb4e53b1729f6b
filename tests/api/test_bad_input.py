"""Bad input over HTTP: every request below is answered with a clear error and writes nothing.

One server serves the whole module (its own event loop), so the long table stays fast; each
case counts the rows of every table before and after, so a case that wrote anything fails
on its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select, text

from cloudops.db.models import Artifact, Environment, Project, Task, TaskEvent
from tests.api.conftest import LiveServer, project_and_environment, start_server
from tests.conftest import wait_final

pytestmark = pytest.mark.asyncio(loop_scope="module")

UNKNOWN_ID = "00000000-0000-4000-8000-00000000beef"
USED_KEY = "setup-deploy-key"

PAYLOAD_ENTITY = {
    "createProject": "project",
    "createEnvironment": "environment",
    "deploy": "task",
    "backupDatabase": "task",
    "restoreDatabase": "task",
    "restartWorkload": "task",
    "createSandbox": "task",
}
INPUT_TYPE = {
    "createProject": "CreateProjectInput",
    "createEnvironment": "CreateEnvironmentInput",
    "deploy": "DeployInput",
    "backupDatabase": "BackupDatabaseInput",
    "restoreDatabase": "RestoreDatabaseInput",
    "restartWorkload": "RestartWorkloadInput",
    "createSandbox": "CreateSandboxInput",
}


@dataclass(frozen=True)
class Setup:
    """What exists before the bad requests: a project with an environment, and artifacts."""

    project_id: str
    env_id: str
    plan_artifact_id: str
    backup_artifact_id: str

    def fill(self, value: Any) -> Any:
        """Replace @project, @env, @plan and @backup placeholders inside an input."""
        names = {
            "@project": self.project_id,
            "@env": self.env_id,
            "@plan": self.plan_artifact_id,
            "@backup": self.backup_artifact_id,
        }
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


@dataclass(frozen=True)
class Shared:
    live: LiveServer
    setup: Setup


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    live = await start_server(tmp_path_factory.mktemp("bad-input"))
    try:
        project_id, env_id = await project_and_environment(live)
        deployed = await live.execute(
            """mutation($env: ID!, $key: String) {
                 deploy(input: {environmentId: $env, version: "1.0", idempotencyKey: $key})
                 { task { id } } }""",
            {"env": env_id, "key": USED_KEY},
        )
        backed_up = await live.execute(
            """mutation { backupDatabase(input: {engine: POSTGRES, instanceId: "orders-1"})
                 { task { id } } }"""
        )
        task_ids = [deployed["data"]["deploy"]["task"]["id"]]
        task_ids.append(backed_up["data"]["backupDatabase"]["task"]["id"])
        await wait_final(live.runtime, task_ids)
        async with live.runtime.db.read() as session:
            rows = list((await session.execute(select(Artifact))).scalars())
        kinds = {row.kind: row.id for row in rows}
        yield Shared(live, Setup(project_id, env_id, kinds["deployment_plan"], kinds["db_backup"]))
    finally:
        await live.stop()


async def settle(live: LiveServer) -> None:
    """Wait until no task is queued or running, so that a request that wrongly created a
    task cannot write events into the counts of the next case."""
    async with live.runtime.db.read() as session:
        open_ids = list(
            (
                await session.execute(select(Task.id).where(Task.status.in_(["QUEUED", "RUNNING"])))
            ).scalars()
        )
    if open_ids:
        await wait_final(live.runtime, open_ids)


COUNTED = (Project, Environment, Task, TaskEvent, Artifact)


async def row_counts(live: LiveServer) -> dict[str, int]:
    """Rows of every table the API writes, and the number of tables, in one query."""
    columns = [
        select(func.count()).select_from(model).scalar_subquery().label(model.__tablename__)
        for model in COUNTED
    ]
    tables = text("(SELECT count(*) FROM sqlite_master WHERE type = 'table') AS tables")
    async with live.runtime.db.read() as session:
        row = (await session.execute(select(*columns, tables))).one()
    return {name: int(value) for name, value in row._mapping.items()}


async def counts_around(live: LiveServer, before: dict[str, int]) -> dict[str, int]:
    """The counts after a request; then let anything it wrongly started finish."""
    after = await row_counts(live)
    if after != before:
        await settle(live)
    return after


# -- rule violations: a userError naming the field, and nothing written ------------------


@dataclass(frozen=True)
class Refused:
    mutation: str
    input: dict[str, Any]
    errors: list[tuple[list[str], str]]


def deploy_input(**changes: Any) -> dict[str, Any]:
    return {"environmentId": "@env", "version": "2.0", **changes}


def backup_input(**changes: Any) -> dict[str, Any]:
    return {"engine": "POSTGRES", "instanceId": "orders-1", **changes}


def restart_input(**changes: Any) -> dict[str, Any]:
    return {"namespace": "shop", "name": "api", **changes}


def sandbox_input(**changes: Any) -> dict[str, Any]:
    return {"projectId": "@project", "name": "box-1", "ttlMinutes": 60, **changes}


def restore_input(**changes: Any) -> dict[str, Any]:
    return {"engine": "POSTGRES", "instanceId": "orders-1", "artifactId": "@backup", **changes}


INVALID = "INVALID_INPUT"
NOT_FOUND = "NOT_FOUND"
BIG_METADATA = {"blob": "x" * (16 * 1024)}
INJECTION = "'; DROP TABLE tasks;--"
SCRIPT = "<script>alert(1)</script>"

REFUSED: dict[str, Refused] = {
    # projects and environments: names 1-100 characters
    "project-empty-name": Refused("createProject", {"name": ""}, [(["input", "name"], INVALID)]),
    "project-blank-name": Refused("createProject", {"name": "   "}, [(["input", "name"], INVALID)]),
    "project-101-char-name": Refused(
        "createProject", {"name": "p" * 101}, [(["input", "name"], INVALID)]
    ),
    "project-duplicate-name": Refused(
        "createProject", {"name": "shop"}, [(["input", "name"], "CONFLICT")]
    ),
    "environment-empty-name": Refused(
        "createEnvironment",
        {"projectId": "@project", "name": "", "type": "DEV"},
        [(["input", "name"], INVALID)],
    ),
    "environment-101-char-name": Refused(
        "createEnvironment",
        {"projectId": "@project", "name": "e" * 101, "type": "DEV"},
        [(["input", "name"], INVALID)],
    ),
    "environment-unknown-project": Refused(
        "createEnvironment",
        {"projectId": UNKNOWN_ID, "name": "dev", "type": "DEV"},
        [(["input", "projectId"], NOT_FOUND)],
    ),
    "environment-duplicate-name": Refused(
        "createEnvironment",
        {"projectId": "@project", "name": "prod", "type": "STAGE"},
        [(["input", "name"], "CONFLICT")],
    ),
    # deploy: version 1-128 characters without whitespace
    "deploy-version-with-space": Refused(
        "deploy", deploy_input(version="1.0 beta"), [(["input", "version"], INVALID)]
    ),
    "deploy-version-with-tab": Refused(
        "deploy", deploy_input(version="1.0\t"), [(["input", "version"], INVALID)]
    ),
    "deploy-version-with-newline": Refused(
        "deploy", deploy_input(version="1.0\n2"), [(["input", "version"], INVALID)]
    ),
    "deploy-empty-version": Refused(
        "deploy", deploy_input(version=""), [(["input", "version"], INVALID)]
    ),
    "deploy-129-char-version": Refused(
        "deploy", deploy_input(version="v" * 129), [(["input", "version"], INVALID)]
    ),
    "deploy-unknown-environment": Refused(
        "deploy", deploy_input(environmentId=UNKNOWN_ID), [(["input", "environmentId"], NOT_FOUND)]
    ),
    "deploy-256-char-idempotency-key": Refused(
        "deploy", deploy_input(idempotencyKey="k" * 256), [(["input", "idempotencyKey"], INVALID)]
    ),
    "deploy-empty-idempotency-key": Refused(
        "deploy", deploy_input(idempotencyKey=""), [(["input", "idempotencyKey"], INVALID)]
    ),
    "deploy-idempotency-key-reused": Refused(
        "deploy",
        deploy_input(version="3.0", idempotencyKey=USED_KEY),
        [(["input", "idempotencyKey"], "IDEMPOTENCY_KEY_REUSED")],
    ),
    "deploy-metadata-over-16KiB": Refused(
        "deploy", deploy_input(metadata=BIG_METADATA), [(["input", "metadata"], INVALID)]
    ),
    "deploy-metadata-list": Refused(
        "deploy", deploy_input(metadata=[1, 2]), [(["input", "metadata"], INVALID)]
    ),
    "deploy-metadata-string": Refused(
        "deploy", deploy_input(metadata="note"), [(["input", "metadata"], INVALID)]
    ),
    "deploy-metadata-number": Refused(
        "deploy", deploy_input(metadata=42), [(["input", "metadata"], INVALID)]
    ),
    # backups: instanceId 1-128 of [A-Za-z0-9._-]
    "backup-instance-with-slash": Refused(
        "backupDatabase", backup_input(instanceId="orders/1"), [(["input", "instanceId"], INVALID)]
    ),
    "backup-instance-path-traversal": Refused(
        "backupDatabase",
        backup_input(instanceId="../../etc"),
        [(["input", "instanceId"], INVALID)],
    ),
    "backup-empty-instance": Refused(
        "backupDatabase", backup_input(instanceId=""), [(["input", "instanceId"], INVALID)]
    ),
    "backup-129-char-instance": Refused(
        "backupDatabase", backup_input(instanceId="i" * 129), [(["input", "instanceId"], INVALID)]
    ),
    "backup-instance-sql-injection": Refused(
        "backupDatabase", backup_input(instanceId=INJECTION), [(["input", "instanceId"], INVALID)]
    ),
    "backup-instance-script-tag": Refused(
        "backupDatabase", backup_input(instanceId=SCRIPT), [(["input", "instanceId"], INVALID)]
    ),
    "backup-metadata-over-16KiB": Refused(
        "backupDatabase", backup_input(metadata=BIG_METADATA), [(["input", "metadata"], INVALID)]
    ),
    # restores: artifactId must name a db_backup of the same engine and instance
    "restore-unknown-artifact": Refused(
        "restoreDatabase",
        restore_input(artifactId=UNKNOWN_ID),
        [(["input", "artifactId"], NOT_FOUND)],
    ),
    "restore-artifact-not-a-backup": Refused(
        "restoreDatabase", restore_input(artifactId="@plan"), [(["input", "artifactId"], INVALID)]
    ),
    "restore-backup-of-another-instance": Refused(
        "restoreDatabase",
        restore_input(instanceId="orders-2"),
        [(["input", "artifactId"], INVALID)],
    ),
    "restore-backup-of-another-engine": Refused(
        "restoreDatabase", restore_input(engine="MYSQL"), [(["input", "artifactId"], INVALID)]
    ),
    "restore-instance-with-slash": Refused(
        "restoreDatabase",
        restore_input(instanceId="a/b"),
        [(["input", "instanceId"], INVALID)],
    ),
    # restarts: namespace and name are DNS-1123 labels
    "restart-uppercase-namespace": Refused(
        "restartWorkload", restart_input(namespace="Shop"), [(["input", "namespace"], INVALID)]
    ),
    "restart-leading-dash-name": Refused(
        "restartWorkload", restart_input(name="-api"), [(["input", "name"], INVALID)]
    ),
    "restart-trailing-dash-name": Refused(
        "restartWorkload", restart_input(name="api-"), [(["input", "name"], INVALID)]
    ),
    "restart-64-char-name": Refused(
        "restartWorkload", restart_input(name="a" * 64), [(["input", "name"], INVALID)]
    ),
    "restart-empty-namespace": Refused(
        "restartWorkload", restart_input(namespace=""), [(["input", "namespace"], INVALID)]
    ),
    "restart-underscore-name": Refused(
        "restartWorkload", restart_input(name="my_app"), [(["input", "name"], INVALID)]
    ),
    "restart-name-with-slash": Refused(
        "restartWorkload", restart_input(name="a/b"), [(["input", "name"], INVALID)]
    ),
    "restart-every-field-wrong": Refused(
        "restartWorkload",
        restart_input(namespace="A", name="-b", metadata=[]),
        [
            (["input", "namespace"], INVALID),
            (["input", "name"], INVALID),
            (["input", "metadata"], INVALID),
        ],
    ),
    # sandboxes: DNS-1123 name, ttlMinutes 1 to 10080
    "sandbox-ttl-0": Refused(
        "createSandbox", sandbox_input(ttlMinutes=0), [(["input", "ttlMinutes"], INVALID)]
    ),
    "sandbox-ttl-10081": Refused(
        "createSandbox", sandbox_input(ttlMinutes=10081), [(["input", "ttlMinutes"], INVALID)]
    ),
    "sandbox-ttl-negative": Refused(
        "createSandbox", sandbox_input(ttlMinutes=-5), [(["input", "ttlMinutes"], INVALID)]
    ),
    "sandbox-uppercase-name": Refused(
        "createSandbox", sandbox_input(name="Box"), [(["input", "name"], INVALID)]
    ),
    "sandbox-64-char-name": Refused(
        "createSandbox", sandbox_input(name="b" * 64), [(["input", "name"], INVALID)]
    ),
    "sandbox-unknown-project": Refused(
        "createSandbox", sandbox_input(projectId=UNKNOWN_ID), [(["input", "projectId"], NOT_FOUND)]
    ),
    "sandbox-name-of-existing-environment": Refused(
        "createSandbox", sandbox_input(name="prod"), [(["input", "name"], "CONFLICT")]
    ),
    "sandbox-256-char-idempotency-key": Refused(
        "createSandbox",
        sandbox_input(idempotencyKey="k" * 256),
        [(["input", "idempotencyKey"], INVALID)],
    ),
    "sandbox-metadata-over-16KiB": Refused(
        "createSandbox", sandbox_input(metadata=BIG_METADATA), [(["input", "metadata"], INVALID)]
    ),
}


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
async def test_rule_violation_is_a_user_error_and_writes_nothing(
    shared: Shared, case: Refused
) -> None:
    live = shared.live
    entity = PAYLOAD_ENTITY[case.mutation]
    extra = " deduplicated" if entity == "task" else ""
    query = (
        f"mutation($input: {INPUT_TYPE[case.mutation]}!) {{ {case.mutation}(input: $input) "
        f"{{ {entity} {{ id }} userErrors {{ field message code }}{extra} }} }}"
    )
    before = await row_counts(live)
    body = await live.execute(query, {"input": shared.setup.fill(case.input)})
    after = await counts_around(live, before)

    assert "errors" not in body, f"a rule violation is a userError, not a GraphQL error: {body}"
    payload = body["data"][case.mutation]
    got = [(e["field"], e["code"]) for e in payload["userErrors"]]
    assert got == case.errors, (
        f"userErrors {payload['userErrors']} != expected {case.errors}; payload: {payload}"
    )
    assert all(e["message"].strip() for e in payload["userErrors"]), payload["userErrors"]
    assert payload[entity] is None, f"{entity} must be null when userErrors is not empty"
    if entity == "task":
        assert payload["deduplicated"] is False
    assert after == before, f"a refused request wrote rows: {before} -> {after}"


# -- GraphQL errors: the request is not executed at all -------------------------------------


@dataclass(frozen=True)
class Rejected:
    query: str
    message: str
    variables: dict[str, Any] = field(default_factory=dict)


CREATE = 'createProject(input: {name: "written"}) { project { id } }'
REJECTED: dict[str, Rejected] = {
    "ttl-as-string-literal": Rejected(
        'mutation { createSandbox(input: {projectId: "@project", name: "box-2", '
        'ttlMinutes: "ten"}) { task { id } } }',
        "Int cannot represent non-integer value",
    ),
    "ttl-as-string-variable": Rejected(
        "mutation($input: CreateSandboxInput!) { createSandbox(input: $input) { task { id } } }",
        "Int cannot represent non-integer value",
        {"input": {"projectId": "@project", "name": "box-2", "ttlMinutes": "ten"}},
    ),
    "ttl-as-float": Rejected(
        'mutation { createSandbox(input: {projectId: "@project", name: "box-2", '
        "ttlMinutes: 1.5}) { task { id } } }",
        "Int cannot represent non-integer value",
    ),
    "version-as-number": Rejected(
        'mutation { deploy(input: {environmentId: "@env", version: 2}) { task { id } } }',
        "String cannot represent a non string value",
    ),
    "missing-required-input-field": Rejected(
        "mutation { backupDatabase(input: {engine: POSTGRES}) { task { id } } }",
        "required field 'instanceId'",
    ),
    "missing-required-variable-field": Rejected(
        "mutation($input: DeployInput!) { deploy(input: $input) { task { id } } }",
        "version",
        {"input": {"environmentId": "@env"}},
    ),
    "missing-input-argument": Rejected(
        "mutation { deploy { task { id } } }", "is required, but it was not provided"
    ),
    "missing-variable": Rejected(
        "mutation($input: DeployInput!) { deploy(input: $input) { task { id } } }",
        "$input",
    ),
    "null-for-required-name": Rejected(
        "mutation { createProject(input: {name: null}) { project { id } } }", "non-null"
    ),
    "unknown-enum-engine": Rejected(
        'mutation { backupDatabase(input: {engine: ORACLE, instanceId: "orders-9"}) '
        "{ task { id } } }",
        "ORACLE",
    ),
    "unknown-enum-engine-variable": Rejected(
        "mutation($input: BackupDatabaseInput!) { backupDatabase(input: $input) { task { id } } }",
        "ORACLE",
        {"input": {"engine": "ORACLE", "instanceId": "orders-9"}},
    ),
    "unknown-enum-environment-type": Rejected(
        'mutation { createEnvironment(input: {projectId: "@project", name: "qa", type: QA}) '
        "{ environment { id } } }",
        "QA",
    ),
    "unknown-input-field": Rejected(
        'mutation { backupDatabase(input: {engine: POSTGRES, instanceId: "orders-9", '
        "bogus: 1}) { task { id } } }",
        "bogus",
    ),
    "unknown-input-field-variable": Rejected(
        "mutation($input: CreateProjectInput!) { createProject(input: $input) { project { id } } }",
        "owner",
        {"input": {"name": "written", "owner": "me"}},
    ),
    "unknown-payload-field": Rejected(
        'mutation { createProject(input: {name: "written"}) { project { id } nope } }', "nope"
    ),
    "unknown-mutation": Rejected('mutation { dropDatabase(id: "x") { ok } } ', "dropDatabase"),
    "valid-mutation-next-to-an-invalid-one": Rejected(
        "mutation { " + CREATE + ' deploy(input: {environmentId: "@env"}) { task { id } } }',
        "version",
    ),
    "syntax-error": Rejected("mutation { " + CREATE, "Syntax Error"),
}


@pytest.mark.parametrize("case", list(REJECTED.values()), ids=list(REJECTED))
async def test_malformed_operation_is_a_graphql_error_and_writes_nothing(
    shared: Shared, case: Rejected
) -> None:
    live = shared.live
    setup = shared.setup
    query = case.query.replace("@project", setup.project_id).replace("@env", setup.env_id)
    before = await row_counts(live)
    body = await live.execute(query, setup.fill(case.variables))
    after = await counts_around(live, before)

    assert body.get("data") is None, f"the operation must not run at all: {body}"
    messages = [e["message"] for e in body.get("errors", [])]
    assert messages, f"expected a GraphQL error, got {body}"
    assert any(case.message in m for m in messages), f"{case.message!r} not in {messages}"
    assert after == before, f"a rejected request wrote rows: {before} -> {after}"


# -- HTTP-level garbage ------------------------------------------------------------------------

A_WRITE = json.dumps({"query": "mutation { " + CREATE + " }"})
HTTP_GARBAGE: dict[str, tuple[bytes, str]] = {
    "truncated-json": (A_WRITE[:-3].encode(), "application/json"),
    "not-json-at-all": (b"mutation { " + CREATE.encode() + b" }", "application/json"),
    "invalid-utf8": (b'{"query": "mutation \xff\xfe"}', "application/json"),
    "empty-body": (b"", "application/json"),
    "json-array": (f"[{A_WRITE}]".encode(), "application/json"),
    "json-string": (json.dumps(A_WRITE).encode(), "application/json"),
    "no-query-key": (b'{"variables": {}}', "application/json"),
    "query-not-a-string": (b'{"query": 5}', "application/json"),
    "variables-not-an-object": (
        json.dumps({"query": "mutation { " + CREATE + " }", "variables": "x"}).encode(),
        "application/json",
    ),
    "text-plain": (A_WRITE.encode(), "text/plain"),
    "xml": (b"<query>mutation</query>", "application/xml"),
}


@pytest.mark.parametrize("case", list(HTTP_GARBAGE.values()), ids=list(HTTP_GARBAGE))
async def test_unparseable_request_is_a_400_and_writes_nothing(
    shared: Shared, case: tuple[bytes, str]
) -> None:
    live = shared.live
    content, content_type = case
    before = await row_counts(live)
    async with live.http() as http:
        response = await http.post(
            "/graphql", content=content, headers={"content-type": content_type}
        )
    after = await counts_around(live, before)
    assert response.status_code in (400, 415), (
        f"an unparseable body must be answered 400 with a reason, got "
        f"{response.status_code}: {response.text[:200]!r}"
    )
    assert response.text.strip(), "the refusal must say what is wrong"
    assert "Traceback" not in response.text
    assert after == before, f"an unparseable request wrote rows: {before} -> {after}"


# -- injection strings: valid where the rules allow them, stored verbatim -----------------------


@pytest.mark.parametrize(
    "name",
    [INJECTION, SCRIPT, "Robert'); DROP TABLE projects;--", '" OR 1=1 --', "проект ✓ 🚀"],
    ids=["sql-drop-tasks", "script-tag", "sql-drop-projects", "sql-or-true", "unicode"],
)
async def test_hostile_but_valid_names_are_stored_verbatim(shared: Shared, name: str) -> None:
    live = shared.live
    before = await row_counts(live)
    created = await live.execute(
        """mutation($name: String!, $description: String!) {
             createProject(input: {name: $name, description: $description}) {
               project { id name description } userErrors { field code } } }""",
        {"name": name, "description": name},
    )
    payload = created["data"]["createProject"]
    assert payload["userErrors"] == [], payload
    project = payload["project"]
    assert (project["name"], project["description"]) == (name, name)
    env = await live.execute(
        """mutation($p: ID!, $name: String!) {
             createEnvironment(input: {projectId: $p, name: $name, type: DEV}) {
               environment { id name } userErrors { field code } } }""",
        {"p": project["id"], "name": name},
    )
    assert env["data"]["createEnvironment"]["userErrors"] == [], env
    assert env["data"]["createEnvironment"]["environment"]["name"] == name

    read = await live.execute(
        "query($id: ID!) { project(id: $id) { name description environments { name } } }",
        {"id": project["id"]},
    )
    assert read["data"]["project"] == {
        "name": name,
        "description": name,
        "environments": [{"name": name}],
    }
    after = await row_counts(live)
    expected = dict(before, projects=before["projects"] + 1)
    expected["environments"] += 1
    assert after == expected, f"tables changed beyond the one project and environment: {after}"
    tasks = await live.execute("{ tasks { totalCount } }")
    assert tasks["data"]["tasks"]["totalCount"] == before["tasks"], tasks
