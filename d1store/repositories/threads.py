"""Threads: conversations that belong to a resource."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any, Literal

from d1store.encoding import check_text, clock, dump_json, format_timestamp
from d1store.errors import ValidationError
from d1store.models import Page, Thread
from d1store.repositories._common import (
    Repository,
    add_entries,
    check_row_size,
    delete_entries,
    entry_rows,
    id_of,
    merge_entries,
    metadata_of,
    thread_from_row,
)

__all__ = ["ThreadRepository"]

OrderBy = Literal["created_at", "updated_at"]


def check_paging(page: int, per_page: int | None) -> None:
    """Raise :class:`ValidationError` for a negative page or page size."""
    if not isinstance(page, int) or page < 0:
        raise ValidationError(f"invalid page {page!r}: pages are numbered from 0")
    if per_page is not None and (not isinstance(per_page, int) or per_page < 0):
        raise ValidationError(f"invalid per_page {per_page!r}: use a number from 0, or None for all")


class ThreadRepository(Repository):
    """Stores and queries threads (``store.threads``)."""

    def get(self, thread_id: str, *, resource_id: str | None = None) -> Thread | None:
        """Return the thread, or ``None`` if it does not exist.

        With ``resource_id``, a thread of another resource is not returned.
        """
        values = {"id": id_of("thread_id", thread_id)}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        statement = self._queries.thread_get(by_resource=resource_id is not None).bind(values)
        rows = self._unit.read([statement])[0].rows
        return thread_from_row(rows[0]) if rows else None

    def list(
        self,
        *,
        resource_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        page: int = 0,
        per_page: int | None = 100,
        order_by: OrderBy = "created_at",
        descending: bool = True,
    ) -> Page[Thread]:
        """Return one page of threads, newest first by default.

        ``metadata`` keeps the threads whose metadata has every given key
        with an equal value of the same JSON type. ``per_page=None``
        returns every match. Ties in ``order_by`` are ordered by id.
        """
        check_paging(page, per_page)
        if order_by not in ("created_at", "updated_at"):
            raise ValidationError(f"invalid order_by {order_by!r}: use 'created_at' or 'updated_at'")
        filters = metadata_of("metadata filter", metadata or {})
        values: dict[str, Any] = {}
        if resource_id is not None:
            values["resource_id"] = id_of("resource_id", resource_id)
        for index, (key, value) in enumerate(filters.items()):
            values[f"key_{index}"] = key
            values[f"value_{index}"] = dump_json(value)
        by_resource, keys = resource_id is not None, len(filters)
        statements = [self._queries.thread_count(by_resource=by_resource, metadata_keys=keys).bind(values)]
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
            )
            statements.append(listing.bind(values))
        results = self._unit.read(statements)
        total = results[0].rows[0][0]
        items = [thread_from_row(row) for row in results[1].rows] if per_page != 0 else []
        has_more = bool(per_page) and page * (per_page or 0) + len(items) < total
        return Page[Thread](items=items, total=total, page=page, per_page=per_page, has_more=has_more)

    def save(self, thread: Thread | Mapping[str, Any]) -> Thread:
        """Insert ``thread``, or replace the stored one with the same id.

        Replacing includes the metadata: keys missing from ``thread`` are
        removed.
        """
        record = thread if isinstance(thread, Thread) else Thread.model_validate(thread)
        record = Thread.model_validate(record.model_dump())
        row = {
            "id": record.id,
            "resource_id": record.resource_id,
            "title": record.title,
            "created_at": format_timestamp(record.created_at),
            "updated_at": format_timestamp(record.updated_at),
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
    ) -> Thread | None:
        """Change the title and merge metadata; bump ``updated_at``.

        A metadata key set to ``None`` is removed. Raises
        :class:`~d1store.errors.NotFoundError` for an unknown id. Returns
        the updated thread, or ``None`` inside a session.
        """
        thread_id = id_of("thread_id", thread_id)
        values: dict[str, Any] = {"id": thread_id, "updated_at": format_timestamp(clock.next(1)[0])}
        if title is not ...:
            if not isinstance(title, str):
                raise ValidationError(f"invalid title {title!r}: titles are strings")
            try:
                check_text("title", title)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
            values["title"] = title
            check_row_size(self._max_row_bytes, thread_id, {"title": title})
        changes = metadata_of("metadata", metadata) if metadata is not ... else {}

        batch = self._unit.batch()
        batch.require("thread", [thread_id])
        batch.add(self._queries.thread_update(title=title is not ...).bind(values))
        merge_entries(batch, self._max_row_bytes, "thread", thread_id, changes)
        if self._unit.deferred:
            self._unit.submit(batch)
            return None
        read_at = batch.add(self._queries.thread_get(by_resource=False).bind({"id": thread_id}))
        results = self._unit.submit(batch)
        assert results is not None
        return thread_from_row(results[read_at].rows[0])

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
