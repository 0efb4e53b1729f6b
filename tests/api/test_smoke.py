"""The server answers GraphQL over HTTP and WebSocket (the fixtures work end to end)."""

from __future__ import annotations

from gql import gql

from tests.api.conftest import LiveServer, op, project_and_environment

DEPLOY = gql("""mutation($env: ID!, $v: String!) { deploy(input: {environmentId: $env, version: $v}) {
  task { id status } userErrors { code } } }""")
EVENTS = gql("""subscription($id: ID!) { taskEvents(taskId: $id, afterSequence: 0) {
  sequence kind status progress step { name status } } }""")


async def test_deploy_over_http_and_watch_it_over_websocket(server: LiveServer) -> None:
    _, env_id = await project_and_environment(server)
    async with server.client() as http:
        result = await http.execute(op(DEPLOY, env=env_id, v="1.0"))
    task_id = result["deploy"]["task"]["id"]
    seen = []
    async with server.ws_client() as ws:
        async for event in ws.subscribe(op(EVENTS, id=task_id)):
            seen.append(event["taskEvents"])
    assert [e["sequence"] for e in seen] == list(range(1, len(seen) + 1))
    assert seen[0]["kind"] == "QUEUED" and seen[-1]["kind"] == "COMPLETED"
    assert seen[-1]["progress"] == 1.0
