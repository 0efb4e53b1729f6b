"""Scenario 4: how many people can watch at once.

K WebSocket subscribers (one connection each, as K browser tabs would be) subscribe to
``taskEvents`` with no filter, the dashboard's live feed, while 200 one-step tasks run on
one ``cloudops serve`` process. Every subscriber must receive every event of those tasks,
once, in sequence order per task; a subscriber that was ended (fell behind its buffer) or
missed an event fails the run. Measured: deliveries/s (events x subscribers, from the
first submission to the last delivery), delivery latency (the event's ``at``, stamped by
the server before it commits, to the moment the client has parsed it) and the server's
peak resident memory (VmHWM), each K on a fresh server so the peak is its own.

The subscribers all run in this process (each connection read in its protocol callbacks,
on uvloop), so on a small machine the client competes with the server for CPU;
``--client-procs`` spreads them over several processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import multiprocessing
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from bench._common import (
    RESULTS_DIR,
    Target,
    csv_ints,
    percentile,
    print_table,
    print_targets,
    running_stack,
    submit_restart,
    workdir,
    write_results,
)
from cloudops.db.models import TaskEvent

FIELDS = {
    "minimal": "taskId sequence kind at",
    # The dashboard's EventFields fragment.
    "dashboard": "id taskId sequence kind at status progress entityId type message "
    "step { index name status progress message startedAt finishedAt } "
    "artifact { id kind path sizeBytes sha256 createdAt url taskId }",
}
FINAL_KINDS = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


@dataclass
class Subscriber:
    """What one subscriber received, per task."""

    index: int
    last_sequence: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    finished: set[str] = field(default_factory=set)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    out_of_order: int = 0
    last_at: float = 0.0
    ended: str | None = None


class FeedSocket(asyncio.Protocol):
    """One subscriber's graphql-transport-ws connection, read in the protocol's callbacks
    with websockets' sans-I/O protocol: no task, queue or future per message, so that a
    thousand of them in one process cost little next to the server they measure."""

    def __init__(self, url: str, sub: Subscriber, query: str) -> None:
        self.ws = ClientProtocol(
            parse_uri(url), subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
        )
        self.sub = sub
        self.query = query
        self.transport: asyncio.Transport | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    self._fail(f"handshake answered {event.status_code}")
                    return
                self._send({"type": "connection_init", "payload": {}})
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._on_message(_parsed(event.data))
        self._flush()  # pongs, close replies

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sub.ended is None:
            self.sub.ended = "socket closed"
        self._fail("socket closed before the subscription started")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.ws.send_close(1000)
                self._flush()
            self.transport.close()

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "connection_ack":
            self._send({"id": "feed", "type": "subscribe", "payload": {"query": self.query}})
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif kind == "ping":
            self._send({"type": "pong"})
        elif kind != "pong":
            _record(self.sub, message)

    def _send(self, message: dict[str, Any]) -> None:
        self.ws.send_text(json.dumps(message).encode())

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)

    def _fail(self, why: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(why))


async def _subscribe_all(
    base_url: str, subs: list[Subscriber], query: str, connect_parallel: int
) -> list[FeedSocket]:
    url = base_url.replace("http://", "ws://", 1).rstrip("/") + "/graphql"
    address = urlsplit(url)
    host, port = address.hostname, address.port
    assert host is not None and port is not None, url
    sockets: list[FeedSocket] = []
    gate = asyncio.Semaphore(connect_parallel)
    loop = asyncio.get_running_loop()

    async def one(sub: Subscriber) -> None:
        async with gate:
            _, feed = await loop.create_connection(lambda: FeedSocket(url, sub, query), host, port)
            sockets.append(feed)
            async with asyncio.timeout(60):
                await feed.subscribed

    await asyncio.gather(*(one(sub) for sub in subs))
    return sockets


def _parsed(frame: bytes | bytearray | memoryview) -> Any:
    """A frame as parsed, kept by its bytes. Every subscriber's operation has the id
    "feed", so the thousand copies of an event's frame are the same bytes: parsing them
    once instead of a thousand times was a third of this process's CPU, taken from the
    server it measures on a small machine. Each subscriber's bookkeeping still runs on
    every frame it got."""
    return _parsed_bytes(bytes(frame))  # hashable whatever the parser handed over


@functools.lru_cache(maxsize=4096)
def _parsed_bytes(data: bytes) -> Any:
    return json.loads(data)


@functools.lru_cache(maxsize=4096)
def _at_seconds(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def _record(sub: Subscriber, message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind != "next":
        if kind in ("error", "complete"):
            sub.ended = json.dumps(message)[:300]
        return
    payload = message["payload"]
    if payload.get("errors"):
        sub.ended = json.dumps(payload["errors"])[:300]
        return
    now = time.time()
    event = payload["data"]["taskEvents"]
    task_id = event["taskId"]
    sequence = event["sequence"]
    if sequence != sub.last_sequence.get(task_id, 0) + 1:
        sub.out_of_order += 1
    sub.last_sequence[task_id] = sequence
    sub.received[task_id] += 1
    sub.latencies[task_id].append(now - _at_seconds(event["at"]))
    sub.last_at = now
    if event["kind"] in FINAL_KINDS:
        sub.finished.add(task_id)


async def _wait(subs: list[Subscriber], ids: set[str], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        pending = [s for s in subs if s.ended is None and not ids <= s.finished]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} subscribers still waiting for {what}")
        await asyncio.sleep(0.05)


async def client_part(
    base_url: str,
    first_index: int,
    count: int,
    query: str,
    connect_parallel: int,
    control: Any,
) -> list[dict[str, Any]]:
    """Subscribers ``first_index``.. of one client process (or of this one): subscribe,
    say so, wait for the warm-up task id and then the measured ids, report."""
    subs = [Subscriber(first_index + i) for i in range(count)]
    sockets = await _subscribe_all(base_url, subs, query, connect_parallel)
    try:
        await control.put(("subscribed", count))
        warm = await control.get_command()
        await _wait(subs, {warm}, 120, "the warm-up task")
        await control.put(("warm", count))
        measured_ids, deadline = await control.get_command()
        ids = set(measured_ids)
        try:
            await _wait(subs, ids, deadline - time.time(), "the measured tasks")
        except TimeoutError as exc:
            await control.put(("note", str(exc)))
    finally:
        for feed in sockets:
            feed.close()
    return [_summarize(sub, set(measured_ids)) for sub in subs]


def _summarize(sub: Subscriber, ids: set[str]) -> dict[str, Any]:
    latencies = [x for task_id in ids for x in sub.latencies.get(task_id, [])]
    return {
        "index": sub.index,
        "received": sum(sub.received.get(t, 0) for t in ids),
        "finished": len(ids & sub.finished),
        "out_of_order": sub.out_of_order,
        "last_at": sub.last_at,
        "ended": sub.ended,
        "latencies": latencies,
        "last_sequence": {t: sub.last_sequence.get(t, 0) for t in ids},
    }


class _LocalControl:
    """The in-process side of the control channel (same API as the process pipe)."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.commands: asyncio.Queue[Any] = asyncio.Queue()

    async def put(self, item: Any) -> None:
        await self.events.put(item)

    async def get_command(self) -> Any:
        return await self.commands.get()


