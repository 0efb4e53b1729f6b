"""bus session holds a task

The PostgreSQL bus records which task a session's holder was handed, so that cancelling a
task can tell "in flight" from "queued" exactly.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bus_sessions") as batch:
        batch.add_column(sa.Column("task_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bus_sessions") as batch:
        batch.drop_column("task_id")
