"""SQLite backend: statement lists run as one transaction.

Statements go straight to the ``sqlite3`` connection from SQLAlchemy's pool,
and this module manages the transaction. Writes start with ``BEGIN
IMMEDIATE``, so that two writers queue on SQLite's busy timeout instead of
failing when a read lock cannot be upgraded. Reads start with a plain
``BEGIN``, so that the statements of one read see one snapshot.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Engine, event
from sqlalchemy.engine import Dialect

from d1store.backends.base import Limits, Result, Statement
from d1store.errors import BackendError

__all__ = ["SQLiteBackend"]

logger = logging.getLogger(__name__)

#: How long a statement waits for another connection's write lock.
BUSY_TIMEOUT_MS = 10_000
#: Extra attempts, after the busy timeout ran out, to start a transaction.
BUSY_RETRIES = 5


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the database file to WAL, which it keeps for every later connection.

    Switching needs an exclusive lock, and SQLite may return "database is
    locked" at once, without the busy timeout, when several processes open
    a new file together. So the mode is read first (another process may have
    switched it already) and the switch is retried a few times.
    """
    for attempt in range(BUSY_RETRIES + 1):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if attempt == BUSY_RETRIES:
                raise
            logger.warning(
                "SQLite busy, retrying the switch to WAL (attempt %d of %d)", attempt + 1, BUSY_RETRIES
            )
            time.sleep(0.05 * (attempt + 1))


class SQLiteBackend:
    """Runs statement lists on a SQLite database through a SQLAlchemy engine."""

    name = "sqlite"

    def __init__(self, engine: Engine, *, limits: Limits | None = None, owns_engine: bool = True) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        self.dialect: Dialect = engine.dialect
        self.limits = limits or Limits()
        self.request_count = 0
        self._in_memory = engine.url.database in (None, "", ":memory:")
        # Transactions of an in-memory database share one connection, so
        # they must not interleave.
        self._memory_lock = threading.Lock() if self._in_memory else None
        event.listen(engine, "connect", self._configure)

    def _configure(self, dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers work while one writer commits; the busy timeout
        # makes writers wait for each other instead of raising "database is
        # locked" at once.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not self._in_memory:
                _use_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    def describe(self) -> str:
        """Return the backend name and database file."""
        return f"sqlite {self.engine.url.database or ':memory:'}"

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.engine.url.render_as_string(hide_password=True)}>"

    def execute(self, statements: Sequence[Statement], *, write: bool) -> list[Result]:
        """Run ``statements`` in one transaction and return their results."""
        if not statements:
            return []
        self.limits.check(statements)
        self.request_count += 1
        if self._memory_lock is not None:
            with self._memory_lock:
                return self._execute(statements, write)
        return self._execute(statements, write)

    def _execute(self, statements: Sequence[Statement], write: bool) -> list[Result]:
        try:
            pooled = self.engine.raw_connection()
        except (sqlite3.Error, sqlalchemy.exc.DBAPIError) as exc:
            # For example "unable to open database file" for a missing directory.
            reason = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
            raise BackendError(f"{reason} ({self.describe()})") from exc
        try:
            connection: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
            previous = connection.isolation_level
            # Autocommit mode at the driver, so that the BEGIN below is the
            # only transaction and Python's sqlite3 does not open its own.
            connection.isolation_level = None
            try:
                return self._run(connection, statements, write)
            finally:
                connection.isolation_level = previous
        finally:
            pooled.close()

    def _run(
        self, connection: sqlite3.Connection, statements: Sequence[Statement], write: bool
    ) -> list[Result]:
        cursor = connection.cursor()
        try:
            self._begin(cursor, write)
            try:
                results = [self._step(connection, cursor, statement) for statement in statements]
                cursor.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            return results
        except sqlite3.Error as exc:
            raise BackendError(str(exc)) from exc
        finally:
            cursor.close()

    @staticmethod
    def _begin(cursor: sqlite3.Cursor, write: bool) -> None:
        # The busy timeout covers most contention. SQLite can still return
        # SQLITE_BUSY at once when waiting could deadlock, so starting the
        # transaction is retried a few times with a short pause.
        for attempt in range(BUSY_RETRIES + 1):
            try:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == BUSY_RETRIES:
                    raise
                logger.warning("SQLite busy, retrying BEGIN (attempt %d of %d)", attempt + 1, BUSY_RETRIES)
                time.sleep(0.05 * (attempt + 1))

    @staticmethod
    def _step(connection: sqlite3.Connection, cursor: sqlite3.Cursor, statement: Statement) -> Result:
        before = connection.total_changes
        cursor.execute(statement.sql, statement.params)
        if cursor.description is None:
            return Result([], connection.total_changes - before)
        columns = [column[0] for column in cursor.description]
        return Result(cursor.fetchall(), connection.total_changes - before, columns)

    def close(self) -> None:
        """Dispose of the engine's connections if this backend created the engine."""
        event.remove(self.engine, "connect", self._configure)
        if self._owns_engine:
            self.engine.dispose()
