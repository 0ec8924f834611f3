"""Messages: the turns of a thread, in order."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import EllipsisType
from typing import Any, NamedTuple

from d1store.encoding import as_utc, check_json, clock, dump_json, format_timestamp
from d1store.errors import ValidationError
from d1store.models import ROLES, Include, Message, Page
from d1store.repositories._common import (
    Repository,
    add_entries,
    check_row_size,
    delete_entries,
    entry_rows,
    id_of,
    merge_entries,
    message_from_row,
    metadata_of,
)
from d1store.repositories.threads import check_paging
from d1store.session import Batch
from d1store.statements import MESSAGE_COLUMNS

__all__ = ["MessageRepository"]


class _ListShape(NamedTuple):
    threads: int
    by_resource: bool
    start: bool
    end: bool


def _as_message(value: Message | Mapping[str, Any]) -> Message:
    if isinstance(value, Message):
        return value
    if isinstance(value, Mapping):
        return Message.model_validate(value)
    raise ValidationError(f"invalid message {value!r:.80}: pass a Message or a mapping of its fields")


def _as_include(value: Include | Mapping[str, Any] | str) -> Include:
    if isinstance(value, Include):
        return value
    if isinstance(value, str):
        return Include(id=value)
    return Include.model_validate(value)


def _content_json(message_id: str, content: Any) -> str:
    if content is None or not isinstance(content, (str, builtins.list, dict)):
        raise ValidationError(
            f"invalid content of message {message_id!r}: use a string, list or object, got {content!r:.60}"
        )
    try:
        check_json("content", content)
    except ValueError as exc:
        raise ValidationError(f"message {message_id!r}: {exc}") from None
    return dump_json(content)


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
        implicit = [
            index for index, record in enumerate(records) if "created_at" not in record.model_fields_set
        ]
        for index, stamp in zip(implicit, clock.next(len(implicit)), strict=True):
            records[index] = records[index].model_copy(update={"created_at": stamp})

        rows: builtins.list[tuple[Any, ...]] = []
        entries: builtins.list[tuple[str, str, str, str]] = []
        for record in records:
            row = (
                record.id,
                record.thread_id,
                record.resource_id,
                record.role,
                record.type,
                _content_json(record.id, record.content),
                format_timestamp(record.created_at),
            )
            check_row_size(self._max_row_bytes, record.id, dict(zip(MESSAGE_COLUMNS, row, strict=True)))
            rows.append(row)
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
            flat = [value for row in chunk for value in row]
            batch.add(self._queries.message_upsert(len(chunk)).bind_flat(flat))
        delete_entries(batch, "message", ids)
        add_entries(batch, entries)
        self._touch_threads(batch, thread_ids, newest)
        self._unit.submit(batch)
        return records

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

    def get(self, message_id: str) -> Message | None:
        """Return the message, or ``None`` if it does not exist."""
        found = self.get_many([message_id])
        return found[0] if found else None

    def get_many(self, ids: Iterable[str]) -> builtins.list[Message]:
        """Return the messages with these ids, in the given order, each once.

        Unknown ids are skipped. Any number of ids is accepted; they are
        split across statements of one request.
        """
        unique = list(dict.fromkeys(id_of("message id", item) for item in ids))
        if not unique:
            return []
        size = self._queries.chunk_size(1)
        statements = [
            self._queries.message_get_many(len(chunk)).bind_flat(chunk)
            for chunk in (unique[start : start + size] for start in range(0, len(unique), size))
        ]
        found: dict[str, Message] = {}
        for result in self._unit.read(statements):
            for row in result.rows:
                found[row[0]] = message_from_row(row)
        return [found[item] for item in unique if item in found]

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
        statements = [self._queries.message_count(**shape._asdict()).bind(values)]
        if per_page != 0:
            if per_page is not None:
                values.update(limit=per_page, offset=page * per_page)
            listing = self._queries.message_list(
                **shape._asdict(), descending=bool(descending), paged=per_page is not None
            )
            statements.append(listing.bind(values))
        statements.extend(self._windows(include, resource_id))

        results = self._unit.read(statements)
        total = results[0].rows[0][0]
        page_rows = results[1].rows if per_page != 0 else []
        chosen: dict[str, Message] = {}
        for result in results[1:]:
            for row in result.rows:
                if row[0] not in chosen:
                    chosen[row[0]] = message_from_row(row)
        items = sorted(chosen.values(), key=lambda item: (item.created_at, item.id), reverse=bool(descending))
        has_more = bool(per_page) and page * (per_page or 0) + len(page_rows) < total
        return Page[Message](items=items, total=total, page=page, per_page=per_page, has_more=has_more)

    def _windows(self, include: Iterable[Any], resource_id: str | None) -> builtins.list[Any]:
        statements = []
        by_resource = resource_id is not None
        for item in include:
            target = _as_include(item)
            values: dict[str, Any] = {"target": target.id, "offset": 0}
            if by_resource:
                values["resource_id"] = resource_id
            before = self._queries.message_window(before=True, by_resource=by_resource)
            statements.append(before.bind({**values, "limit": target.previous + 1}))
            if target.next:
                after = self._queries.message_window(before=False, by_resource=by_resource)
                statements.append(after.bind({**values, "limit": target.next}))
        return statements

    def last(self, thread_id: str, n: int, *, resource_id: str | None = None) -> builtins.list[Message]:
        """Return the newest ``n`` messages of a thread, oldest of them first."""
        if not isinstance(n, int) or n < 0:
            raise ValidationError(f"invalid n {n!r}: use a count of 0 or more")
        values: dict[str, Any] = {"thread": id_of("thread_id", thread_id), "limit": n, "offset": 0}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        statement = self._queries.message_last(by_resource=resource_id is not None).bind(values)
        rows = self._unit.read([statement])[0].rows
        return [message_from_row(row) for row in reversed(rows)]

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
            if "thread_id" in values:
                self._touch_owners(batch, [message_id], stamp)
        merge_entries(batch, self._max_row_bytes, "message", message_id, changes)
        if self._unit.deferred:
            self._unit.submit(batch)
            return None
        read_at = batch.add(self._queries.message_get_many(1).bind_flat([message_id]))
        results = self._unit.submit(batch)
        assert results is not None
        return message_from_row(results[read_at].rows[0])

    def delete(self, ids: Iterable[str]) -> int | None:
        """Delete messages and their metadata; return how many were removed.

        Unknown ids are skipped. The threads of deleted messages get their
        ``updated_at`` bumped. If a lost response made the request run a
        second time, the rows removed by the first run are not counted, so
        the count can be lower than the number of messages that existed.
        Returns ``None`` inside a session.
        """
        unique = list(dict.fromkeys(id_of("message id", item) for item in ids))
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


def _datetime(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"invalid {field} {value!r}: use a datetime")
    return as_utc(value)
