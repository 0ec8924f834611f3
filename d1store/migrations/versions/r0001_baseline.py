"""Baseline: threads, messages, metadata and resources.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

The tables are written out here instead of imported from ``d1store.schema``,
because this revision must keep creating the first schema after the schema
module moves on. There are no foreign keys, on purpose: see
``d1store.schema``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from d1store.migrations.environment import table_prefix

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}threads",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"{p}threads_pkey"),
    )
    op.create_index(f"{p}ix_threads_created", f"{p}threads", ["created_at", "id"])
    op.create_index(f"{p}ix_threads_resource_created", f"{p}threads", ["resource_id", "created_at", "id"])
    op.create_index(f"{p}ix_threads_resource_updated", f"{p}threads", ["resource_id", "updated_at", "id"])
    op.create_index(f"{p}ix_threads_updated", f"{p}threads", ["updated_at", "id"])

    op.create_table(
        f"{p}messages",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False, server_default="v2"),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"{p}messages_pkey"),
    )
    op.create_index(f"{p}ix_messages_thread_created", f"{p}messages", ["thread_id", "created_at", "id"])

    op.create_table(
        f"{p}metadata",
        sa.Column("entity_type", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entity_type", "entity_id", "key", name=f"{p}metadata_pkey"),
    )
    op.create_index(f"{p}ix_metadata_lookup", f"{p}metadata", ["key", "value", "entity_type", "entity_id"])

    op.create_table(
        f"{p}resources",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("working_memory", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"{p}resources_pkey"),
    )


def downgrade() -> None:
    p = table_prefix()
    # Dropping a table drops its indexes too.
    for name in ("resources", "metadata", "messages", "threads"):
        op.drop_table(f"{p}{name}")
