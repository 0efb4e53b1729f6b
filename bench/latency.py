"""Scenario 3: how quickly a click shows up as live progress.

A probe sends the ``restartWorkload`` mutation (the bench's one-step task) over HTTP and
times, from just before the request, when a WebSocket subscriber (graphql-transport-ws,
subscribed beforehand to the probe's entity) sees the task's STARTED and COMPLETED events.
Probes run one after another with a pause between them, first on an idle server, then
while a load process submits tasks as fast as the server takes them (scenario 1's
interleaved layout over GraphQL), so the second figure says what a user sees on a busy
control plane: STARTED then also waits for a free worker slot, behind the entities that
became ready before it.

``python -m bench.latency --load URL ...`` is that load process (internal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    PYTHON,
    REDIS_URL,
    RESULTS_DIR,
    GraphQLSocket,
    MigratedTemplate,
    Target,
    clean_env,
    count_final,
    pg_unavailable,
    print_table,
    print_targets,
    redis_unavailable,
    running_stack,
    spawn,
    submit_restart,
    summary_ms,
    workdir,
    write_results,
)

PROBE_NAMESPACE = "latency"
PROBE_NAME = "probe"
PROBE_ENTITY = f"k8s:{PROBE_NAMESPACE}/{PROBE_NAME}"
SUBSCRIPTION = """subscription($e: String!) {
  taskEvents(entityId: $e) { taskId sequence kind at } }"""


@dataclass
class Samples:
    phase: str
    mutation: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    completed: list[float] = field(default_factory=list)
    load_tasks_per_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "mutation_response": summary_ms(self.mutation),
            "to_started": summary_ms(self.started),
            "to_completed": summary_ms(self.completed),
            "load_tasks_per_s": self.load_tasks_per_s,
        }


class Watcher:
    """One subscriber on the probe entity; remembers when each task's events arrived."""

    def __init__(self, base_url: str) -> None:
        self.socket = GraphQLSocket(base_url)
        self.seen: dict[str, dict[str, float]] = defaultdict(dict)
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.socket.connect()
        await self.socket.subscribe("probe", SUBSCRIPTION, {"e": PROBE_ENTITY})
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.socket.messages():
            if message.get("type") != "next":
                if message.get("type") in ("error", "complete"):
                    raise RuntimeError(f"probe subscription ended: {message}")
                continue
            now = time.perf_counter()
            event = message["payload"]["data"]["taskEvents"]
            async with self._arrived:
                self.seen[event["taskId"]].setdefault(event["kind"], now)
                self._arrived.notify_all()

    async def wait_for(self, task_id: str, kind: str, within: float = 120.0) -> float:
        async with asyncio.timeout(within), self._arrived:
            while kind not in self.seen.get(task_id, {}):
                if self._reader is not None and self._reader.done():
                    self._reader.result()
                    raise RuntimeError("probe subscription closed")
                await self._arrived.wait()
            return self.seen[task_id][kind]

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.socket.close()


async def probe(
    base_url: str, watcher: Watcher, phase: str, samples: int, interval: float
) -> Samples:
    result = Samples(phase)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for _ in range(samples):
            began = time.perf_counter()
            task_id = await submit_restart(client, PROBE_NAMESPACE, PROBE_NAME)
            answered = time.perf_counter()
            started = await watcher.wait_for(task_id, "STARTED")
            completed = await watcher.wait_for(task_id, "COMPLETED")
            result.mutation.append(answered - began)
            result.started.append(started - began)
            result.completed.append(completed - began)
            await asyncio.sleep(interval)
    return result


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    notes: list[str] = []
    if args.backend == "postgres":
        reason = await pg_unavailable() or await redis_unavailable(args.redis_url)
        if reason is not None:
            raise SystemExit(f"skipped: {reason}")
    template = MigratedTemplate() if args.backend == "postgres" else None
    phases: list[Samples] = []
    with workdir(args.keep, "latency") as tmp:
        async with running_stack(
            args.backend,
            tmp,
            workers=args.workers,
            log_level=args.log_level,
            redis_url=args.redis_url,
            template=template,
        ) as stack:
            watcher = Watcher(stack.base_url)
            await watcher.start()
            try:
                await probe(stack.base_url, watcher, "warm-up", 3, args.interval)
                print(f"idle: {args.samples} probes ...", flush=True)
                phases.append(
                    await probe(stack.base_url, watcher, "idle", args.samples, args.interval)
                )
                if args.load_samples > 0:
                    print(f"under load: {args.load_samples} probes ...", flush=True)
                    phases.append(await under_load(args, stack, watcher, tmp))
            finally:
                await watcher.stop()
    if template is not None:
        await template.drop()
    targets = [
        Target(
            "idle p99 mutation -> STARTED (ms)",
            phases[0].as_dict()["to_started"]["p99_ms"],
            "<=",
            20.0,
        )
    ]
    report(phases, targets, notes)
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "phases": [p.as_dict() for p in phases],
        "targets": [t.as_dict() for t in targets],
        "notes": notes,
    }


