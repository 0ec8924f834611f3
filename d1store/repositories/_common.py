"""Helpers shared by the repositories: row mapping, size checks, metadata rows."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from d1store.backends.base import Result
from d1store.encoding import check_id, check_metadata, check_text, dump_json, parse_timestamp
from d1store.errors import RowTooLargeError, ValidationError
from d1store.models import Message, Resource, Thread
from d1store.schema import ENTITY_TYPES
from d1store.session import Batch, Unit
from d1store.statements import ENTRY_COLUMNS

__all__ = [
    "MAX_COUNT",
    "Repository",
    "add_entries",
    "check_paging",
    "check_row_size",
    "delete_entries",
    "entities",
    "entity_type_of",
    "entry_rows",
    "group_metadata",
    "id_of",
    "merge_entries",
    "message_from_row",
    "metadata_of",
    "model_of",
    "resource_from_row",
    "text_of",
    "thread_from_row",
]


class Repository:
    """Base of the repositories, bound to the unit of work that runs their calls."""

    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        self._queries = unit.queries
        self._max_row_bytes = unit.backend.limits.max_row_bytes


ModelT = TypeVar("ModelT", bound=BaseModel)


def model_of(model: type[ModelT], value: object, record_name: str) -> ModelT:
    """Return ``value`` validated as ``model``, or raise :class:`ValidationError`.

    The message names the record by its id and lists each invalid field.
    """
    if not isinstance(value, (model, Mapping)):
        raise ValidationError(
            f"invalid {record_name} {value!r:.80}: pass a {model.__name__} or a mapping of its fields"
        )
    try:
        return model.model_validate(value.model_dump() if isinstance(value, BaseModel) else value)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        identifier = value.get("id") if isinstance(value, Mapping) else getattr(value, "id", None)
        raise ValidationError(f"invalid {record_name} {identifier!r}: {problems}") from exc


#: Largest row count or offset accepted: D1 sends numbers as JSON doubles,
#: exact up to 2**53, and SQLite's integers stop at 2**63 - 1.
MAX_COUNT = 2**53


def check_paging(page: int, per_page: int | None) -> None:
    """Raise :class:`ValidationError` for a negative or out-of-range page or page size."""
    if not isinstance(page, int) or isinstance(page, bool) or not 0 <= page <= MAX_COUNT:
        raise ValidationError(f"invalid page {page!r}: pages are numbered from 0 to 2**53")
    if per_page is not None and (
        not isinstance(per_page, int) or isinstance(per_page, bool) or not 0 <= per_page <= MAX_COUNT
    ):
        raise ValidationError(f"invalid per_page {per_page!r}: use a number from 0 to 2**53, or None for all")
    if per_page is not None and page * per_page > MAX_COUNT:
        raise ValidationError(
            f"invalid page {page!r}: page * per_page is over 2**53 rows; request an earlier page"
        )


def id_of(field: str, value: object) -> str:
    """Return a valid id or raise :class:`ValidationError` naming ``field``."""
    try:
        return check_id(field, value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def text_of(field: str, value: str) -> str:
    """Return ``value`` if it can be stored as UTF-8, or raise :class:`ValidationError` naming ``field``."""
    try:
        check_text(field, value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return value


def metadata_of(field: str, value: object) -> dict[str, Any]:
    """Return validated metadata or raise :class:`ValidationError`."""
    try:
        return check_metadata(field, value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def entity_type_of(entity_type: object) -> str:
    """Return ``entity_type`` if it carries metadata, else raise."""
    if entity_type not in ENTITY_TYPES:
        raise ValidationError(f"invalid entity_type {entity_type!r}: use 'thread', 'message' or 'resource'")
    return str(entity_type)


def check_row_size(limit: int, entity_id: str, values: Mapping[str, str | None]) -> None:
    """Raise :class:`RowTooLargeError` if a row's UTF-8 size exceeds ``limit``."""
    characters = sum(len(value) for value in values.values() if value is not None)
    # A character is at most 4 bytes in UTF-8, so most rows need no encoding.
    if characters * 4 <= limit:
        return
    sizes = {name: len(value.encode()) for name, value in values.items() if value is not None}
    total = sum(sizes.values())
    if total > limit:
        largest = max(sizes, key=sizes.__getitem__)
        raise RowTooLargeError(entity_id, largest, total, limit)


