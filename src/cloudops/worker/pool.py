"""The worker: receives from the session bus and runs attempts, up to WORKER_CONCURRENCY.

A slot is taken before receiving, so the worker never locks a session it cannot run yet.
On stop it receives nothing more, lets running attempts finish within the grace period,
then interrupts the rest, which go back to QUEUED for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from sqlalchemy import select

from cloudops.bus.base import BoundInStatement, BusClosed, Delivery, SessionBus
from cloudops.db.models import Task
from cloudops.db.types import utcnow
from cloudops.domain import EventKind, TaskStatus
from cloudops.handlers.base import Services
from cloudops.handlers.registry import HandlerRegistry
from cloudops.tasks.journal import Change, Guard, Journal
from cloudops.worker.attempt import Attempt, AttemptResult, Outcome, task_view
from cloudops.worker.notices import TaskNotices
from cloudops.worker.recovery import requeue_orphan

log = logging.getLogger(__name__)


#: Seconds an ended attempt's heartbeat may take to finish the statement it is in.
HEARTBEAT_STOP_WAIT = 5.0
#: Seconds a stopping worker's receive may take to finish the claim it is in.
RECEIVE_STOP_WAIT = 5.0

#: Outcomes after which the task is final, so its project hears of it.
_ENDINGS = frozenset({Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED})


class Worker:
    def __init__(
        self,
        *,
        bus: SessionBus,
        journal: Journal,
        registry: HandlerRegistry,
        services: Services,
        concurrency: int,
        retry_base_delay: float,
        heartbeat_interval: float = 10.0,
        notices: TaskNotices | None = None,
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.registry = registry
        self.services = services
        self.concurrency = concurrency
        self.retry_base_delay = retry_base_delay
        self.heartbeat_interval = heartbeat_interval
        self.notices = notices
        self._slots = asyncio.Semaphore(concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._attempts: dict[str, Attempt] = {}
        #: The receive loop runs: a session released by an attempt's last write is this
        #: process's to claim again (see SessionBus.released_in_statement).
        self._receiving = False
        #: The receive loop is inside bus.receive(), where it must not be cancelled.
        self._in_receive = False

    @property
    def running(self) -> int:
        return len(self._attempts)

    def start(self) -> None:
        self.bus.on_cancel(self.signal_cancel)
        self._receiving = True
        self._loop_task = asyncio.create_task(self._receive_loop(), name="worker-receive")

    def signal_cancel(self, task_id: str) -> None:
        """Interrupt a running attempt of this process at once; the bus calls this for a
        cancel requested in any process."""
        attempt = self._attempts.get(task_id)
        if attempt is not None:
            attempt.cancelled.set()

    async def stop(self, grace: float) -> None:
        self._receiving = False
        if self._loop_task is not None:
            await self._end_receive_loop()
            # A session released just before may have woken only this loop, now gone.
            await self._wake_the_others()
        if self._runs:
            log.info(
                "waiting for running tasks",
                extra={"action": "worker_draining", "running": len(self._runs)},
            )
            _, pending = await asyncio.wait(set(self._runs), timeout=grace)
            for run in pending:
                run.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _end_receive_loop(self) -> None:
        """Cancelled while it waits for a slot; told to stop while it receives, since a
        receive cancelled in the middle of a claim could leave the claimed session leased
        to nobody (see SessionBus.stop_receiving). A claim that does not end (a database
        that does not answer) is cancelled after a while all the same."""
        assert self._loop_task is not None
        await self.bus.stop_receiving()
        if not self._in_receive:
            self._loop_task.cancel()
        _, stuck = await asyncio.wait({self._loop_task}, timeout=RECEIVE_STOP_WAIT)
        for loop in stuck:
            loop.cancel()
        try:
            await self._loop_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop() itself was cancelled (the loop's end is expected)

    async def _receive_loop(self) -> None:
        while True:
            await self._slots.acquire()
            self._in_receive = True
            try:
                delivery = await self.bus.receive()
            except BusClosed:
                self._slots.release()
                return
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception:
                # The loop must outlive any outage: a dead loop is a worker that silently
                # stops taking work while its process looks healthy.
                self._slots.release()
                log.exception(
                    "receiving from the bus failed; retrying",
                    extra={"action": "bus_receive_failed"},
                )
                delivery = None
            finally:
                self._in_receive = False
            if delivery is None:
                await asyncio.sleep(1.0)
                continue
            run = asyncio.create_task(
                self._handle(delivery), name=f"task-{delivery.message.task_id}"
            )
            self._runs.add(run)
            run.add_done_callback(self._finished)

    def _finished(self, run: asyncio.Task[None]) -> None:
        self._runs.discard(run)
        self._slots.release()

    async def _handle(self, delivery: Delivery) -> None:
        task_id = delivery.message.task_id
        project_id: str | None = None
        try:
            result = await self._run(delivery)
        except asyncio.CancelledError:
            attempt = self._attempts.get(task_id)
            if attempt is not None:
                with contextlib.suppress(Exception):
                    await attempt.interrupt()
            await self.bus.release(delivery)
            raise
        except Exception:
            log.exception(
                "worker failed to run a task; it runs again once its session is free",
                extra={"action": "task_run_error", "task_id": task_id},
            )
            await asyncio.sleep(1.0)  # a broken database must not become a hot loop
            with contextlib.suppress(Exception):
                await self.bus.release(delivery)
            return
        finally:
            ran = self._attempts.pop(task_id, None)
            if ran is not None:
                project_id = ran.task.project_id
        try:
            if result.released:  # by the attempt's last write, in the same statement
                # A retry leaves its task at the head until its backoff ends: every worker
                # hears of it, and the claims that find nothing say when it is due. This
                # process alone could have filled its slots by then and not know.
                claim_here = self._receiving and result.outcome != Outcome.RETRY
                await self.bus.released_in_statement(claim_here=claim_here)
            elif result.outcome == Outcome.RETRY:
                await self.bus.defer(delivery, result.run_after)
            elif result.outcome == Outcome.LOST:
                await self.bus.release(delivery)
            else:
                await self.bus.complete(delivery)
        except Exception:
            # The task's state is committed; a shared bus's lease simply expires.
            log.warning(
                "could not hand the session back",
                exc_info=True,
                extra={"action": "bus_release_failed", "task_id": task_id},
            )
        if self.notices is not None and project_id is not None and result.outcome in _ENDINGS:
            # Only a project has somewhere to send a notice.
            self.notices.task_ended(task_id, project_id)

    async def _run(self, delivery: Delivery) -> AttemptResult:
        result = await self._attempt(delivery)
        skipped = result.outcome == Outcome.SKIPPED
        if skipped and delivery.task is not None and delivery.lease is None:
            # The in-process bus's copy (its submitter's) was out of date: something
            # happened to the task while it waited. Decide from the task as it is now, as
            # a shared bus's next claim would (its session is handed back).
            result = await self._attempt(replace(delivery, task=None))
        return result

    async def _attempt(self, delivery: Delivery) -> AttemptResult:
        task_id = delivery.message.task_id
        task = delivery.task
        if task is None or task.status != TaskStatus.QUEUED:
            # Not read by the claim, or not simply next in line: read it as it is now.
            async with self.journal.db.read() as session:
                task = await session.get(Task, task_id)
        if task is not None and task.status == TaskStatus.RUNNING and delivery.lease is not None:
            # We hold the session, yet its head is RUNNING: the worker that ran it lost
            # its lease (it died or stalled). Take over as attempt + 1.
            if not await requeue_orphan(
                self.journal,
                task,
                f"worker lost its lease during attempt {task.attempt}",
                delivery.lease,
            ):
                return AttemptResult(Outcome.LOST)
            async with self.journal.db.read() as session:
                task = await session.get(Task, task_id)
        if task is None or task.status != TaskStatus.QUEUED:
            return AttemptResult(Outcome.SKIPPED)
        if task.run_after is not None and task.run_after > utcnow():
            # Its retry backoff has not run out: a claim can see the head as it was just
            # before another worker's failed attempt. Back to the bus until then.
            return AttemptResult(Outcome.RETRY, task.run_after)
        now = utcnow()
        attempt = Attempt(
            journal=self.journal,
            handler=self.registry.get(task.type),
            services=self.services,
            task=task_view(task),
            steps=[dict(s) for s in task.steps],
            retry_base_delay=self.retry_base_delay,
            lease=delivery.lease,
            start=Change(
                EventKind.STARTED,
                {
                    "status": TaskStatus.RUNNING.value,
                    "run_after": None,
                    "started_at": task.started_at or now,
                    # Unchanged, but said: STARTED's event then carries it without a
                    # read of the row before (the batch with STEP_STARTED is one UPDATE
                    # on SQLite too; the guard below makes ``task`` the current row).
                    "progress": task.progress,
                },
                message=f"attempt {task.attempt} of {task.max_attempts}",
                at=now,
            ),
            # Only if nothing happened to the task since it was read (the claim's read
            # may be a moment old).
            start_guard=Guard(
                {TaskStatus.QUEUED}, task.attempt, delivery.lease, task.last_sequence
            ),
            release=self._release_in_statement(delivery),
        )
        # Registered before STARTED commits (with the attempt's first write), so a shutdown
        # at any point after the commit finds the attempt and interrupts it (before the
        # commit its guard simply fails, and an interrupt has nothing to undo).
        self._attempts[task_id] = attempt
        done = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(delivery, attempt, done))
        try:
            return await attempt.run()
        finally:
            # Told to stop rather than cancelled: a cancel landing inside its statement
            # would hand the pool a connection with that statement still running
            # (sqlalchemy#6592), and the next user of it would fail. A heartbeat stuck
            # on a database that does not answer is cancelled after a while all the same.
            done.set()
            _, stuck = await asyncio.wait({heartbeat}, timeout=HEARTBEAT_STOP_WAIT)
            for beat in stuck:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat

    async def _wake_the_others(self) -> None:
        try:
            await self.bus.released_in_statement(claim_here=False)
        except Exception:
            log.warning(
                "could not wake the other workers",
                exc_info=True,
                extra={"action": "bus_wake_failed"},
            )

    def _release_in_statement(self, delivery: Delivery) -> BoundInStatement | None:
        part = self.bus.release_in_statement
        if part is None or delivery.lease is None:
            return None
        return part.bind(delivery.lease)

    async def _heartbeat(self, delivery: Delivery, attempt: Attempt, done: asyncio.Event) -> None:
        """Keep the session's lease while the attempt runs; a lost lease stops it (its
        fenced writes would fail anyway, this only makes it stop sooner)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_interval):
                    await done.wait()
            if done.is_set():
                return
            try:
                alive = await self.bus.heartbeat(delivery)
            except Exception:
                log.warning(
                    "lease heartbeat failed",
                    exc_info=True,
                    extra={"action": "heartbeat_failed", "task_id": delivery.message.task_id},
                )
                continue
            if not alive:
                log.warning(
                    "lease lost",
                    extra={"action": "lease_lost", "task_id": delivery.message.task_id},
                )
                attempt.cancelled.set()
                return
            if await self._cancel_requested(delivery.message.task_id):
                # The cancel signal was missed (e.g. the bus listener was reconnecting).
                attempt.cancelled.set()
                return

    async def _cancel_requested(self, task_id: str) -> bool:
        try:
            async with self.journal.db.read() as session:
                flag = await session.scalar(select(Task.cancel_requested).where(Task.id == task_id))
        except Exception:
            return False
        return bool(flag)
