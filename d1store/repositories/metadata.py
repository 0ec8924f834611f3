"""Key/value metadata of threads, messages and resources."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from d1store.encoding import check_json, clock, format_timestamp
from d1store.errors import ValidationError
from d1store.repositories._common import (
    Repository,
    add_entries,
    entity_type_of,
    entry_rows,
    id_of,
    merge_entries,
    metadata_of,
    text_of,
)
from d1store.session import Batch

__all__ = ["MetadataRepository"]


def _key_of(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ValidationError(f"invalid metadata key {key!r}: use a non-empty string")
    return text_of("metadata key", key)


class MetadataRepository(Repository):
    """Reads and changes metadata entries (``store.metadata``).

    ``entity_type`` is ``"thread"``, ``"message"`` or ``"resource"``.
    Writes to the metadata of a thread or resource bump its ``updated_at``.
    """

    def get(self, entity_type: str, entity_id: str) -> dict[str, Any]:
        """Return the entity's metadata (empty if it has none or does not exist)."""
        values = {"entity_type": entity_type_of(entity_type), "entity_id": id_of("entity_id", entity_id)}
        rows = self._unit.read([self._queries.entries_get().bind(values)])[0].rows
        return {key: json.loads(value) for key, value in sorted(rows)}

    def set(self, entity_type: str, entity_id: str, key: str, value: Any) -> None:
        """Store ``value`` under ``key``, JSON null included.

        Raises :class:`~d1store.errors.NotFoundError` when the entity does
        not exist.
        """
        entity_type = entity_type_of(entity_type)
        entity_id = id_of("entity_id", entity_id)
        key = _key_of(key)
        try:
            check_json(f"metadata[{key!r}]", value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        batch = self._unit.batch()
        batch.require(entity_type, [entity_id])
        add_entries(batch, entry_rows(self._max_row_bytes, entity_type, entity_id, {key: value}))
        self._touch(batch, entity_type, entity_id)
        self._unit.submit(batch)

    def merge(self, entity_type: str, entity_id: str, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """Set the keys of ``values``; a ``None`` value removes its key.

        Returns the merged metadata, or ``None`` inside a session. Raises
        :class:`~d1store.errors.NotFoundError` when the entity does not exist.
        """
        entity_type = entity_type_of(entity_type)
        entity_id = id_of("entity_id", entity_id)
        changes = metadata_of("metadata", values)
        batch = self._unit.batch()
        batch.require(entity_type, [entity_id])
        merge_entries(batch, self._max_row_bytes, entity_type, entity_id, changes)
        self._touch(batch, entity_type, entity_id)
        if self._unit.deferred:
            self._unit.submit(batch)
            return None
        read = self._queries.entries_get().bind({"entity_type": entity_type, "entity_id": entity_id})
        read_at = batch.add(read)
        results = self._unit.submit(batch)
        assert results is not None
        return {key: json.loads(value) for key, value in sorted(results[read_at].rows)}

    def delete(self, entity_type: str, entity_id: str, key: str | None = None) -> int | None:
        """Delete one key, or every key when ``key`` is ``None``.

        Returns how many entries were removed (``None`` inside a session).
        """
        entity_type = entity_type_of(entity_type)
        entity_id = id_of("entity_id", entity_id)
        batch = self._unit.batch()
        if key is None:
            statement = self._queries.entries_delete_entities(1).bind_flat((entity_type, entity_id))
        else:
            statement = self._queries.entries_delete_keys(1).bind_flat((entity_type, entity_id, _key_of(key)))
        position = batch.add(statement)
        self._touch(batch, entity_type, entity_id)
        results = self._unit.submit(batch)
        return None if results is None else results[position].changes

    def _touch(self, batch: Batch, entity_type: str, entity_id: str) -> None:
        if entity_type == "message":
            return
        stamp = format_timestamp(clock.next(1)[0])
        batch.add(self._queries.touch_entity(entity_type).bind({"id": entity_id, "updated_at": stamp}))
