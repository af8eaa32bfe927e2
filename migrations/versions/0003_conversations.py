"""Conversations: a conversation row and its ordered membership of stored items.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("next_position", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "conversation_items",
        sa.Column("conversation_id", sa.String(96), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("item_pk", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conversation_items")
    op.drop_table("conversations")