async def under_load(args: argparse.Namespace, stack: Any, watcher: Watcher, tmp: Path) -> Samples:
    load = spawn(
        "load",
        [
            PYTHON,
            "-m",
            "bench.latency",
            "--load",
            stack.base_url,
            "--entities",
            str(args.entities),
            "--clients",
            str(args.clients),
            "--load-seconds",
            str(args.max_load_seconds),
        ],
        clean_env(),
        tmp,
    )
    try:
        await asyncio.sleep(args.load_warmup)  # let the queues fill up first
        began = time.perf_counter()
        first = await count_final(stack.db)
        result = await probe(
            stack.base_url, watcher, "under load", args.load_samples, args.interval
        )
        done = await count_final(stack.db) - first
        result.load_tasks_per_s = round(done / (time.perf_counter() - began), 1)
        if not load.alive():
            raise RuntimeError(f"the load process ended early:\n{load.log_tail()}")
    finally:
        if load.alive():
            os.kill(load.pid, signal.SIGINT)
        load.stop(timeout=10)
    return result


def report(phases: list[Samples], targets: list[Target], notes: list[str]) -> None:
    rows = []
    for phase in phases:
        data = phase.as_dict()
        for name in ("mutation_response", "to_started", "to_completed"):
            stats = data[name]
            rows.append(
                (
                    phase.phase,
                    name.replace("_", " "),
                    stats["count"],
                    stats["p50_ms"],
                    stats["p95_ms"],
                    stats["p99_ms"],
                    stats["max_ms"],
                    phase.load_tasks_per_s if phase.load_tasks_per_s is not None else math.nan,
                )
            )
    print_table(
        "Latency from sending the mutation, seen by a WebSocket subscriber (ms)",
        ["phase", "until", "n", "p50", "p95", "p99", "max", "load tasks/s"],
        rows,
    )
    print_targets(targets)
    for note in notes:
        print(f"note: {note}")


# -- the load process ----------------------------------------------------------------------


async def load_main(url: str, entities: int, clients: int, seconds: float) -> None:
    """Submit one-step tasks round robin over ``entities`` as fast as the server answers,
    until SIGINT/SIGTERM or ``seconds`` have passed (a bounded loop by design)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(index: int) -> None:
            n = index
            while not stop.is_set() and time.monotonic() < deadline:
                await submit_restart(client, "load", f"w{n % entities:04d}")
                n += clients

        workers = [asyncio.create_task(one(i)) for i in range(clients)]
        await _until(stop, deadline)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def _until(stop: asyncio.Event, deadline: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await stop.wait()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Mutation -> STARTED / COMPLETED latency seen by a WebSocket subscriber, "
        "idle and under load (scenario 3). Writes bench/results/latency-<time>.json.",
    )
    parser.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on postgres (1)")
    parser.add_argument("--samples", type=int, default=200, help="idle probes (200)")
    parser.add_argument(
        "--load-samples", type=int, default=100, help="probes under load; 0 skips (100)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.02, help="pause between probes, seconds (0.02)"
    )
    parser.add_argument("--entities", type=int, default=50, help="entities of the load (50)")
    parser.add_argument("--clients", type=int, default=8, help="HTTP clients of the load (8)")
    parser.add_argument(
        "--load-warmup", type=float, default=3.0, help="seconds of load before probing (3)"
    )
    parser.add_argument(
        "--max-load-seconds",
        type=float,
        default=300.0,
        help="the load process stops by itself after this (300)",
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--log-level", default="WARNING", help="CLOUDOPS_LOG_LEVEL (WARNING)")
    parser.add_argument("--keep", action="store_true", help="keep data files and process logs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--load-seconds", type=float, default=300.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    result = await scenario(args)
    write_results("latency", result, args.results_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.load:
        asyncio.run(load_main(args.load, args.entities, args.clients, args.load_seconds))
        return 0
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
