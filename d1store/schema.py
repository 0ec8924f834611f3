"""The database schema, built for a table-name prefix.

:func:`build_metadata` is the single definition of every table and index.
``store.init()`` and the Alembic environment both use it, so the schema
created either way is the same.

There are no foreign keys on purpose. D1 always enforces them, SQLite
through Python's driver does not, and D1 runs ``ON DELETE`` actions even
while a migration rebuilds a table, which would silently delete child rows.
The repositories keep references intact instead: every write that needs a
parent checks for it in the same atomic batch, and deletes cascade
explicitly.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sqlalchemy import Column, Index, MetaData, PrimaryKeyConstraint, Table, Text

from d1store.errors import ValidationError

__all__ = ["ENTITY_TYPES", "Tables", "build_metadata", "build_tables", "validate_prefix"]

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")

#: Entity types that carry metadata, and the table each one lives in.
ENTITY_TYPES: dict[str, str] = {"thread": "threads", "message": "messages", "resource": "resources"}


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it may start table names, else raise ``ValueError``.

    SQLite and D1 compare table names without regard to case, so ``dev_``
    and ``DEV_`` name the same tables: use one spelling per store.
    """
    if not isinstance(prefix, str):
        raise ValidationError(f"table_prefix must be a string, got {prefix!r}")
    if prefix and not _PREFIX.fullmatch(prefix):
        raise ValidationError(
            f"invalid table_prefix {prefix!r}: use up to 32 ASCII letters, digits and "
            "underscores, starting with a letter or underscore (for example 'dev_')"
        )
    # SQLite reserves names starting with "sqlite_" and D1 those starting
    # with "_cf_"; both compare names without regard to case.
    for reserved in ("sqlite_", "_cf_"):
        if prefix.lower().startswith(reserved):
            raise ValidationError(
                f"invalid table_prefix {prefix!r}: names starting with {reserved!r} are reserved "
                "by SQLite or D1; choose another prefix (for example 'dev_')"
            )
    return prefix


@dataclass(frozen=True)
class Tables:
    """The four tables of one prefix, and the ``MetaData`` that contains them."""

    prefix: str
    metadata: MetaData
    threads: Table
    messages: Table
    entries: Table
    resources: Table

    def for_entity(self, entity_type: str) -> Table:
        """Return the table that stores entities of ``entity_type``."""
        return {"thread": self.threads, "message": self.messages, "resource": self.resources}[entity_type]


def build_metadata(prefix: str = "") -> MetaData:
    """Build the ``MetaData`` with every table and index for ``prefix``."""
    return build_tables(prefix).metadata


@functools.cache
def build_tables(prefix: str = "") -> Tables:
    """Build (once per prefix) the tables and indexes of a store."""
    p = validate_prefix(prefix)
    metadata = MetaData()
    threads = Table(
        f"{p}threads",
        metadata,
        Column("id", Text, nullable=False),
        Column("resource_id", Text, nullable=False),
        Column("title", Text, nullable=False, server_default=""),
        Column("created_at", Text, nullable=False),
        Column("updated_at", Text, nullable=False),
        # NULL while the thread is active. Last, because Alembic revision
        # 0002 adds it with ALTER TABLE, which appends the column.
        Column("archived_at", Text, nullable=True),
        PrimaryKeyConstraint("id", name=f"{p}threads_pkey"),
    )
    Index(f"{p}ix_threads_resource_created", threads.c.resource_id, threads.c.created_at, threads.c.id)
    Index(f"{p}ix_threads_resource_updated", threads.c.resource_id, threads.c.updated_at, threads.c.id)
    Index(f"{p}ix_threads_created", threads.c.created_at, threads.c.id)
    Index(f"{p}ix_threads_updated", threads.c.updated_at, threads.c.id)
    # Counts a resource's active or archived threads without reading the rows.
    Index(f"{p}ix_threads_resource_archived", threads.c.resource_id, threads.c.archived_at)

    messages = Table(
        f"{p}messages",
        metadata,
        Column("id", Text, nullable=False),
        Column("thread_id", Text, nullable=False),
        Column("resource_id", Text, nullable=True),
        Column("role", Text, nullable=False),
        Column("type", Text, nullable=False, server_default="v2"),
        Column("content", Text, nullable=False),
        Column("created_at", Text, nullable=False),
        PrimaryKeyConstraint("id", name=f"{p}messages_pkey"),
    )
    Index(f"{p}ix_messages_thread_created", messages.c.thread_id, messages.c.created_at, messages.c.id)

    # One row per metadata entry. ``value`` is canonical JSON text, so a
    # filter on it compares type and value at once ("1" never matches 1).
    entries = Table(
        f"{p}metadata",
        metadata,
        Column("entity_type", Text, nullable=False),
        Column("entity_id", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("value", Text, nullable=False),
        PrimaryKeyConstraint("entity_type", "entity_id", "key", name=f"{p}metadata_pkey"),
    )
    # Key first: an index that started with entity_type would also serve
    # "entity_type = ? AND entity_id IN (...)", and SQLite, finding it
    # covering, would prefer it to the primary key and read every entry of
    # that type.
    Index(
        f"{p}ix_metadata_lookup", entries.c.key, entries.c.value, entries.c.entity_type, entries.c.entity_id
    )

    resources = Table(
        f"{p}resources",
        metadata,
        Column("id", Text, nullable=False),
        Column("working_memory", Text, nullable=True),
        Column("created_at", Text, nullable=False),
        Column("updated_at", Text, nullable=False),
        PrimaryKeyConstraint("id", name=f"{p}resources_pkey"),
    )
    return Tables(p, metadata, threads, messages, entries, resources)
