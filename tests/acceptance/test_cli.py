"""The ``cloudops`` command as an operator meets it: help, bad settings, migrate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.acceptance._support import CLOUDOPS, clean_env, free_port, running_server

#: A refused start must come back well within this (it never gets as far as serving).
QUICK = 15.0


def cloudops(tmp: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the console script in ``tmp`` (no .env of the repository) with only ``env`` set."""
    assert CLOUDOPS.exists(), f"console script not found at {CLOUDOPS}"
    began = time.monotonic()
    result = subprocess.run(
        [str(CLOUDOPS), *args],
        cwd=tmp,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=QUICK + 15,
        check=False,
    )
    return result, time.monotonic() - began


def isolated(tmp: Path) -> dict[str, str]:
    """Settings that keep a run inside the temporary directory, on a free port."""
    return {
        "CLOUDOPS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'cloudops.db'}",
        "CLOUDOPS_DATA_DIR": str(tmp / "data"),
        "CLOUDOPS_HOST": "127.0.0.1",
        "CLOUDOPS_PORT": str(free_port()),
    }


@pytest.mark.slow
def test_help_lists_the_commands(tmp_path: Path) -> None:
    result, _ = cloudops(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "migrate" in result.stdout


@pytest.mark.slow
def test_serve_help_mentions_no_worker(tmp_path: Path) -> None:
    result, _ = cloudops(tmp_path, "serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--no-worker" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [("CLOUDOPS_PORT", "notaport"), ("CLOUDOPS_BUS", "kafka")],
)
def test_bad_setting_stops_serve_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = isolated(tmp_path)
    env[variable] = value
    result, took = cloudops(tmp_path, "serve", **env)
    assert result.returncode != 0, f"serve started with {variable}={value!r}: {result.stderr}"
    assert took < QUICK, f"refusing {variable}={value!r} took {took:.1f}s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{result.stderr}"
    assert variable in lines[0], lines[0]
    assert not (tmp_path / "cloudops.db").exists(), "a refused start touched the database"


@pytest.mark.slow
def test_migrate_creates_the_schema_on_an_empty_database(tmp_path: Path) -> None:
    db_file = tmp_path / "fresh" / "cloudops.db"
    db_file.parent.mkdir()
    env = isolated(tmp_path)
    env["CLOUDOPS_DATABASE_URL"] = f"sqlite+aiosqlite:///{db_file}"
    result, _ = cloudops(tmp_path, "migrate", **env)
    assert result.returncode == 0, f"migrate failed:\n{result.stdout}\n{result.stderr}"
    assert db_file.is_file(), "migrate did not create the database file"
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    assert "tasks" in tables, sorted(tables)
    assert {"task_events", "artifacts", "sim_workloads"} <= tables, sorted(tables)


@pytest.mark.parametrize(("setting", "negotiated"), [(None, False), ("true", True)])
async def test_websocket_compression_follows_the_setting(
    tmp_path: Path, setting: str | None, negotiated: bool
) -> None:
    """permessage-deflate is off unless CLOUDOPS_WS_COMPRESSION turns it on (it cost a
    fifth of the fan-out's CPU), whatever the client offers; either way the live feed,
    which the hub writes to the socket itself, arrives whole and in order."""
    overrides = {} if setting is None else {"CLOUDOPS_WS_COMPRESSION": setting}
    with running_server(tmp_path, "serve", **overrides) as server:
        url = f"ws://127.0.0.1:{server.port}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"], compression="deflate") as ws:
            assert ws.subprotocol == "graphql-transport-ws"
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            sequences = await live_feed_of_one_task(ws, server.port)
    assert ("permessage-deflate" in extensions) == negotiated, extensions
    assert sequences == list(range(1, len(sequences) + 1)) and len(sequences) >= 3, sequences


async def live_feed_of_one_task(ws: ClientConnection, port: int) -> list[int]:
    """Subscribe to every event, restart a workload over HTTP, and collect the sequences
    of its events until the final one."""
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    feed = "subscription { taskEvents { taskId sequence kind } }"
    await ws.send(json.dumps({"type": "subscribe", "id": "feed", "payload": {"query": feed}}))
    await asyncio.sleep(0.3)  # subscribed before the task is submitted
    restart = """mutation { restartWorkload(input: {namespace: "shop", name: "api"}) {
      task { id } userErrors { message } } }"""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answer = (await http.post("/graphql", json={"query": restart})).json()
    task_id = answer["data"]["restartWorkload"]["task"]["id"]
    sequences: list[int] = []
    async with asyncio.timeout(30):
        while True:
            message = json.loads(await ws.recv())
            assert message["type"] == "next", message
            event = message["payload"]["data"]["taskEvents"]
            if event["taskId"] == task_id:
                sequences.append(event["sequence"])
                if event["kind"] in ("COMPLETED", "FAILED"):
                    return sequences


def test_serve_freezes_its_start_up_heap(tmp_path: Path) -> None:
    """What start-up leaves alive (~130k objects) is moved out of the cyclic collector's
    scans; a full collection of it took 150-175 ms, a pause every request would share."""
    with running_server(tmp_path, "serve", CLOUDOPS_LOG_LEVEL="INFO") as server:
        log = server.process.log_text()
    frozen = re.search(r"start-up heap frozen: (\d+) objects", log)
    assert frozen is not None, log[-2000:]
    assert int(frozen.group(1)) > 50_000
