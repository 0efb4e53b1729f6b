"""The event record survives the broadcast round trip unchanged (stored == broadcast)."""

from __future__ import annotations

from datetime import UTC, datetime

from cloudops.domain import EventKind, TaskStatus, TaskType
from cloudops.events.records import (
    ArtifactRecord,
    EventRecord,
    events_from_json,
    joined_json,
)


def test_event_record_round_trips_through_json() -> None:
    at = datetime(2026, 11, 27, 12, 0, 1, 123456, tzinfo=UTC)
    record = EventRecord(
        id="e1",
        task_id="t1",
        sequence=7,
        kind=EventKind.ARTIFACT,
        at=at,
        status=TaskStatus.RUNNING,
        progress=0.375,
        entity_id="env-1",
        type=TaskType.DEPLOYMENT,
        project_id="p1",
        step={"index": 1, "name": "plan", "status": "RUNNING"},
        message="deployment_plan artifacts/t1/plan.json (12 bytes)",
        artifact=ArtifactRecord(
            "a1", "t1", "deployment_plan", "artifacts/t1/plan.json", 12, "ab" * 32, at
        ),
    )
    assert EventRecord.from_json(record.to_json()) == record


def test_record_without_step_or_artifact() -> None:
    record = EventRecord(
        "e",
        "t",
        1,
        EventKind.QUEUED,
        datetime.now(UTC),
        TaskStatus.QUEUED,
        0.0,
        "k8s:a/b",
        TaskType.RESTART_WORKLOAD,
        None,
        None,
        None,
        None,
    )
    assert EventRecord.from_json(record.to_json()) == record


def test_events_that_go_out_together_make_one_message_and_come_back_in_order() -> None:
    records = [
        EventRecord(
            f"e{n}",
            "t",
            n,
            EventKind.LOG,
            datetime.now(UTC),
            TaskStatus.RUNNING,
            n / 10,
            "k8s:a/b",
            TaskType.RESTART_WORKLOAD,
            None,
            {"name": "restart"},
            f"line {n}",
            None,
        )
        for n in range(1, 4)
    ]
    text = joined_json([record.to_json() for record in records])
    assert text.startswith("[")
    assert events_from_json(text) == records
    one = joined_json([records[0].to_json()])
    assert one == records[0].to_json()  # one event: as it always was
    assert events_from_json(one) == records[:1]
