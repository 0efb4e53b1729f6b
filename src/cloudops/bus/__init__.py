"""The session bus: schedules tasks per entity (FIFO, one in flight per session)."""

from cloudops.bus.base import Delivery, SessionBus, TaskMessage

__all__ = ["Delivery", "SessionBus", "TaskMessage"]
