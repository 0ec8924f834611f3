"""The Alembic version table of a prefix, and the statements that stamp it.

This module does not import Alembic, so that ``store.init()`` can stamp a
new database without paying for Alembic's import.
"""

from __future__ import annotations

import re

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, literal, select
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from d1store.backends.base import Statement
from d1store.errors import BackendError
from d1store.schema import validate_prefix

__all__ = [
    "HEAD_REVISION",
    "OUTDATED_MARKER",
    "REVISIONS",
    "build_version_table",
    "check_statements",
    "outdated_revision",
    "stamp_statement",
    "version_table_name",
]

#: The revisions in ``d1store/migrations/versions``, oldest first. A test
#: keeps this equal to the order Alembic computes from the revision files.
REVISIONS = ("0001", "0002")
#: The revision that ``store.init()`` stamps on a database it creates.
HEAD_REVISION = REVISIONS[-1]

#: Text that the check of an outdated schema puts into the database's error
#: message, followed by the revision the database is at.
OUTDATED_MARKER = "d1store-outdated-schema:"
_OUTDATED = re.compile(re.escape(OUTDATED_MARKER) + r"([0-9A-Za-z_]+)")


def version_table_name(prefix: str) -> str:
    """Return the name of the Alembic version table of ``prefix``."""
    return f"{validate_prefix(prefix)}alembic_version"


def build_version_table(prefix: str) -> Table:
    """Build the version table as Alembic 1.20 creates it (``DefaultImpl.version_table_impl``).

    One ``version_num`` VARCHAR(32) column, primary key ``{name}_pkc``.
    """
    name = version_table_name(prefix)
    return Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


def check_statements(prefix: str, dialect: Dialect) -> list[Statement]:
    """Return statements that create the version table and fail if the schema is at an older revision.

    ``init()`` runs them before its DDL: ``CREATE ... IF NOT EXISTS`` cannot
    add the columns of later revisions, so an outdated schema needs
    ``d1store db upgrade``. A newer revision passes, so that older code
    still starts against a database that newer code migrated.
    """
    table = build_version_table(prefix)
    create = CreateTable(table, if_not_exists=True).compile(dialect=dialect)
    name = dialect.identifier_preparer.format_table(table)
    older = ", ".join(f"'{revision}'" for revision in REVISIONS[:-1])
    # SQLite has no RAISE outside triggers: an invalid JSON path that names
    # the revision fails the statement, and with it the whole batch.
    check = (
        f"SELECT json_extract('{{}}', '{OUTDATED_MARKER}' || version_num) FROM {name} "
        f"WHERE version_num IN ({older})"
    )
    return [Statement(str(create)), Statement(check)]


def stamp_statement(prefix: str, dialect: Dialect, revision: str = HEAD_REVISION) -> Statement:
    """Return a statement that stamps ``revision`` unless the version table has a row.

    It is idempotent, so it can run in every ``init()``: a database that
    Alembic migrated keeps its version.
    """
    table = build_version_table(prefix)
    stamp = table.insert().from_select(
        ["version_num"],
        select(literal(revision)).where(~select(table.c.version_num).exists()),
    )
    compiled = stamp.compile(dialect=dialect)
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    return Statement(str(compiled), params)


def outdated_revision(error: BackendError) -> str | None:
    """Return the revision named by a failed :func:`check_statements` check, else ``None``."""
    match = _OUTDATED.search(error.message)
    return match.group(1) if match else None
