"""The ``cloudops`` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudops import __version__
from cloudops.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    import uvicorn


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from cloudops.logs import configure_logging
    from cloudops.web.app import create_app

    configure_logging(settings.log_level)
    app = create_app(settings, run_worker=not args.no_worker)
    config = server_config(app, settings, host=args.host, port=args.port)
    config.load()  # imports the protocol modules now, so that they are frozen below
    _freeze_startup_heap()
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it shut down on once it is done; a graceful stop on
    # SIGTERM should still end with exit code 0, so that re-raise must find a no-op handler.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    server.run()
    return 0 if server.started else 1


def _freeze_startup_heap() -> None:
    """Move what start-up left alive (modules, the GraphQL schema, SQLAlchemy's metadata:
    ~130,000 objects that live as long as the process) out of the cyclic collector's
    reach. Otherwise every full collection rescans them all — 150-175 ms measured here, a
    pause that every request and subscriber in flight waits out."""
    gc.collect()
    gc.freeze()
    logging.getLogger("cloudops").info(
        "start-up heap frozen: %d objects left out of garbage collection", gc.get_freeze_count()
    )


def server_config(
    app: Any, settings: Settings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    """How ``cloudops serve`` runs the app under uvicorn (the API tests use it too)."""
    import uvicorn

    from cloudops.web.websocket_protocol import CloudOpsWebSocketProtocol

    return uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        lifespan="on",
        ws=CloudOpsWebSocketProtocol,
        ws_per_message_deflate=settings.ws_compression,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
    )


def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    from cloudops.logs import configure_logging
    from cloudops.runtime import Runtime
    from cloudops.settings import BusKind

    configure_logging(settings.log_level)
    if settings.bus is not BusKind.POSTGRES:
        print(
            "cloudops worker: a separate worker needs the shared bus "
            "(CLOUDOPS_BUS=postgres with a PostgreSQL CLOUDOPS_DATABASE_URL); "
            "on the embedded default, `cloudops serve` runs the worker in-process",
            file=sys.stderr,
        )
        return 2

    async def run() -> None:
        runtime = Runtime.build(settings, run_worker=True, serves_subscribers=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        _freeze_startup_heap()
        logging.getLogger("cloudops").info(
            "worker running on the %s event loop", type(loop).__module__.partition(".")[0]
        )
        try:
            await stop.wait()
        finally:
            await runtime.stop()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run())
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop ``cloudops serve`` runs on, as uvicorn picks it: uvloop where it is
    installed (uvicorn[standard] brings it), else asyncio's own. ``cloudops worker`` and
    the throughput benchmark's in-process service layer run on the same one (a busy
    worker used about 4 % more CPU on asyncio's loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from cloudops.db.engine import Database
    from cloudops.db.migrate import migrate

    async def run() -> None:
        db = Database(settings.database_url)
        try:
            await migrate(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    print(f"database at head: {settings.database_url}")
    return 0


def _export_schema(settings: Settings, args: argparse.Namespace) -> int:
    from strawberry.printer import print_schema

    from cloudops.graphql.schema import build_schema

    text = print_schema(build_schema(settings)) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudops",
        description="CloudOps control plane. Settings come from CLOUDOPS_* environment "
        "variables or a .env file (see README).",
    )
    parser.add_argument("--version", action="version", version=f"cloudops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the API and a worker in one process (migrates the database first)",
        description="Run the HTTP API and, unless --no-worker, a worker in this process. "
        "The database is migrated at start.",
    )
    serve.add_argument("--host", help="interface to listen on (default CLOUDOPS_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default CLOUDOPS_PORT, 5056)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="serve the API only; tasks run in separate worker processes",
    )
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker",
        help="run a worker only (needs CLOUDOPS_BUS=postgres); scale out with more",
        description="Run tasks from the shared PostgreSQL bus, without serving HTTP. Start as "
        "many as you like; SIGTERM drains running steps within CLOUDOPS_SHUTDOWN_GRACE.",
    )
    worker.set_defaults(run=_worker)

    mig = commands.add_parser(
        "migrate",
        help="bring the database schema to the latest version",
        description="Apply every pending Alembic migration and exit.",
    )
    mig.set_defaults(run=_migrate)

    export = commands.add_parser(
        "export-schema",
        help="write the GraphQL schema (SDL) that the code serves",
        description="Print the schema the server serves, as SDL. The repository's "
        "schema.graphql is this output; tests fail when it is stale.",
    )
    export.add_argument(
        "--output", "-o", default="-", help="file to write (default: standard output)"
    )
    export.set_defaults(run=_export_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"cloudops: bad setting: {exc}", file=sys.stderr)
        return 2
    result: int = args.run(settings, args)
    return result


if __name__ == "__main__":
    sys.exit(main())
