"""postgres bus sessions

Leases for the PostgreSQL session bus, and (on PostgreSQL) the sequence that numbers
queue positions, since concurrent writers there cannot use max()+1.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bus_sessions",
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entity_id", name=op.f("pk_bus_sessions")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE IF NOT EXISTS task_queue_seq")
        op.execute(
            "SELECT setval('task_queue_seq', COALESCE((SELECT max(queue_seq) FROM tasks), 0) + 1,"
            " false)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS task_queue_seq")
    op.drop_table("bus_sessions")
