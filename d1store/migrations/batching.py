"""A DBAPI connection for Alembic on D1 that sends each transaction as one batch.

The ``sqlalchemy-cloudflare-d1`` DBAPI (0.4.1) sends every statement as its
own request and its ``commit()`` and ``rollback()`` do nothing, so a
revision that fails halfway stays half applied. :class:`BatchConnection`
sends reads (reflection, ``PRAGMA``, ``SELECT``) at once through
:class:`~d1store.backends.d1.D1Backend`, holds back every other statement,
and sends the held statements as ONE D1 batch at ``commit()``. D1 runs a
batch as one transaction, so a revision and its version-table update are
applied together or not at all. ``rollback()`` discards the held
statements, which really undoes them because nothing was sent.

Consequences for revision code:

* Reads inside a transaction see the database as it was before it: a
  ``SELECT`` after an ``INSERT`` of the same revision does not see the row,
  and reflecting a table that the revision already changed returns the old
  shape.
* A failing write is reported at commit, by D1's message, without the
  failing statement.
* A held write has no row count (``rowcount`` is -1) and returns no rows,
  so ``RETURNING`` cannot be used.
* A whole transaction must fit one request: at most
  ``Limits.max_request_bytes`` and D1's 30 s per request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy_cloudflare_d1 import connection as d1_dbapi

from d1store.backends.base import Statement
from d1store.backends.d1 import D1Backend
from d1store.errors import BackendError

__all__ = ["VERSION_GUARD_MARKER", "BatchConnection", "BatchCursor", "VersionGuardError", "is_read"]

logger = logging.getLogger(__name__)

#: Text that a failed version-table check puts into D1's error message.
VERSION_GUARD_MARKER = "d1store-version-guard:"

_WRITE_KEYWORD = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
_READ_KEYWORDS = frozenset({"SELECT", "EXPLAIN", "VALUES"})

# One entry of a DBAPI ``cursor.description``: name and six unknown fields.
_Description = tuple[str, None, None, None, None, None, None]


class VersionGuardError(d1_dbapi.OperationalError):
    """The version row that a revision updates or deletes was not found at commit.

    Another process changed the version table after this migration read it.
    """


def is_read(sql: str) -> bool:
    """Return whether ``sql`` only reads, so that it may run before the commit.

    ``SELECT``, ``EXPLAIN``, ``VALUES``, a ``PRAGMA`` without ``=`` and a
    ``WITH`` query without a data-changing keyword are reads; anything else
    is held back.
    """
    words = sql.split(None, 1)
    if not words:
        return False
    keyword = words[0].upper()
    if keyword == "PRAGMA":
        return "=" not in sql
    if keyword == "WITH":
        return _WRITE_KEYWORD.search(sql) is None
    return keyword in _READ_KEYWORDS


def _params(parameters: Sequence[Any] | Mapping[str, Any] | None) -> tuple[Any, ...]:
    if parameters is None:
        return ()
    if isinstance(parameters, Mapping):
        raise d1_dbapi.ProgrammingError(
            "named parameters are not supported: the cloudflare_d1 dialect binds positional '?' values"
        )
    return tuple(parameters)


class BatchCursor:
    """DBAPI cursor of a :class:`BatchConnection`."""

    arraysize = 1

    def __init__(self, connection: BatchConnection) -> None:
        self._connection = connection
        self.description: tuple[_Description, ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run a read at once, or hold a write back until the connection commits."""
        statement = Statement(sql, _params(parameters))
        if is_read(sql):
            columns, rows = self._connection.read(statement)
            self.description = tuple((name, None, None, None, None, None, None) for name in columns)
            self._rows = rows
        else:
            self._connection.hold(statement)
            self.description = None
            self._rows = []

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> None:
        """Hold back one statement per parameter set."""
        for parameters in seq_of_parameters:
            self.execute(sql, parameters)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def setinputsizes(self, sizes: Any) -> None:
        """Ignore type hints for parameters, as DBAPI allows."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Ignore buffer hints for large columns, as DBAPI allows."""

    def close(self) -> None:
        self._rows = []


class BatchConnection:
    """DBAPI connection that sends reads at once and each transaction's writes as one batch.

    ``backend`` sends the requests and retries transient failures. The
    connection does not close it: its owner does.
    """

    def __init__(self, backend: D1Backend) -> None:
        self.backend = backend
        self._held: list[Statement] = []

    @property
    def held(self) -> list[Statement]:
        """The writes that the next :meth:`commit` sends, in order."""
        return list(self._held)

    def cursor(self) -> BatchCursor:
        return BatchCursor(self)

    def read(self, statement: Statement) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Send one read now and return its column names and rows."""
        try:
            (result,) = self.backend.execute([statement], write=False)
        except BackendError as exc:
            raise d1_dbapi.OperationalError(str(exc)) from exc
        return result.columns, result.rows

    def hold(self, statement: Statement) -> None:
        """Keep ``statement`` for the batch that :meth:`commit` sends."""
        self._held.append(statement)

    def commit(self) -> None:
        """Send the held writes as one D1 batch: all of them take effect, or none."""
        statements, self._held = self._held, []
        if not statements:
            return
        logger.debug("sending a D1 migration batch of %s statements", len(statements))
        try:
            self.backend.execute(statements, write=True)
        except BackendError as exc:
            raise _commit_error(exc, len(statements)) from exc

    def rollback(self) -> None:
        """Discard the held writes; none of them was sent."""
        if self._held:
            logger.info("discarding %s unsent migration statements (rollback)", len(self._held))
        self._held = []

    def close(self) -> None:
        """Discard writes that were never committed."""
        self.rollback()


def _commit_error(exc: BackendError, count: int) -> d1_dbapi.OperationalError:
    if VERSION_GUARD_MARKER in exc.message:
        return VersionGuardError(
            "the version table row that this revision replaces was not found when the batch ran: "
            "another process migrated the database at the same time, so nothing of this revision "
            "was applied; run `d1store db current` and try again"
        )
    if exc.transient:
        return d1_dbapi.OperationalError(
            f"the D1 migration batch of {count} statements failed: {exc}. If a connection was "
            "lost, D1 may have applied the batch; run `d1store db current` to see which revision "
            "the database is at"
        )
    return d1_dbapi.OperationalError(
        f"D1 rejected the migration batch of {count} statements, so none of them was applied: {exc}"
    )
