"""Units of work: how repository calls reach the backend.

A repository call builds a :class:`Batch` of statements. Outside a session
the batch runs at once as its own atomic unit, reads included, so that one
call is one request. Inside a :class:`Session` the writes are held back and
sent together when the ``with`` block ends: one transaction on SQLite, one
batch request on D1. Reads inside a session run at once, so they see the
database as it was before the session's pending writes.

Database errors are translated here, once, into the library's errors.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from d1store.backends.base import Backend, Result, Statement
from d1store.errors import (
    BackendError,
    D1StoreError,
    NotFoundError,
    RowTooLargeError,
    SchemaNotInitializedError,
)
from d1store.statements import GUARD_MARKER, Queries

if TYPE_CHECKING:
    from d1store.attachments import AttachmentCodec
    from d1store.repositories import (
        MessageRepository,
        MetadataRepository,
        ResourceRepository,
        ThreadRepository,
    )

__all__ = ["Batch", "Guard", "Session", "Unit"]

logger = logging.getLogger(__name__)

_GUARD = re.compile(re.escape(GUARD_MARKER) + r"(\d+)(?::(\d+))?")


@dataclass(frozen=True, slots=True)
class Guard:
    """A check inside a batch: the entity exists, or its row fits ``max_row_bytes``."""

    entity_type: str
    entity_id: str
    max_row_bytes: int | None = None

    def error(self, size: int | None) -> D1StoreError:
        """Return the error that a failure of this check means."""
        if self.max_row_bytes is None:
            return NotFoundError(self.entity_type, self.entity_id)
        return RowTooLargeError(self.entity_id, "row", size or 0, self.max_row_bytes)


_MISSING_TABLE = re.compile(r"no such table: (?:main\.)?([A-Za-z0-9_]+)")


class Batch:
    """The statements of one call, and the existence checks among them."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.statements: list[Statement] = []
        self.guards: dict[int, Guard] = {}

    def add(self, statement: Statement) -> int:
        """Append ``statement`` and return its position in the batch."""
        self.statements.append(statement)
        return len(self.statements) - 1

    def extend(self, statements: Iterable[Statement]) -> None:
        """Append several statements."""
        self.statements.extend(statements)

    def require(self, entity_type: str, ids: Iterable[str]) -> None:
        """Fail the whole batch, at this point, unless every id exists.

        The check runs in the database, after the statements added before
        it, so a thread saved earlier in the same session counts as present.
        """
        queries = self.unit.queries
        table = queries.tables.for_entity(entity_type)
        unique = list(dict.fromkeys(ids))
        size = queries.chunk_size(2)
        for start in range(0, len(unique), size):
            chunk = unique[start : start + size]
            params: list[object] = []
            for entity_id in chunk:
                index = self.unit.next_guard()
                self.guards[index] = Guard(entity_type, entity_id)
                # Bound as text: D1 sends JSON numbers as REAL, which would print "3.0".
                params.extend((entity_id, str(index)))
            self.add(queries.guard(table, len(chunk)).bind_flat(params))

    def limit_row_size(self, entity_type: str, entity_id: str) -> None:
        """Fail the whole batch, at this point, if the entity's row is too large.

        An update changes some columns of a row whose other columns are not
        known before the request, so the full row is measured in the
        database, after the update and before anything is committed.
        """
        queries = self.unit.queries
        limit = self.unit.backend.limits.max_row_bytes
        index = self.unit.next_guard()
        self.guards[index] = Guard(entity_type, entity_id, limit)
        compiled = queries.size_guard(queries.tables.for_entity(entity_type))
        self.add(compiled.bind_flat((str(index), entity_id, limit)))


