"""Threads: conversations that belong to a resource."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any, Literal

from d1store.encoding import clock, dump_json, format_timestamp
from d1store.errors import ValidationError
from d1store.models import Page, Thread
from d1store.repositories._common import (
    Repository,
    add_entries,
    check_paging,
    check_row_size,
    delete_entries,
    entities,
    entry_rows,
    id_of,
    merge_entries,
    metadata_of,
    model_of,
    text_of,
    thread_from_row,
)

__all__ = ["ThreadRepository"]

OrderBy = Literal["created_at", "updated_at"]


#: Maximum number of keys in one metadata filter. Each key adds a condition
#: to one statement, and D1 rejects expressions nested more than 100 deep
#: ("Expression tree is too large"). 39 keys passed on the local D1 engine.
MAX_FILTER_KEYS = 32


def check_metadata_filter(filters: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` when a metadata filter has too many keys for one statement."""
    if len(filters) > MAX_FILTER_KEYS:
        raise ValidationError(
            f"invalid metadata filter with {len(filters)} keys: at most {MAX_FILTER_KEYS} keys fit "
            "one statement; filter on fewer keys and narrow the result in Python"
        )


class ThreadRepository(Repository):
    """Stores and queries threads (``store.threads``)."""

    def get(self, thread_id: str, *, resource_id: str | None = None) -> Thread | None:
        """Return the thread, or ``None`` if it does not exist.

        With ``resource_id``, a thread of another resource is not returned.
        """
        values = {"id": id_of("thread_id", thread_id)}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        statement = self._queries.thread_get(by_resource=resource_id is not None).bind_with_metadata(values)
        rows, metadata = entities(self._unit.read(statement), 0)
        return thread_from_row(rows[0], metadata) if rows else None

    def list(
        self,
        *,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        page: int = 0,
        per_page: int | None = 100,
        order_by: OrderBy = "created_at",
        descending: bool = True,
        archived: bool | None = None,
    ) -> Page[Thread]:
        """Return one page of threads, newest first by default.

        ``metadata`` keeps the threads whose metadata has every given key
        with an equal value of the same JSON type. ``archived`` keeps only
        archived threads (True) or only active ones (False); ``None``
        keeps both. ``per_page=None`` returns every match. Ties in
        ``order_by`` are ordered by id.
        """
        check_paging(page, per_page)
        if archived is not None and not isinstance(archived, bool):
            raise ValidationError(f"invalid archived {archived!r}: use True, False or None")
        if order_by not in ("created_at", "updated_at"):
            raise ValidationError(f"invalid order_by {order_by!r}: use 'created_at' or 'updated_at'")
        filters = metadata_of("metadata filter", metadata or {})
        check_metadata_filter(filters)
        values: dict[str, Any] = {}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        for index, (key, value) in enumerate(filters.items()):
            values[f"key_{index}"] = key
            values[f"value_{index}"] = dump_json(value)
        by_resource, keys = resource_id is not None, len(filters)
        count = self._queries.thread_count(by_resource=by_resource, metadata_keys=keys, archived=archived)
        # Without paging, the rows themselves give the total: no count needed.
        counted = per_page is not None
        statements = [count.bind(values)] if counted else []
        if per_page != 0:
            paged = per_page is not None
            if paged:
                assert per_page is not None
                values.update(limit=per_page, offset=page * per_page)
            listing = self._queries.thread_list(
                by_resource=by_resource,
                metadata_keys=keys,
                order_by=order_by,
                descending=bool(descending),
                paged=paged,
                archived=archived,
            )
            statements.extend(listing.bind_with_metadata(values))
        results = self._unit.read(statements)
        items = []
        if per_page != 0:
            rows, metadata = entities(results, 1 if counted else 0)
            items = [thread_from_row(row, metadata) for row in rows]
        total = results[0].rows[0][0] if counted else len(items)
        has_more = bool(per_page) and page * (per_page or 0) + len(items) < total
        return Page[Thread](items=items, total=total, page=page, per_page=per_page, has_more=has_more)

    def save(self, thread: Thread | Mapping[str, Any]) -> Thread:
        """Insert ``thread``, or replace the stored one with the same id.

        Replacing includes the metadata: keys missing from ``thread`` are
        removed.
        """
        # Validated again even when given a Thread: one built with
        # model_construct() has skipped every check.
        record = model_of(Thread, thread, "thread")
        row = {
            "id": record.id,
            "resource_id": record.resource_id,
            "title": record.title,
            "created_at": format_timestamp(record.created_at),
            "updated_at": format_timestamp(record.updated_at),
            "archived_at": None if record.archived_at is None else format_timestamp(record.archived_at),
        }
        check_row_size(self._max_row_bytes, record.id, row)
        entries = entry_rows(self._max_row_bytes, "thread", record.id, record.metadata)
        batch = self._unit.batch()
        batch.add(self._queries.thread_upsert().bind(row))
        delete_entries(batch, "thread", [record.id])
        add_entries(batch, entries)
        self._unit.submit(batch)
        return record

    def update(
        self,
        thread_id: str,
        *,
        title: str | EllipsisType = ...,
        metadata: Mapping[str, Any] | EllipsisType = ...,
        archived: bool | EllipsisType = ...,
    ) -> Thread | None:
        """Change the title, merge metadata and archive or unarchive; bump ``updated_at``.

        A metadata key set to ``None`` is removed. ``archived=True`` sets
        ``archived_at`` to now (an archived thread keeps its first time),
        ``archived=False`` clears it. Raises
        :class:`~d1store.errors.NotFoundError` for an unknown id. Returns
        the updated thread, or ``None`` inside a session.
        """
        thread_id = id_of("thread_id", thread_id)
        values: dict[str, Any] = {"id": thread_id, "updated_at": format_timestamp(clock.next(1)[0])}
        if title is not ...:
            if not isinstance(title, str):
                raise ValidationError(f"invalid title {title!r:.60}: use a string")
            values["title"] = text_of("title", title)
            check_row_size(self._max_row_bytes, thread_id, {"title": title})
        if archived is not ...:
            if not isinstance(archived, bool):
                raise ValidationError(f"invalid archived {archived!r}: use True or False")
            values["archived_at"] = values["updated_at"]
        changes = metadata_of("metadata", metadata) if metadata is not ... else {}

        batch = self._unit.batch()
        batch.require("thread", [thread_id])
        archive = None if archived is ... else archived
        batch.add(self._queries.thread_update(title=title is not ..., archived=archive).bind(values))
        if title is not ...:
            batch.limit_row_size("thread", thread_id)
        merge_entries(batch, self._max_row_bytes, "thread", thread_id, changes)
        if self._unit.deferred:
            self._unit.submit(batch)
            return None
        read_at = len(batch.statements)
        batch.extend(self._queries.thread_get(by_resource=False).bind_with_metadata({"id": thread_id}))
        results = self._unit.submit(batch)
        assert results is not None
        rows, metadata = entities(results, read_at)
        return thread_from_row(rows[0], metadata)

    def delete(self, thread_id: str) -> bool | None:
        """Delete the thread, its messages and all their metadata at once.

        Returns whether the thread existed (``None`` inside a session).
        """
        thread_id = id_of("thread_id", thread_id)
        batch = self._unit.batch()
        for compiled in self._queries.thread_delete():
            batch.add(compiled.bind({"id": thread_id}))
        results = self._unit.submit(batch)
        return None if results is None else results[-1].changes > 0
