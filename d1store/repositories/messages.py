"""Messages: the turns of a thread, in order."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import EllipsisType
from typing import Any, NamedTuple

from d1store.backends.base import Statement
from d1store.encoding import as_utc, check_json, clock, dump_json, format_timestamp
from d1store.errors import ValidationError
from d1store.models import ROLES, Include, Message, Page
from d1store.repositories._common import (
    MAX_COUNT,
    Repository,
    add_entries,
    check_paging,
    check_row_size,
    delete_entries,
    entities,
    entry_rows,
    id_of,
    merge_entries,
    message_from_row,
    metadata_of,
    model_of,
)
from d1store.session import Batch
from d1store.statements import MESSAGE_COLUMNS

__all__ = ["MessageRepository"]


class _ListShape(NamedTuple):
    threads: int
    by_resource: bool
    start: bool
    end: bool


def _as_message(value: Message | Mapping[str, Any]) -> Message:
    # A Message was validated when it was built (assignments too), so only
    # mappings are validated here.
    return value if isinstance(value, Message) else model_of(Message, value, "message")


def _as_include(value: Include | Mapping[str, Any] | str) -> Include:
    if isinstance(value, Include):
        return value
    if isinstance(value, str):
        return model_of(Include, {"id": value}, "include")
    return model_of(Include, value, "include")


def _content_json(message_id: str, content: Any) -> str:
    if type(content) is str and content.isascii():
        # An ASCII string needs no check: it cannot contain a lone surrogate.
        return dump_json(content)
    if content is None or not isinstance(content, (str, builtins.list, dict)):
        raise ValidationError(
            f"invalid content of message {message_id!r}: use a string, list or object, got {content!r:.60}"
        )
    try:
        check_json("content", content)
    except ValueError as exc:
        raise ValidationError(f"message {message_id!r}: {exc}") from None
    return dump_json(content)


def _stamped(record: Message, stamp: datetime) -> Message:
    # Same result as record.model_copy(update={"created_at": stamp}) at half
    # the cost, which counts when a save stamps thousands of messages. The
    # attributes set are those that BaseModel documents for its instances.
    if type(record) is not Message:
        return record.model_copy(update={"created_at": stamp})
    copy = Message.__new__(Message)
    fields = record.__dict__.copy()
    fields["created_at"] = stamp
    object.__setattr__(copy, "__dict__", fields)
    object.__setattr__(copy, "__pydantic_fields_set__", record.__pydantic_fields_set__ | {"created_at"})
    object.__setattr__(copy, "__pydantic_extra__", None)
    object.__setattr__(copy, "__pydantic_private__", None)
    return copy


def _message_row(record: Message, max_row_bytes: int) -> tuple[Any, ...]:
    """Return the row of ``record`` in ``MESSAGE_COLUMNS`` order, checked against the row limit."""
    row = (
        record.id,
        record.thread_id,
        record.resource_id,
        record.role,
        record.type,
        _content_json(record.id, record.content),
        format_timestamp(record.created_at),
    )
    # A character takes at most 4 bytes in UTF-8, so short rows need no exact check.
    characters = sum(map(len, filter(None, row)))
    if characters * 4 > max_row_bytes:
        check_row_size(max_row_bytes, record.id, dict(zip(MESSAGE_COLUMNS, row, strict=True)))
    return row


class MessageRepository(Repository):
    """Stores and queries messages (``store.messages``)."""

    def save(self, messages: Iterable[Message | Mapping[str, Any]]) -> builtins.list[Message]:
        """Insert or replace messages, all or nothing.

        Every message must name an existing thread (or one saved earlier in
        the same session); otherwise :class:`~d1store.errors.NotFoundError`
        names it and nothing is written. Messages without an explicit
        ``created_at`` get increasing timestamps in list order. Saving an
        existing id replaces that message, also when it moves to another
        thread. Returns the messages as stored.
        """
        records = [_as_message(item) for item in messages]
        if not records:
            return []
        if len({record.id for record in records}) < len(records):
            # The last record of a repeated id wins whole, metadata included.
            records = list({record.id: record for record in records}.values())
        implicit = [
            index for index, record in enumerate(records) if "created_at" not in record.model_fields_set
        ]
        for index, stamp in zip(implicit, clock.next(len(implicit)), strict=True):
            records[index] = _stamped(records[index], stamp)
        plan = None
        if self._unit.attachments is not None:
            plan = self._unit.attachments.offload_messages(records)
            records = plan.stored

        rows: builtins.list[tuple[Any, ...]] = []
        entries: builtins.list[tuple[str, str, str, str]] = []
        for record in records:
            rows.append(_message_row(record, self._max_row_bytes))
            if record.metadata:
                entries.extend(entry_rows(self._max_row_bytes, "message", record.id, record.metadata))

        ids = [row[0] for row in rows]
        thread_ids = list(dict.fromkeys(row[1] for row in rows))
        newest = max(max(row[6] for row in rows), format_timestamp(clock.next(1)[0]))

        batch = self._unit.batch()
        batch.require("thread", thread_ids)
        # A message that moves to another thread touches its old thread too.
        self._touch_owners(batch, ids, newest)
        size = self._queries.chunk_size(len(MESSAGE_COLUMNS))
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            batch.add(
                self._queries.message_upsert(len(chunk)).bind_flat(itertools.chain.from_iterable(chunk))
            )
        delete_entries(batch, "message", ids)
        add_entries(batch, entries)
        self._touch_threads(batch, thread_ids, newest)
        if plan is not None:
            plan.upload()
        self._unit.submit(batch)
        return records if plan is None else plan.returned

    def _touch_threads(self, batch: Batch, thread_ids: Sequence[str], stamp: str) -> None:
        size = self._queries.chunk_size(1) - 1
        for start in range(0, len(thread_ids), size):
            chunk = thread_ids[start : start + size]
            batch.add(self._queries.touch_threads(len(chunk)).bind_flat((stamp, *chunk)))

    def _touch_owners(self, batch: Batch, message_ids: Sequence[str], stamp: str) -> None:
        size = self._queries.chunk_size(1) - 1
        for start in range(0, len(message_ids), size):
            chunk = message_ids[start : start + size]
            batch.add(self._queries.touch_threads_of_messages(len(chunk)).bind_flat((stamp, *chunk)))

    def _restore(self, messages: builtins.list[Message]) -> builtins.list[Message]:
        # Puts offloaded attachments back into the content (inline mode).
        codec = self._unit.attachments
        return messages if codec is None else codec.restore(messages)

    def get(self, message_id: str) -> Message | None:
        """Return the message, or ``None`` if it does not exist."""
        found = self.get_many([message_id])
        return found[0] if found else None

    def get_many(self, ids: Iterable[str]) -> builtins.list[Message]:
        """Return the messages with these ids, in the given order, each once.

        Unknown ids are skipped. Any number of ids is accepted; they are
        split across statements of one request.
        """
        unique = _unique_ids(ids)
        if not unique:
            return []
        size = self._queries.chunk_size(1)
        statements: builtins.list[Statement] = []
        for start in range(0, len(unique), size):
            chunk = unique[start : start + size]
            compiled = self._queries.message_get_many(len(chunk))
            values = {f"id_{index}": item for index, item in enumerate(chunk)}
            statements.extend(compiled.bind_with_metadata(values))
        results = self._unit.read(statements)
        found: dict[str, Message] = {}
        for position in range(0, len(results), 2):
            rows, metadata = entities(results, position)
            for row in rows:
                found[row[0]] = message_from_row(row, metadata)
        return self._restore([found[item] for item in unique if item in found])

    def list(
        self,
        thread_id: str | Sequence[str],
        *,
        resource_id: str | None = None,
        include: Iterable[Include | Mapping[str, Any] | str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        page: int = 0,
        per_page: int | None = 40,
        descending: bool = False,
    ) -> Page[Message]:
        """Return one page of the messages of one or more threads.

        Messages are ordered by ``created_at`` then id, oldest first unless
        ``descending``. ``start`` and ``end`` bound ``created_at``
        inclusively. ``include`` adds messages by id with up to
        ``previous`` and ``next`` neighbours from each one's own thread;
        the combined items keep the requested order. ``total`` counts the
        matching messages of the requested threads, without the included
        ones.
        """
        threads = [thread_id] if isinstance(thread_id, str) else builtins.list(thread_id)
        threads = list(dict.fromkeys(id_of("thread_id", item) for item in threads))
        check_paging(page, per_page)
        extra = sum(value is not None for value in (resource_id, start, end)) + 2
        if not threads or len(threads) + extra > self._queries.max_params:
            raise ValidationError(
                f"invalid thread_id: list between 1 and {self._queries.max_params - extra} "
                f"threads per call, got {len(threads)}"
            )
        values: dict[str, Any] = {f"thread_{index}": item for index, item in enumerate(threads)}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        if start is not None:
            values["start"] = format_timestamp(_datetime("start", start))
        if end is not None:
            values["end"] = format_timestamp(_datetime("end", end))
        shape = _ListShape(len(threads), resource_id is not None, start is not None, end is not None)
        # Without paging, the rows themselves give the total: no count needed.
        counted = per_page is not None
        statements = [self._queries.message_count(**shape._asdict()).bind(values)] if counted else []
        if per_page != 0:
            if per_page is not None:
                values.update(limit=per_page, offset=page * per_page)
            listing = self._queries.message_list(
                **shape._asdict(), descending=bool(descending), paged=per_page is not None
            )
            statements.extend(listing.bind_with_metadata(values))
        windows = self._windows(include, resource_id)
        statements.extend(windows)

        results = self._unit.read(statements)
        first = 1 if counted else 0
        page_rows = results[first].rows if per_page != 0 else []
        total = results[0].rows[0][0] if counted else len(page_rows)
        chosen: dict[str, Message] = {}
        # After the count, results come in pairs: rows, then their metadata.
        for position in range(first, len(results), 2):
            rows, metadata = entities(results, position)
            for row in rows:
                if row[0] not in chosen:
                    chosen[row[0]] = message_from_row(row, metadata)
        items = builtins.list(chosen.values())
        if windows:
            # The page arrives in order; included neighbours must be merged in.
            items.sort(key=lambda item: (item.created_at, item.id), reverse=bool(descending))
        items = self._restore(items)
        has_more = bool(per_page) and page * (per_page or 0) + len(page_rows) < total
        return Page[Message](items=items, total=total, page=page, per_page=per_page, has_more=has_more)

    def _windows(self, include: Iterable[Any], resource_id: str | None) -> builtins.list[Statement]:
        statements: builtins.list[Statement] = []
        by_resource = resource_id is not None
        for item in include:
            target = _as_include(item)
            values: dict[str, Any] = {"target": target.id, "offset": 0}
            if by_resource:
                values["resource_id"] = resource_id
            before = self._queries.message_window(before=True, by_resource=by_resource)
            statements.extend(before.bind_with_metadata({**values, "limit": target.previous + 1}))
            if target.next:
                after = self._queries.message_window(before=False, by_resource=by_resource)
                statements.extend(after.bind_with_metadata({**values, "limit": target.next}))
        return statements

    def last(self, thread_id: str, n: int, *, resource_id: str | None = None) -> builtins.list[Message]:
        """Return the newest ``n`` messages of a thread, oldest of them first."""
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_COUNT:
            raise ValidationError(f"invalid n {n!r}: use a count from 0 to 2**53")
        values: dict[str, Any] = {"thread": id_of("thread_id", thread_id), "limit": n, "offset": 0}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        query = self._queries.message_last(by_resource=resource_id is not None)
        rows, metadata = entities(self._unit.read(query.bind_with_metadata(values)), 0)
        return self._restore([message_from_row(row, metadata) for row in reversed(rows)])

    def update(
        self,
        message_id: str,
        *,
        role: str | EllipsisType = ...,
        content: Any = ...,
        metadata: Mapping[str, Any] | EllipsisType = ...,
        thread_id: str | EllipsisType = ...,
    ) -> Message | None:
        """Change the given fields of a message and merge its metadata.

        A metadata key set to ``None`` is removed. Moving the message with
        ``thread_id`` bumps ``updated_at`` of both threads. Raises
        :class:`~d1store.errors.NotFoundError` for an unknown message or
        target thread. Returns the message, or ``None`` inside a session.
        """
        message_id = id_of("message_id", message_id)
        values: dict[str, Any] = {"id": message_id}
        if role is not ...:
            if role not in ROLES:
                raise ValidationError(f"invalid role {role!r}: use user, assistant, system or tool")
            values["role"] = role
        plan = None
        if content is not ... and self._unit.attachments is not None:
            plan = self._unit.attachments.offload_contents([(message_id, content)])
            content = plan.stored[0]
        if content is not ...:
            values["content"] = _content_json(message_id, content)
        if thread_id is not ...:
            values["thread_id"] = id_of("thread_id", thread_id)
        changes = metadata_of("metadata", metadata) if metadata is not ... else {}
        check_row_size(
            self._max_row_bytes, message_id, {k: v for k, v in values.items() if isinstance(v, str)}
        )
        stamp = format_timestamp(clock.next(1)[0])

        batch = self._unit.batch()
        batch.require("message", [message_id])
        if "thread_id" in values:
            batch.require("thread", [values["thread_id"]])
        self._touch_owners(batch, [message_id], stamp)
        fields = tuple(name for name in ("role", "content", "thread_id") if name in values)
        if fields:
            batch.add(self._queries.message_update(fields).bind(values))
            batch.limit_row_size("message", message_id)
            if "thread_id" in values:
                self._touch_owners(batch, [message_id], stamp)
                batch.add(self._queries.touch_thread_to_message().bind({"id": message_id}))
        merge_entries(batch, self._max_row_bytes, "message", message_id, changes)
        if plan is not None:
            plan.upload()
        if self._unit.deferred:
            self._unit.submit(batch)
            return None
        read_at = len(batch.statements)
        batch.extend(self._queries.message_get_many(1).bind_with_metadata({"id_0": message_id}))
        results = self._unit.submit(batch)
        assert results is not None
        rows, metadata = entities(results, read_at)
        return self._restore([message_from_row(rows[0], metadata)])[0]

    def delete(self, ids: Iterable[str]) -> int | None:
        """Delete messages and their metadata; return how many were removed.

        Unknown ids are skipped. The threads of deleted messages get their
        ``updated_at`` bumped. If a lost response made the request run a
        second time, the rows removed by the first run are not counted, so
        the count can be lower than the number of messages that existed.
        Returns ``None`` inside a session.
        """
        unique = _unique_ids(ids)
        if not unique:
            return None if self._unit.deferred else 0
        stamp = format_timestamp(clock.next(1)[0])
        batch = self._unit.batch()
        self._touch_owners(batch, unique, stamp)
        delete_entries(batch, "message", unique)
        size = self._queries.chunk_size(1)
        positions = []
        for start in range(0, len(unique), size):
            chunk = unique[start : start + size]
            positions.append(batch.add(self._queries.message_delete(len(chunk)).bind_flat(chunk)))
        results = self._unit.submit(batch)
        if results is None:
            return None
        return sum(results[position].changes for position in positions)


def _unique_ids(ids: Iterable[str]) -> builtins.list[str]:
    if isinstance(ids, str):
        # A string is iterable too, and would be read as one id per character.
        raise ValidationError(f"invalid ids {ids!r}: pass a list of message ids, for example [{ids!r}]")
    return list(dict.fromkeys(id_of("message id", item) for item in ids))


def _datetime(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"invalid {field} {value!r}: use a datetime")
    try:
        return as_utc(value)
    except ValueError as exc:
        raise ValidationError(f"invalid {field}: {exc}") from None
