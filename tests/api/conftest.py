"""A real server on a free loopback port (uvicorn in the test's event loop), and clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from gql import Client, GraphQLRequest, gql
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from cloudops.cli import server_config
from cloudops.runtime import Runtime
from cloudops.web.app import create_app
from tests.conftest import make_settings


def op(document: GraphQLRequest, **variables: Any) -> GraphQLRequest:
    """A request of ``document`` with these variables (gql 4's way of passing them)."""
    return GraphQLRequest(document, variable_values=variables)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws_url(self) -> str:
        return self.graphql_url.replace("http://", "ws://")

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)

    def client(self, **transport: Any) -> Client:
        return Client(transport=HTTPXAsyncTransport(url=self.graphql_url, timeout=10, **transport))

    def ws_client(self) -> Client:
        return Client(transport=WebsocketsTransport(url=self.ws_url))

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST a GraphQL request; returns the whole response body (data and errors)."""
        async with self.http() as http:
            response = await http.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers=headers or {},
            )
        body: dict[str, Any] = response.json()
        return body

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_server(tmp_path: Path, **overrides: Any) -> LiveServer:
    port = free_port()
    settings = make_settings(tmp_path, port=port, **overrides)
    app = create_app(settings)
    config = server_config(app, settings, host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    return LiveServer(f"http://127.0.0.1:{port}", app.state.runtime, server, task)


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    servers: list[LiveServer] = []

    async def start(**overrides: Any) -> LiveServer:
        live = await start_server(tmp_path, **overrides)
        servers.append(live)
        return live

    yield start
    for live in servers:
        if not live.task.done():
            await live.stop()


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> LiveServer:
    live: LiveServer = await server_factory()
    return live


CREATE_PROJECT = gql("""
mutation($name: String!) { createProject(input: {name: $name}) {
  project { id name } userErrors { field message code } } }""")
CREATE_ENVIRONMENT = gql("""
mutation($projectId: ID!, $name: String!) {
  createEnvironment(input: {projectId: $projectId, name: $name, type: PROD}) {
    environment { id name } userErrors { field message code } } }""")


async def project_and_environment(live: LiveServer, name: str = "shop") -> tuple[str, str]:
    async with live.client() as session:
        project = await session.execute(op(CREATE_PROJECT, name=name))
        project_id = project["createProject"]["project"]["id"]
        env = await session.execute(op(CREATE_ENVIRONMENT, projectId=project_id, name="prod"))
    return project_id, env["createEnvironment"]["environment"]["id"]
