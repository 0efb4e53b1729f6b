"""The event record: exactly what is stored in ``task_events`` and what is broadcast.

It carries every field the API's ``TaskEvent`` exposes (the artifact included), so a
subscriber renders it without a database query, and it is serialized once per event,
not once per subscriber.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudops.db.models import Artifact, TaskEvent
from cloudops.domain import EventKind, TaskStatus, TaskType


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    id: str
    task_id: str
    kind: str
    path: str
    size_bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Artifact) -> ArtifactRecord:
        return cls(
            id=row.id,
            task_id=row.task_id,
            kind=row.kind,
            path=row.path,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: str
    task_id: str
    sequence: int
    kind: EventKind
    at: datetime
    status: TaskStatus
    progress: float
    entity_id: str
    type: TaskType
    project_id: str | None
    step: dict[str, Any] | None
    message: str | None
    artifact: ArtifactRecord | None

    @classmethod
    def from_row(cls, row: TaskEvent, artifact: Artifact | None = None) -> EventRecord:
        return cls(
            id=row.id,
            task_id=row.task_id,
            sequence=row.sequence,
            kind=EventKind(row.kind),
            at=row.at,
            status=TaskStatus(row.status),
            progress=row.progress,
            entity_id=row.entity_id,
            type=TaskType(row.type),
            project_id=row.project_id,
            step=row.step,
            message=row.message,
            artifact=ArtifactRecord.from_row(artifact) if artifact is not None else None,
        )

    def to_json(self) -> str:
        # Field by field rather than dataclasses.asdict, which deep-copies the step dict:
        # this runs once per event on the hot path.
        artifact = self.artifact
        data = {
            "id": self.id,
            "task_id": self.task_id,
            "sequence": self.sequence,
            "kind": self.kind.value,
            "at": self.at.isoformat(),
            "status": self.status.value,
            "progress": self.progress,
            "entity_id": self.entity_id,
            "type": self.type.value,
            "project_id": self.project_id,
            "step": self.step,
            "message": self.message,
            "artifact": None
            if artifact is None
            else {
                "id": artifact.id,
                "task_id": artifact.task_id,
                "kind": artifact.kind,
                "path": artifact.path,
                "size_bytes": artifact.size_bytes,
                "sha256": artifact.sha256,
                "created_at": artifact.created_at.isoformat(),
            },
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EventRecord:
        return cls._from_data(json.loads(text))

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> EventRecord:
        artifact = data.pop("artifact")
        if artifact is not None:
            artifact["created_at"] = datetime.fromisoformat(artifact["created_at"])
            artifact = ArtifactRecord(**artifact)
        return cls(
            **{
                **data,
                "kind": EventKind(data["kind"]),
                "status": TaskStatus(data["status"]),
                "type": TaskType(data["type"]),
                "at": datetime.fromisoformat(data["at"]),
                "artifact": artifact,
            }
        )


def joined_json(texts: list[str]) -> str:
    """One broadcast message for events that go out together, from their ``to_json``
    texts: an event's object, or an array of them."""
    return texts[0] if len(texts) == 1 else f"[{','.join(texts)}]"


def events_from_json(text: str) -> list[EventRecord]:
    """The events of one broadcast message (see ``joined_json``)."""
    data = json.loads(text)
    if isinstance(data, list):
        return [EventRecord._from_data(item) for item in data]
    return [EventRecord._from_data(data)]
