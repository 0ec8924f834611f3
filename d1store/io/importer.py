"""Import JSON Lines into a store, one thread per line, in atomic batches.

Every thread is written together with its messages in one session, and
several threads share a session (one D1 request) up to the limits of
:class:`BatchLimits`. A thread too large for one request is written in
explicit chunks instead: the thread first, then its messages a chunk at a
time, then the thread again to restore its ``updated_at``. Every write is an
upsert by id with explicit timestamps, so running the same import again,
for example after an interruption, rewrites what is stored with the same
values and completes what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from d1store.encoding import dump_json
from d1store.errors import ValidationError
from d1store.io.records import LineError, ParsedLine, RecordParser
from d1store.io.timestamps import fill_timestamps
from d1store.models import Message
from d1store.session import Session
from d1store.store import D1Store

__all__ = ["BatchLimits", "ImportStats", "Importer", "OnError"]

logger = logging.getLogger(__name__)

OnError = Literal["abort", "skip"]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Caps of one import request (one session).

    D1 runs a batch as one transaction within 30 s per request, so batches
    are kept well below that: ``threads`` per request, ``statements`` per
    request and ``bytes`` of input JSON per request. A thread over
    ``statements`` or ``bytes`` on its own is written in chunks of at most
    ``chunk_messages`` messages.
    """

    threads: int = 50
    statements: int = 500
    bytes: int = 1_000_000
    chunk_messages: int = 500

    def __post_init__(self) -> None:
        for name in ("threads", "statements", "bytes", "chunk_messages"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValidationError(f"invalid batch limit {name}={value!r}: use a positive integer")


@dataclass(slots=True)
class ImportStats:
    """Counts of an import, updated after every request."""

    threads: int = 0
    messages: int = 0
    skipped: int = 0
    #: Threads that were too large for one request and were written in chunks.
    chunked: int = 0


@dataclass(slots=True)
class _Pending:
    lines: list[ParsedLine]
    statements: int = 0
    bytes: int = 0


def _stage(session: Session, lines: Sequence[ParsedLine]) -> None:
    """Add the writes of ``lines`` to ``session``: threads, then all their messages at once."""
    for line in lines:
        if line.resource is not None:
            session.resources.save(line.resource)
        session.threads.save(line.thread)
    messages = [message for line in lines for message in line.messages]
    if messages:
        session.messages.save(messages)
        # Saving messages raises each thread's updated_at to the current
        # time; saving the threads again restores the values of the records.
        for line in lines:
            if line.messages:
                session.threads.save(line.thread)


def _message_bytes(message: Message) -> int:
    return len(dump_json(message.content).encode()) + len(dump_json(message.metadata).encode()) + 200


class Importer:
    """Writes parsed lines to ``store`` in batches.

    ``on_error`` decides what an invalid line does. ``"abort"`` writes the
    valid lines before it and raises its :class:`LineError`, while
    ``"skip"`` reports it to ``on_skip`` and goes on. ``on_write`` is called after
    every request with the running counts.
    """

    def __init__(
        self,
        store: D1Store,
        *,
        default_resource: str = "default",
        on_error: OnError = "abort",
        limits: BatchLimits | None = None,
        on_skip: Callable[[LineError], None] | None = None,
        on_write: Callable[[ImportStats], None] | None = None,
    ) -> None:
        if on_error not in ("abort", "skip"):
            raise ValidationError(f"invalid on_error {on_error!r}: use 'abort' or 'skip'")
        self.store = store
        self.parser = RecordParser(default_resource=default_resource)
        self.on_error = on_error
        self.limits = limits or BatchLimits()
        self.stats = ImportStats()
        self._on_skip = on_skip
        self._on_write = on_write
        self._pending = _Pending([])

    def run(self, lines: Iterable[tuple[int, str]]) -> ImportStats:
        """Import ``(line number, text)`` pairs and return the counts."""
        for number, text in lines:
            self.feed(number, text)
        self.flush()
        return self.stats

    def feed(self, number: int, text: str) -> None:
        """Parse one line and queue it, writing a batch when one is full."""
        if not text.strip():
            return
        try:
            line = self.parser.parse(number, text)
            statements = self._measure(line)
        except LineError as error:
            self.reject(error)
            return
        if statements > self.limits.statements or line.size > self.limits.bytes:
            self.flush()
            self._write_chunked(line)
            return
        pending = self._pending
        if (
            len(pending.lines) >= self.limits.threads
            or pending.statements + statements > self.limits.statements
            or pending.bytes + line.size > self.limits.bytes
        ):
            self.flush()
            pending = self._pending
        pending.lines.append(line)
        pending.statements += statements
        pending.bytes += line.size

    def flush(self) -> None:
        """Write the queued lines in one request."""
        lines = self._pending.lines
        if not lines:
            return
        self._pending = _Pending([])
        fill_timestamps(self.store, lines)
        with self.store.session() as session:
            _stage(session, lines)
        self._count(lines)

    def reject(self, error: LineError) -> None:
        """Handle an invalid line as ``on_error`` sets: raise it, or count and report it."""
        if self.on_error == "abort":
            self.flush()
            raise error
        self.stats.skipped += 1
        logger.info("import skipped %s", error)
        if self._on_skip is not None:
            self._on_skip(error)

    def _measure(self, line: ParsedLine) -> int:
        """Return how many statements writing ``line`` takes.

        The writes are staged in a session that is discarded, which counts
        them exactly and runs every check of the real write (row sizes
        included) without sending anything. Raises :class:`LineError` for a
        line that the real write would reject.
        """
        session = self.store.session()
        try:
            _stage(session, [line])
            return session.pending
        except ValueError as exc:
            raise LineError(line.number, str(exc)) from None
        finally:
            session.rollback()

    def _write_chunked(self, line: ParsedLine) -> None:
        fill_timestamps(self.store, [line])
        with self.store.session() as session:
            if line.resource is not None:
                session.resources.save(line.resource)
            session.threads.save(line.thread)
        for chunk in self._chunks(line.messages):
            with self.store.session() as session:
                session.messages.save(chunk)
            logger.debug("import wrote %d messages of thread %s", len(chunk), line.thread.id)
        with self.store.session() as session:
            session.threads.save(line.thread)
        self.stats.chunked += 1
        self._count([line])

    def _chunks(self, messages: Sequence[Message]) -> Iterator[list[Message]]:
        chunk: list[Message] = []
        size = 0
        for message in messages:
            cost = _message_bytes(message)
            if chunk and (len(chunk) >= self.limits.chunk_messages or size + cost > self.limits.bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(message)
            size += cost
        if chunk:
            yield chunk

    def _count(self, lines: Sequence[ParsedLine]) -> None:
        self.stats.threads += len(lines)
        self.stats.messages += sum(len(line.messages) for line in lines)
        if self._on_write is not None:
            self._on_write(self.stats)
