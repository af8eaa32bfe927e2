"""Initial schema: responses and their items.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PrimaryKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("previous_response_id", sa.String(96), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("history_pks", sa.JSON(), nullable=False),
        sa.Column("input_pks", sa.JSON(), nullable=False),
        sa.Column("output_pks", sa.JSON(), nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(256), nullable=False),
        sa.Column("response_id", sa.String(96), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_items_id", "items", ["id"])
    op.create_index("ix_items_response_id", "items", ["response_id"])


def downgrade() -> None:
    op.drop_index("ix_items_response_id", table_name="items")
    op.drop_index("ix_items_id", table_name="items")
    op.drop_table("items")
    op.drop_table("responses")