def group_metadata(rows: Iterable[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Group ``(entity_id, key, value)`` rows into one metadata dict per entity."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for entity_id, key, value in rows:
        grouped.setdefault(entity_id, []).append((key, value))
    return {entity_id: dict(_decoded(pairs)) for entity_id, pairs in grouped.items()}


def _decoded(pairs: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    return [(key, json.loads(value)) for key, value in sorted(pairs)]


def entities(results: list[Result], position: int) -> tuple[list[tuple[Any, ...]], dict[str, dict[str, Any]]]:
    """Return the rows at ``position`` and the metadata read by the statement after it."""
    return results[position].rows, group_metadata(results[position + 1].rows)


def thread_from_row(row: tuple[Any, ...], metadata: Mapping[str, dict[str, Any]]) -> Thread:
    """Build a :class:`Thread` from a row of ``Queries.thread_*`` statements."""
    return Thread.model_construct(
        id=row[0],
        resource_id=row[1],
        title=row[2],
        created_at=parse_timestamp(row[3]),
        updated_at=parse_timestamp(row[4]),
        archived_at=None if row[5] is None else parse_timestamp(row[5]),
        metadata=metadata.get(row[0]) or {},
    )


def message_from_row(row: tuple[Any, ...], metadata: Mapping[str, dict[str, Any]]) -> Message:
    """Build a :class:`Message` from a row of ``Queries.message_*`` statements."""
    # Stored rows were validated on the way in. Setting the instance
    # attributes directly gives what Message.model_construct() gives with
    # every field passed, in a quarter of its time; listings map thousands
    # of rows. The keys follow the field order of Message, as repr() shows.
    fields = {
        "id": row[0],
        "thread_id": row[1],
        "resource_id": row[2],
        "role": row[3],
        "content": _content_from_json(row[5]),
        "type": row[4],
        "metadata": metadata.get(row[0]) or {},
        "created_at": parse_timestamp(row[6]),
    }
    message = Message.__new__(Message)
    object.__setattr__(message, "__dict__", fields)
    object.__setattr__(message, "__pydantic_fields_set__", set(_MESSAGE_FIELDS))
    object.__setattr__(message, "__pydantic_extra__", None)
    object.__setattr__(message, "__pydantic_private__", None)
    return message


_MESSAGE_FIELDS = frozenset(Message.model_fields)


def _content_from_json(text: str) -> Any:
    # A JSON string with no backslash, no inner quote and only printable
    # characters is its own text between the quotes. Short chat lines take
    # this path and skip the JSON parser.
    if text[:1] == '"' and text.find('"', 1) == len(text) - 1 and "\\" not in text and text.isprintable():
        return text[1:-1]
    return json.loads(text)


def resource_from_row(row: tuple[Any, ...], metadata: Mapping[str, dict[str, Any]]) -> Resource:
    """Build a :class:`Resource` from a row of ``Queries.resource_*`` statements."""
    return Resource.model_construct(
        id=row[0],
        working_memory=row[1],
        created_at=parse_timestamp(row[2]),
        updated_at=parse_timestamp(row[3]),
        metadata=metadata.get(row[0]) or {},
    )


def entry_rows(
    limit: int, entity_type: str, entity_id: str, metadata: Mapping[str, Any]
) -> list[tuple[str, str, str, str]]:
    """Return one metadata row per key, each checked against the row limit."""
    rows = []
    for key, value in metadata.items():
        row = (entity_type, entity_id, key, dump_json(value))
        check_row_size(limit, f"{entity_id} metadata {key!r}", dict(zip(ENTRY_COLUMNS, row, strict=True)))
        rows.append(row)
    return rows


def add_entries(batch: Batch, rows: list[tuple[str, str, str, str]]) -> None:
    """Insert or replace metadata rows, split to fit the parameter limit."""
    queries = batch.unit.queries
    size = queries.chunk_size(len(ENTRY_COLUMNS))
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        batch.add(queries.entries_upsert(len(chunk)).bind_flat(_flatten(chunk)))


def delete_entries(batch: Batch, entity_type: str, ids: Iterable[str]) -> list[int]:
    """Delete every metadata row of the given entities; return statement positions."""
    queries = batch.unit.queries
    unique = list(dict.fromkeys(ids))
    size = queries.chunk_size(1) - 1
    positions = []
    for start in range(0, len(unique), size):
        chunk = unique[start : start + size]
        statement = queries.entries_delete_entities(len(chunk)).bind_flat((entity_type, *chunk))
        positions.append(batch.add(statement))
    return positions


def merge_entries(
    batch: Batch, limit: int, entity_type: str, entity_id: str, values: Mapping[str, Any]
) -> None:
    """Set the keys of ``values`` and remove the keys whose value is ``None``."""
    queries = batch.unit.queries
    removed = [key for key, value in values.items() if value is None]
    updates = {key: value for key, value in values.items() if value is not None}
    add_entries(batch, entry_rows(limit, entity_type, entity_id, updates))
    size = queries.chunk_size(1) - 2
    for start in range(0, len(removed), size):
        chunk = removed[start : start + size]
        statement = queries.entries_delete_keys(len(chunk)).bind_flat((entity_type, entity_id, *chunk))
        batch.add(statement)


def _flatten(rows: Iterable[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]
