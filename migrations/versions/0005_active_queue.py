"""active queue index and a session for every entity with work

The PostgreSQL bus claims in one statement that walks the active (QUEUED or RUNNING)
tasks in queue order and joins each to its entity's session row. The partial index keeps
that walk to the active tasks, however many finished ones are stored; the session rows
are now created with an entity's first task, and this fills them in for tasks queued
before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status IN ('QUEUED', 'RUNNING')")


def upgrade() -> None:
    op.create_index(
        "ix_tasks_active_queue",
        "tasks",
        ["queue_seq"],
        unique=False,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    op.execute(
        """
        INSERT INTO bus_sessions (entity_id, fence)
        SELECT DISTINCT t.entity_id, 0 FROM tasks t
        WHERE t.status IN ('QUEUED', 'RUNNING')
          AND NOT EXISTS (SELECT 1 FROM bus_sessions s WHERE s.entity_id = t.entity_id)
        """
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_active_queue", table_name="tasks")
