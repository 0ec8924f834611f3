"""Thread archiving: ``threads.archived_at`` and an index for the archived filter.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

The upgrade adds a nullable column, which SQLite and D1 do in place
(``ALTER TABLE ... ADD COLUMN``), so no row is rewritten. The downgrade
rebuilds the threads table without the column (batch mode: create a copy,
copy the rows with an explicit column list, drop, rename). All of it runs
in one transaction on SQLite and one batch request on D1, and no table has
foreign keys, so no ``ON DELETE`` action can run during the rebuild.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from d1store.migrations.environment import table_prefix

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    p = table_prefix()
    op.add_column(f"{p}threads", sa.Column("archived_at", sa.Text(), nullable=True))
    op.create_index(f"{p}ix_threads_resource_archived", f"{p}threads", ["resource_id", "archived_at"])


def downgrade() -> None:
    p = table_prefix()
    op.drop_index(f"{p}ix_threads_resource_archived", table_name=f"{p}threads")
    # copy_from gives the rebuild the table as this revision left it, so
    # nothing is reflected (reads inside a D1 batch would see the old
    # shape) and the primary key keeps its name.
    with op.batch_alter_table(f"{p}threads", copy_from=_threads(p), recreate="always") as batch:
        batch.drop_column("archived_at")


def _threads(p: str) -> sa.Table:
    """Build the threads table as of this revision, without the index it adds."""
    table = sa.Table(
        f"{p}threads",
        sa.MetaData(),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.Column("archived_at", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"{p}threads_pkey"),
    )
    sa.Index(f"{p}ix_threads_resource_created", table.c.resource_id, table.c.created_at, table.c.id)
    sa.Index(f"{p}ix_threads_resource_updated", table.c.resource_id, table.c.updated_at, table.c.id)
    sa.Index(f"{p}ix_threads_created", table.c.created_at, table.c.id)
    sa.Index(f"{p}ix_threads_updated", table.c.updated_at, table.c.id)
    return table
