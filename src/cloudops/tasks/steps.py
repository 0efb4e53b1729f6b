"""Step state as stored in ``tasks.steps`` and carried by events (the API's TaskStep)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudops.domain import StepStatus

StepState = dict[str, Any]


def fresh_plan(names: Sequence[str]) -> list[StepState]:
    return [
        {
            "index": i,
            "name": name,
            "status": StepStatus.PENDING.value,
            "progress": 0.0,
            "message": None,
            "startedAt": None,
            "finishedAt": None,
        }
        for i, name in enumerate(names)
    ]


def overall_progress(steps: Sequence[StepState]) -> float:
    """Mean of the steps' progress; a SKIPPED step counts as done."""
    if not steps:
        return 1.0
    total = 0.0
    for step in steps:
        if step["status"] in (StepStatus.COMPLETED, StepStatus.SKIPPED):
            total += 1.0
        else:
            total += float(step["progress"])
    return round(total / len(steps), 6)


def stamp(at: datetime) -> str:
    return at.isoformat()
