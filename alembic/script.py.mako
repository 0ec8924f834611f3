"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from d1store.migrations.environment import table_prefix

revision = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: tuple[str, ...] | None = ${repr(branch_labels)}
depends_on: tuple[str, ...] | None = ${repr(depends_on)}


def upgrade() -> None:
    p = table_prefix()  # every table and index name starts with it: f"{p}threads"
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    p = table_prefix()
    ${downgrades if downgrades else "pass"}
