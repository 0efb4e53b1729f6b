"""Fault injection for demos, chaos drills and tests: ``metadata.simulate``.

    {"simulate": {"failStep": "apply", "failAttempts": 2, "permanent": false}}

makes the named step fail on the first ``failAttempts`` attempts (default: every attempt).
It exercises the real retry, backoff and dead-letter paths; nothing else is faked.
"""

from __future__ import annotations

from cloudops.errors import PermanentStepError, StepError
from cloudops.handlers.base import TaskView


def injected_fault(task: TaskView, step: str) -> StepError | None:
    spec = task.metadata.get("simulate") if isinstance(task.metadata, dict) else None
    if not isinstance(spec, dict) or spec.get("failStep") != step:
        return None
    fail_attempts = spec.get("failAttempts")
    if isinstance(fail_attempts, int) and task.attempt > fail_attempts:
        return None
    message = f"simulated failure in step '{step}' (attempt {task.attempt})"
    return PermanentStepError(message) if spec.get("permanent") else StepError(message)
