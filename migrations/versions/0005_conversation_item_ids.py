"""Conversations hold each item id once: drop the later copies older versions let in.

An `item_reference` (or a replayed item with a stored id) could append an item a conversation
already held; its listing then repeated items and `after=<id>` pagination could loop. New
appends refuse or skip such items; this removes the copies already stored, keeping each id's
first position (positions only order items, so the gaps left are harmless). Data only: the
downgrade has nothing to restore.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        DELETE FROM conversation_items
         WHERE (conversation_id, position) IN (
                SELECT conversation_id, position
                  FROM (SELECT m.conversation_id, m.position,
                               row_number() OVER (PARTITION BY m.conversation_id, i.id
                                                  ORDER BY m.position) AS copy
                          FROM conversation_items AS m
                          JOIN items AS i ON i.pk = m.item_pk) AS numbered
                 WHERE copy > 1)
        """
    )


def downgrade() -> None:
    pass
