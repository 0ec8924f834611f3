"""Alembic support for the ``cloudflare_d1`` dialect.

Alembic looks up its implementation by dialect name and raises
``KeyError: 'cloudflare_d1'`` without one. D1 runs SQLite, so
:class:`D1Impl` is Alembic's SQLite implementation under the D1 name: batch
mode (table rebuilds) and non-transactional DDL, which makes Alembic open
one transaction per revision. Importing this module registers it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alembic.ddl.sqlite import SQLiteImpl
from sqlalchemy import Delete, Update
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.expression import TableClause

from d1store.backends.base import Statement
from d1store.migrations.batching import VERSION_GUARD_MARKER, BatchConnection

__all__ = ["D1Impl"]


class D1Impl(SQLiteImpl):
    """Alembic operations for Cloudflare D1, with a version-row check that runs inside the batch."""

    __dialect__ = "cloudflare_d1"

    def _exec(
        self,
        construct: Executable | str,
        execution_options: Mapping[str, Any] | None = None,
        multiparams: Sequence[Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> CursorResult[Any] | None:
        if params is None:
            result = super()._exec(construct, execution_options, multiparams)
        else:
            result = super()._exec(construct, execution_options, multiparams, params)
        if self._changes_version_row(construct):
            self._check_one_row_changed()
        return result

    def _changes_version_row(self, construct: Executable | str) -> bool:
        # A held-back write has no row count, so Alembic's own check that the
        # version UPDATE or DELETE matched one row is off (the engine of
        # d1store.migrations.connect reports supports_sane_rowcount=False);
        # the check then runs in the batch.
        if self.as_sql or self.dialect.supports_sane_rowcount:
            return False
        if not isinstance(construct, (Update, Delete)):
            return False
        table = construct.table
        return isinstance(table, TableClause) and table.name == self.context_opts.get("version_table")

    def _check_one_row_changed(self) -> None:
        # SQLite has no RAISE outside triggers: an invalid JSON path fails
        # the statement, and with it the whole batch, when changes() != 1.
        # The check is a SELECT, which BatchConnection would send at once,
        # so it is held back explicitly, right after the version write.
        assert self.connection is not None
        dbapi_connection = self.connection.connection.dbapi_connection
        if not isinstance(dbapi_connection, BatchConnection):
            return
        table = str(self.context_opts.get("version_table"))
        marker = f"{VERSION_GUARD_MARKER} {table}".replace("'", "''")
        dbapi_connection.hold(Statement(f"SELECT json_extract('{{}}', '{marker}') WHERE changes() <> 1"))
