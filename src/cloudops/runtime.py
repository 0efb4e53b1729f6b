"""Wiring: builds the control plane's parts from the settings and starts and stops them.

Both ``cloudops serve`` and the tests go through here, so what is tested is what runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cloudops.bus.base import SessionBus
from cloudops.bus.memory import InMemorySessionBus
from cloudops.db.engine import Database
from cloudops.db.migrate import migrate
from cloudops.events.broadcast import create_broadcast
from cloudops.events.hub import EventHub
from cloudops.handlers.base import Services
from cloudops.handlers.registry import HandlerRegistry, default_registry
from cloudops.integrations.artifacts import LocalArtifactStore
from cloudops.integrations.kubernetes import SimulatedKubernetes
from cloudops.reaper import SandboxReaper
from cloudops.services.projects import ProjectService
from cloudops.services.tasks import TaskService
from cloudops.settings import BusKind, Settings
from cloudops.tasks.journal import Journal
from cloudops.worker.notices import TaskNotices, build_notifiers
from cloudops.worker.pool import Worker
from cloudops.worker.recovery import republish_queued, requeue_orphans

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dependencies:
    """The checks that health reports (``/healthz`` and the GraphQL ``health`` query), and
    the status they make: one rule for both."""

    database: bool
    broadcast_connected: bool

    @property
    def status(self) -> str:
        return "ok" if self.database and self.broadcast_connected else "degraded"


@dataclass
class Runtime:
    settings: Settings
    db: Database
    hub: EventHub
    bus: SessionBus
    journal: Journal
    registry: HandlerRegistry
    services: Services
    tasks: TaskService
    projects: ProjectService
    run_worker: bool = True
    worker: Worker | None = None
    notices: TaskNotices | None = None
    reaper: SandboxReaper | None = None
    _started: bool = field(default=False, init=False)

    @classmethod
    def build(
        cls, settings: Settings, *, run_worker: bool = True, serves_subscribers: bool = True
    ) -> Runtime:
        """``serves_subscribers=False``: a process without the API (``cloudops worker``)
        publishes events but never receives them."""
        db = Database(settings.database_url, pool_size=settings.db_pool_size)
        hub = EventHub(
            lambda: create_broadcast(settings.broadcast_url),
            buffer_size=settings.subscriber_buffer,
            heartbeat_interval=settings.broadcast_heartbeat,
            serves_subscribers=serves_subscribers,
        )
        bus: SessionBus
        if settings.bus is BusKind.POSTGRES:
            # Imported here: the embedded default does without asyncpg and the dialect.
            from cloudops.bus.postgres import PostgresSessionBus

            bus = PostgresSessionBus(
                db, lease_seconds=settings.lease_seconds, poll_interval=settings.bus_poll_interval
            )
        else:
            bus = InMemorySessionBus()
        journal = Journal(db, hub)
        artifacts = LocalArtifactStore(settings.data_dir)
        registry = default_registry(settings.data_dir)
        services = Services(
            db=db,
            artifacts=artifacts,
            kubernetes=SimulatedKubernetes(db),
            step_delay=settings.step_delay,
        )
        worker = None
        notices = None
        if run_worker:
            notices = TaskNotices(db, build_notifiers(settings))
            worker = Worker(
                bus=bus,
                journal=journal,
                registry=registry,
                services=services,
                concurrency=settings.worker_concurrency,
                retry_base_delay=settings.retry_base_delay,
                heartbeat_interval=settings.lease_seconds / 3,
                notices=notices,
            )
        tasks = TaskService(
            journal=journal,
            bus=bus,
            registry=registry,
            artifacts=artifacts,
        )
        return cls(
            settings=settings,
            db=db,
            hub=hub,
            bus=bus,
            journal=journal,
            registry=registry,
            services=services,
            tasks=tasks,
            projects=ProjectService(db),
            run_worker=run_worker,
            worker=worker,
            notices=notices,
            reaper=SandboxReaper(tasks, settings.reaper_interval),
        )

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await migrate(self.db)
        await self.hub.start()
        recovered = queued = 0
        if isinstance(self.bus, InMemorySessionBus):
            # The in-process bus died with the last process: rebuild it. A shared bus
            # needs nothing: leases of dead workers expire and their tasks are taken over.
            recovered = await requeue_orphans(self.journal)
            queued = await republish_queued(self.journal, self.bus)
        log.info(
            "control plane started",
            extra={
                "action": "started",
                "bus": self.bus.name,
                "broadcast": self.hub.backend_name,
                "recovered": recovered,
                "queued": queued,
                "database": self.db.dialect,
            },
        )
        if self.worker is not None:
            self.worker.start()
        if self.reaper is not None:
            self.reaper.start()
        self._started = True

    async def dependencies(self) -> Dependencies:
        return Dependencies(await self.db.ping(), self.hub.connected)

    async def stop(self) -> None:
        if not self._started:
            await self.db.dispose()
            return
        if self.reaper is not None:
            await self.reaper.stop()
        if self.worker is not None:
            await self.worker.stop(self.settings.shutdown_grace)
        if self.notices is not None:
            await self.notices.close(self.settings.shutdown_grace)
        await self.bus.close()
        await self.hub.stop()
        await self.db.dispose()
        self._started = False
        log.info("control plane stopped", extra={"action": "stopped"})
