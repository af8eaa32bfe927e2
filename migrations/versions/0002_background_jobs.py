"""Background mode: a durable job queue, persisted stream events, and an owner on every row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The owning project (tenant) of every stored object; '' is the open (key-less) mode.
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("background", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("stream", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "jobs",
        sa.Column("response_id", sa.String(96), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
    )
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"])
    op.create_table(
        "response_events",
        sa.Column("response_id", sa.String(96), primary_key=True),
        sa.Column("sequence_number", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("response_events")
    op.drop_index("ix_jobs_status_created_at", table_name="jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("project")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("stream")
        batch.drop_column("background")
        batch.drop_column("project")