class Unit:
    """Runs each repository call as its own atomic request."""

    deferred = False

    def __init__(
        self, backend: Backend, queries: Queries, *, attachments: AttachmentCodec | None = None
    ) -> None:
        self.backend = backend
        self.queries = queries
        # Offloads large inline payloads of message content, or None to keep them inline.
        self.attachments = attachments
        self._guard_numbers = itertools.count()

    def next_guard(self) -> int:
        """Return a number that identifies one existence check."""
        return next(self._guard_numbers)

    def batch(self) -> Batch:
        """Start the statements of one call."""
        return Batch(self)

    def read(self, statements: Sequence[Statement]) -> list[Result]:
        """Run read-only statements at once, in one request."""
        return self._execute(statements, write=False, guards={})

    def submit(self, batch: Batch) -> list[Result] | None:
        """Run ``batch`` at once and return its results."""
        return self._execute(batch.statements, write=True, guards=batch.guards)

    def _execute(
        self, statements: Sequence[Statement], *, write: bool, guards: dict[int, Guard]
    ) -> list[Result]:
        try:
            return self.backend.execute(statements, write=write)
        except BackendError as exc:
            translated = translate(exc, guards)
            if translated is exc:
                raise
            raise translated from exc


def translate(error: BackendError, guards: dict[int, Guard]) -> D1StoreError:
    """Map a database error to the library error that explains it."""
    found = _GUARD.search(error.message)
    if found is not None and int(found.group(1)) in guards:
        size = int(found.group(2)) if found.group(2) else None
        return guards[int(found.group(1))].error(size)
    table = _MISSING_TABLE.search(error.message)
    if table is not None:
        return SchemaNotInitializedError(table.group(1))
    return error


class Session(Unit):
    """A unit of work whose writes are applied atomically when it ends.

    Use it as a context manager, from :meth:`d1store.D1Store.session`::

        with store.session() as session:
            session.threads.save(thread)
            session.messages.save(messages)

    Leaving the block normally commits every write at once; leaving it with
    an exception discards them and lets the exception propagate. Inside the
    block ``save`` returns the record as it will be stored, while
    ``update``, ``merge`` and ``delete`` return ``None`` because their
    result is known only after the commit. A missing target of those raises
    :class:`~d1store.errors.NotFoundError` at commit time, and then nothing
    of the session is written.
    """

    deferred = True

    def __init__(
        self, backend: Backend, queries: Queries, *, attachments: AttachmentCodec | None = None
    ) -> None:
        super().__init__(backend, queries, attachments=attachments)
        self._pending = Batch(self)
        self._closed = False
        from d1store.repositories import (
            MessageRepository,
            MetadataRepository,
            ResourceRepository,
            ThreadRepository,
        )

        self.threads: ThreadRepository = ThreadRepository(self)
        self.messages: MessageRepository = MessageRepository(self)
        self.metadata: MetadataRepository = MetadataRepository(self)
        self.resources: ResourceRepository = ResourceRepository(self)

    def submit(self, batch: Batch) -> list[Result] | None:
        """Hold ``batch`` back until the session commits."""
        self._check_open()
        self._pending.statements.extend(batch.statements)
        self._pending.guards.update(batch.guards)
        return None

    def read(self, statements: Sequence[Statement]) -> list[Result]:
        """Run read-only statements at once; pending writes are not visible."""
        self._check_open()
        return super().read(statements)

    @property
    def pending(self) -> int:
        """Number of statements waiting for the commit."""
        return len(self._pending.statements)

    def commit(self) -> None:
        """Apply every pending write atomically and close the session."""
        self._check_open()
        self._closed = True
        statements, guards = self._pending.statements, self._pending.guards
        self._pending = Batch(self)
        if statements:
            self._execute(statements, write=True, guards=guards)
            logger.debug("session committed %d statements", len(statements))

    def rollback(self) -> None:
        """Discard every pending write and close the session."""
        self._closed = True
        discarded = len(self._pending.statements)
        self._pending = Batch(self)
        if discarded:
            logger.debug("session discarded %d statements", discarded)

    def _check_open(self) -> None:
        if self._closed:
            raise D1StoreError(
                "this session has already been committed or rolled back; start a new one with store.session()"
            )

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
