"""Resources: per-user working memory."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any

from d1store.encoding import clock, format_timestamp
from d1store.errors import ValidationError
from d1store.models import Resource
from d1store.repositories._common import (
    Repository,
    add_entries,
    check_row_size,
    delete_entries,
    entities,
    entry_rows,
    id_of,
    merge_entries,
    metadata_of,
    model_of,
    resource_from_row,
    text_of,
)

__all__ = ["ResourceRepository"]


class ResourceRepository(Repository):
    """Stores per-resource working memory (``store.resources``)."""

    def get(self, resource_id: str) -> Resource | None:
        """Return the resource, or ``None`` if it does not exist."""
        statement = self._queries.resource_get().bind_with_metadata({"id": id_of("resource_id", resource_id)})
        rows, metadata = entities(self._unit.read(statement), 0)
        return resource_from_row(rows[0], metadata) if rows else None

    def save(self, resource: Resource | Mapping[str, Any]) -> Resource:
        """Insert ``resource`` or replace the stored one, metadata included."""
        # Validated again even when given a Resource: one built with
        # model_construct() has skipped every check.
        record = model_of(Resource, resource, "resource")
        row = {
            "id": record.id,
            "working_memory": record.working_memory,
            "created_at": format_timestamp(record.created_at),
            "updated_at": format_timestamp(record.updated_at),
        }
        check_row_size(self._max_row_bytes, record.id, row)
        entries = entry_rows(self._max_row_bytes, "resource", record.id, record.metadata)
        batch = self._unit.batch()
        batch.add(self._queries.resource_upsert(working_memory=True, replace=True).bind(row))
        delete_entries(batch, "resource", [record.id])
        add_entries(batch, entries)
        self._unit.submit(batch)
        return record

    def update(
        self,
        resource_id: str,
        *,
        working_memory: str | EllipsisType | None = ...,
        metadata: Mapping[str, Any] | EllipsisType = ...,
    ) -> Resource | None:
        """Create the resource if missing, then change what is given.

        ``working_memory`` is replaced only when passed; metadata is merged
        (a key set to ``None`` is removed); ``updated_at`` is bumped.
        Returns the resource, or ``None`` inside a session.
        """
        resource_id = id_of("resource_id", resource_id)
        now = format_timestamp(clock.next(1)[0])
        row: dict[str, Any] = {
            "id": resource_id,
            "working_memory": None,
            "created_at": now,
            "updated_at": now,
        }
        if working_memory is not ...:
            if working_memory is not None:
                if not isinstance(working_memory, str):
                    raise ValidationError(
                        f"invalid working_memory {working_memory!r:.60}: use a string or None"
                    )
                text_of("working_memory", working_memory)
            row["working_memory"] = working_memory
        check_row_size(self._max_row_bytes, resource_id, row)
        changes = metadata_of("metadata", metadata) if metadata is not ... else {}

        batch = self._unit.batch()
        upsert = self._queries.resource_upsert(working_memory=working_memory is not ..., replace=False)
        batch.add(upsert.bind(row))
        if working_memory is not ...:
            batch.limit_row_size("resource", resource_id)
        merge_entries(batch, self._max_row_bytes, "resource", resource_id, changes)
        if self._unit.deferred:
            self._unit.submit(batch)
            return None
        read_at = len(batch.statements)
        batch.extend(self._queries.resource_get().bind_with_metadata({"id": resource_id}))
        results = self._unit.submit(batch)
        assert results is not None
        rows, metadata = entities(results, read_at)
        return resource_from_row(rows[0], metadata)

    def delete(self, resource_id: str) -> bool | None:
        """Delete the resource and its metadata; return whether it existed.

        The resource's threads are kept. Returns ``None`` inside a session.
        """
        resource_id = id_of("resource_id", resource_id)
        batch = self._unit.batch()
        delete_entries(batch, "resource", [resource_id])
        position = batch.add(self._queries.resource_delete().bind({"id": resource_id}))
        results = self._unit.submit(batch)
        return None if results is None else results[position].changes > 0