class _PipeControl:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def put(self, item: Any) -> None:
        self.conn.send(item)

    async def get_command(self) -> Any:
        return await asyncio.to_thread(self.conn.recv)


def run_fast(main: Any) -> Any:
    """The client on uvloop, as the server is: on two cores the thousand subscribers
    compete with the server for CPU, and asyncio's loop nearly doubles their cost."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _client_process(conn: Any, base_url: str, first: int, count: int, query: str, par: int) -> None:
    result = run_fast(client_part(base_url, first, count, query, par, _PipeControl(conn)))
    conn.send(("result", result))


@dataclass
class Outcome:
    subscribers: int
    tasks: int
    events: int = 0
    deliveries: int = 0
    seconds: float = math.nan
    latencies: list[float] = field(default_factory=list, repr=False)
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    peak_rss_mb: float = math.nan
    subscribe_seconds: float = math.nan
    #: The wait for deliveries was cut off at --max-seconds; undelivered events then
    #: count in the latency figures with (cut-off - at), a lower bound.
    cut_off: bool = False
    censored: int = 0

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {
            "subscribers": self.subscribers,
            "tasks": self.tasks,
            "stored_events": self.events,
            "expected_deliveries": self.events * self.subscribers,
            "deliveries": self.deliveries,
            "seconds": round(self.seconds, 3),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "latency_p50_ms": round(percentile(ms, 50), 1),
            "latency_p99_ms": round(percentile(ms, 99), 1),
            "latency_max_ms": round(max(ms), 1) if ms else math.nan,
            "every_event_to_every_subscriber": self.complete,
            "server_peak_rss_mb": round(self.peak_rss_mb, 1),
            "subscribe_seconds": round(self.subscribe_seconds, 2),
            "cut_off_at_max_seconds": self.cut_off,
            "undelivered_counted_as_lower_bound": self.censored,
            "problems": self.problems[:20],
        }


async def one_size(args: argparse.Namespace, subscribers: int) -> Outcome:
    outcome = Outcome(subscribers, args.tasks)
    query = f"subscription {{ taskEvents {{ {FIELDS[args.fields]} }} }}"
    with workdir(args.keep, "fanout") as tmp:
        async with running_stack("embedded", tmp, log_level=args.log_level) as stack:
            assert stack.server is not None
            procs = max(1, min(args.client_procs, subscribers))
            share = [
                subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)
            ]
            controls: list[Any] = []
            parts: list[Any] = []
            began = time.perf_counter()
            if procs == 1:
                local = _LocalControl()
                controls.append(local)
                parts.append(
                    asyncio.create_task(
                        client_part(
                            stack.base_url, 0, subscribers, query, args.connect_parallel, local
                        )
                    )
                )
            else:
                context = multiprocessing.get_context("spawn")
                first = 0
                for count in share:
                    parent, child = context.Pipe()
                    proc = context.Process(
                        target=_client_process,
                        args=(child, stack.base_url, first, count, query, args.connect_parallel),
                    )
                    proc.start()
                    controls.append((parent, proc))
                    first += count
            try:
                await _expect(controls, parts, "subscribed")
                outcome.subscribe_seconds = time.perf_counter() - began
                async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
                    warm = await submit_restart(client, "fanout", "warm-up")
                    _command(controls, warm)
                    await _expect(controls, parts, "warm")
                    started = time.time()
                    ids = await _submit(
                        client,
                        args.tasks,
                        args.entities,
                        args.http_clients,
                        until=started + args.max_seconds,
                    )
                    outcome.tasks = len(ids)
                    if len(ids) < args.tasks:
                        outcome.problems.append(
                            f"only {len(ids)} of {args.tasks} tasks submitted before the "
                            "cut-off (the server answered mutations slowly)"
                        )
                _command(controls, (ids, started + args.max_seconds))
                results = await _results(controls, parts, outcome)
            finally:
                for control in controls:
                    if isinstance(control, tuple):
                        control[1].join(timeout=30)
                        if control[1].is_alive():
                            control[1].kill()
            outcome.peak_rss_mb = stack.server.peak_rss_mb()
            async with stack.db.read() as session:
                stored = (
                    await session.execute(
                        select(TaskEvent.task_id, TaskEvent.sequence, TaskEvent.at).where(
                            TaskEvent.task_id.in_(ids)
                        )
                    )
                ).all()
    outcome.events = len(stored)
    expected = outcome.events
    cut = started + args.max_seconds
    outcome.cut_off = any(r["received"] != expected for r in results)
    by_task: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for task_id, sequence, stamped in stored:
        by_task[task_id].append((sequence, stamped.timestamp()))
    last = 0.0
    for sub in results:
        for task_id, seen in sub["last_sequence"].items():
            for sequence, at_s in by_task[task_id]:
                if sequence > seen and at_s <= cut:  # later ones did not exist yet
                    outcome.latencies.append(cut - at_s)
                    outcome.censored += 1
        outcome.deliveries += sub["received"]
        outcome.latencies += sub["latencies"]
        last = max(last, sub["last_at"])
        if sub["received"] != expected or sub["finished"] != len(ids):
            outcome.problems.append(
                f"subscriber {sub['index']}: {sub['received']} of {expected} events, "
                f"{sub['finished']} of {len(ids)} tasks finished"
                + (f", ended: {sub['ended']}" if sub["ended"] else "")
            )
        if sub["out_of_order"]:
            outcome.problems.append(
                f"subscriber {sub['index']}: {sub['out_of_order']} out of order"
            )
    # Until the cut-off while somebody still waited; else until the last delivery (all
    # complete, or every incomplete subscriber was ended by the server).
    waiting = any(r["ended"] is None and r["received"] != expected for r in results)
    end = cut if waiting else last
    outcome.seconds = end - started if end else math.nan
    outcome.complete = not outcome.problems and len(results) == subscribers
    return outcome


async def _submit(
    client: httpx.AsyncClient, tasks: int, entities: int, clients: int, until: float
) -> list[str]:
    """Submit up to ``tasks``, none after ``until`` (the cut-off): a server saturated by
    its subscribers answers mutations slowly, and a task submitted after the cut-off
    could not be waited for."""
    ids: list[str] = []

    async def one(index: int) -> None:
        for n in range(index, tasks, clients):
            if time.time() >= until:
                return
            ids.append(await submit_restart(client, "fanout", f"w{n % entities:04d}"))

    await asyncio.gather(*(one(i) for i in range(clients)))
    return ids


def _command(controls: list[Any], item: Any) -> None:
    for control in controls:
        if isinstance(control, tuple):
            control[0].send(item)
        else:
            control.commands.put_nowait(item)


async def _expect(controls: list[Any], parts: list[Any], what: str) -> None:
    for control in controls:
        while True:
            if isinstance(control, tuple):
                item = await asyncio.to_thread(_recv, control[0])
            else:
                getter = asyncio.ensure_future(control.events.get())
                done, _ = await asyncio.wait({getter, *parts}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    for part in parts:
                        if part.done():
                            part.result()
                    raise RuntimeError("subscribers ended early")
                item = getter.result()
            if item[0] == what:
                break
            if item[0] == "note":
                print(f"note: {item[1]}")


def _recv(conn: Any) -> Any:
    if not conn.poll(600):
        raise TimeoutError("client process did not answer")
    return conn.recv()


async def _results(controls: list[Any], parts: list[Any], outcome: Outcome) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for control in controls:
        if isinstance(control, tuple):
            while True:
                item = await asyncio.to_thread(_recv, control[0])
                if item[0] == "result":
                    results += item[1]
                    break
                if item[0] == "note":
                    outcome.problems.append(item[1])
        else:
            results += await parts[0]
            while not control.events.empty():
                item = control.events.get_nowait()
                if item[0] == "note":
                    outcome.problems.append(item[1])
    return results


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    outcomes: list[Outcome] = []
    for size in args.subscribers:
        print(f"{size} subscribers, {args.tasks} tasks ...", flush=True)
        outcome = await one_size(args, size)
        print(
            f"  {outcome.deliveries_per_s:,.0f} deliveries/s, "
            f"{'complete' if outcome.complete else 'INCOMPLETE'}",
            flush=True,
        )
        outcomes.append(outcome)
    targets: list[Target] = []
    for outcome in outcomes:
        if outcome.subscribers >= 1000:
            data = outcome.as_dict()
            label = f"{outcome.subscribers} subscribers"
            targets += [
                Target(
                    f"{label}: every event to every subscriber",
                    1.0 if outcome.complete else 0.0,
                    ">=",
                    1.0,
                ),
                Target(f"{label}: p99 delivery latency (ms)", data["latency_p99_ms"], "<=", 250.0),
                Target(f"{label}: deliveries/s", data["deliveries_per_s"], ">=", 20000.0),
                Target(f"{label}: server peak RSS (MB)", data["server_peak_rss_mb"], "<=", 300.0),
            ]
    report(outcomes, targets)
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [o.as_dict() for o in outcomes],
        "targets": [t.as_dict() for t in targets],
    }


def report(outcomes: list[Outcome], targets: list[Target]) -> None:
    print_table(
        "Fan-out of taskEvents (one WebSocket per subscriber, one server process)",
        [
            "subscribers",
            "events",
            "deliveries",
            "s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "peak RSS MB",
            "complete",
        ],
        [
            (
                o.subscribers,
                o.events,
                o.deliveries,
                o.seconds,
                o.deliveries_per_s,
                o.as_dict()["latency_p50_ms"],
                o.as_dict()["latency_p99_ms"],
                o.peak_rss_mb,
                "yes" if o.complete else "NO, cut off" if o.cut_off else "NO",
            )
            for o in outcomes
        ],
    )
    print_targets(targets)
    for outcome in outcomes:
        if outcome.cut_off:
            missing = outcome.events * outcome.subscribers - outcome.deliveries
            print(
                f"{outcome.subscribers} subscribers: cut off after --max-seconds with "
                f"{missing:,} deliveries missing; the {outcome.censored:,} of them whose event "
                "was stored before the cut-off count in the latency as (cut-off - at), so "
                "p50/p99 are lower bounds"
            )
        for problem in outcome.problems[:3]:
            print(f"{outcome.subscribers} subscribers: {problem}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description="taskEvents fan-out to many WebSocket subscribers while tasks run "
        "(scenario 4). Writes bench/results/fanout-<time>.json.",
    )
    parser.add_argument(
        "--subscribers", type=csv_ints, default=[1, 100, 1000], help="sizes (1,100,1000)"
    )
    parser.add_argument("--tasks", type=int, default=200, help="one-step tasks per size (200)")
    parser.add_argument("--entities", type=int, default=20, help="entities of the tasks (20)")
    parser.add_argument("--fields", choices=sorted(FIELDS), default="dashboard")
    parser.add_argument("--http-clients", type=int, default=4, help="submitting clients (4)")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="processes the subscribers run in (1)"
    )
    parser.add_argument("--connect-parallel", type=int, default=50, help="handshakes at once")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=25.0,
        help="per size, stop waiting for deliveries this many seconds after the first "
        "submission; what is missing then counts as undelivered (25)",
    )
    parser.add_argument("--log-level", default="WARNING", help="CLOUDOPS_LOG_LEVEL (WARNING)")
    parser.add_argument("--keep", action="store_true", help="keep data files and process logs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    result = await scenario(args)
    write_results("fanout", result, args.results_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run_fast(amain(args))
    return 0 if all(s["every_event_to_every_subscriber"] for s in result["sizes"]) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
